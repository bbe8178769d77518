// The fused shift + 1x1 conv kernels (ops/shift): the offset-read kernel (the shift is only an
// offset in the conv's input reads) and the tiled oneDNN kernel, run on the same node and the
// same random data, must agree; and the session, whichever kernel it measured faster, must
// match the reference kernels. Odd shapes: 23 channels, 7 x 11 maps (pixel blocks of 6 cross
// rows, border pixels read zeros), 37 outputs (a partial 16-lane vector), with a residual
// sum + Relu, or a LeakyRelu (the scalar epilogue); shifts in 9 contiguous channel groups
// (ShiftNet's layout: runs of several channels) or changing from channel to channel (runs of
// one).
#include <gtest/gtest.h>

#include <cmath>
#include <omp.h>
#include <ostream>

#include "ops/shift/shift.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"

namespace sluice::testing {
namespace {

struct ShiftCase {
  int64_t n, c, h, w, m;
  bool residual;  // Add + Relu after the conv; otherwise a LeakyRelu
  bool grouped;   // shift group ch * 9 / C (contiguous runs); otherwise ch % 9
  int64_t k = 3;  // the one-hot kernel's size: shifts reach k / 2 pixels
  // Instead of the epilogue above: 0 none, 1 Relu alone, 2 Add alone (the other paths of
  // the AVX2 block's own epilogue), 3 Clip(0, 6) (not in the assembly: the table's path).
  int other_epilogue = -1;
};
void PrintTo(const ShiftCase& p, std::ostream* os) {
  *os << "n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w << "_m" << p.m << (p.residual ? "_residual" : "")
      << (p.grouped ? "_grouped" : "_interleaved") << "_k" << p.k << "_epilogue" << p.other_epilogue;
}

// x -> depthwise kxk one-hot conv (channel ch of shift group s moved by one of the k*k
// offsets in [-k/2, k/2]^2) -> 1x1 conv (+ bias) -> [Add r] -> Relu or LeakyRelu.
Model shift_model(const ShiftCase& p) {
  const int64_t taps = p.k * p.k, r = p.k / 2;
  std::vector<float> dw(static_cast<size_t>(p.c * taps), 0.f);
  for (int64_t ch = 0; ch < p.c; ++ch)
    dw[static_cast<size_t>(ch * taps + (p.grouped ? ch * taps / p.c : ch % taps))] = 1.f;
  OnnxBuilder b;
  b.input("x", {p.n, p.c, p.h, p.w}).init("dw", {p.c, 1, p.k, p.k}, dw);
  b.init_random("w", {p.m, p.c, 1, 1}, 0.3f).init_random("b", {p.m});
  auto& sh = b.node("Conv", {"x", "dw"}, {"s"});
  OnnxBuilder::attr_ints(sh, "pads", {r, r, r, r});
  OnnxBuilder::attr_int(sh, "group", p.c);
  if (p.other_epilogue < 0) {
    b.node("Conv", {"s", "w", "b"}, {"y"});
    add_epilogue(b, "y", {p.n, p.m, p.h, p.w}, p.residual, 0.1f);
  } else if (p.other_epilogue == 0) {
    b.node("Conv", {"s", "w", "b"}, {"z"});
    b.output("z");
  } else if (p.other_epilogue == 1) {
    b.node("Conv", {"s", "w", "b"}, {"y"});
    b.node("Relu", {"y"}, {"z"});
    b.output("z");
  } else if (p.other_epilogue == 2) {
    b.node("Conv", {"s", "w", "b"}, {"y"});
    b.input("r", {p.n, p.m, p.h, p.w});
    b.node("Add", {"y", "r"}, {"z"});
    b.output("z");
  } else {
    b.node("Conv", {"s", "w", "b"}, {"y"});
    b.init("lo", {}, {0.f}).init("hi", {}, {6.f});
    b.node("Clip", {"y", "lo", "hi"}, {"z"});
    b.output("z");
  }
  return b.load();
}

class ShiftConvKernels : public ::testing::TestWithParam<ShiftCase> {};

TEST_P(ShiftConvKernels, OffsetReadEqualsTiledAndSessionMatchesReference) {
  const ShiftCase p = GetParam();
  Model m = shift_model(p);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  const graph::Graph& g = plan.graph();
  const graph::Node* fused = nullptr;
  for (const auto& n : g.nodes)
    if (n.op == graph::OpType::Conv && !n.p<graph::ConvParams>().pre_shift.empty()) fused = &n;
  ASSERT_NE(fused, nullptr) << "the one-hot depthwise conv was not fused into the 1x1 conv as a shift";
  const auto& cp = fused->p<graph::ConvParams>();
  EXPECT_EQ(cp.fused_sum, p.residual) << "the residual Add should be fused into the conv";
  const graph::Activation want = p.other_epilogue == 1 || (p.other_epilogue < 0 && p.residual) ? graph::Activation::Relu
                                 : p.other_epilogue < 0                                      ? graph::Activation::LeakyRelu
                                 : p.other_epilogue == 3                                     ? graph::Activation::Clip
                                                                                             : graph::Activation::None;
  EXPECT_EQ(cp.activation.kind, want);
  const size_t runs = ops::shift::runs_of(cp.pre_shift).size();
  if (p.grouped && p.c >= p.k * p.k) {
    EXPECT_EQ(runs, static_cast<size_t>(p.k * p.k)) << "k*k contiguous shift groups";
  }
  auto tiled = ops::make_shift_conv_tiled(g, *fused);
  ASSERT_NE(tiled, nullptr);
  if (auto offset = ops::make_shift_conv_offset(g, *fused)) {
    // Two threads whatever the machine: the kernel's interior and border loops share one
    // parallel region, the first without a barrier.
    const int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    EXPECT_LT(max_kernel_diff(*offset, *tiled, g, *fused, 3), 1e-4) << "offset-read vs tiled";
    omp_set_num_threads(saved);
  } else {
    GTEST_LOG_(INFO) << "neither AVX-512 nor AVX2 in this build: only the tiled kernel exists";
  }
  std::map<std::string, Tensor> in{{"x", random_tensor({p.n, p.c, p.h, p.w}, 21)}};
  if (p.residual) in["r"] = random_tensor({p.n, p.m, p.h, p.w}, 22);
  Session fast(m, {2, true}), ref(m, {1, false});
  EXPECT_NE(fast.inspect().find("shift+conv1x1"), std::string::npos) << fast.inspect();
  EXPECT_LT(normalized_error(fast.run(in).at("z"), ref.run(in).at("z")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ShiftConvKernels,
                         ::testing::Values(ShiftCase{1, 23, 7, 11, 37, true, true},     // odd everything, residual
                                           ShiftCase{1, 23, 7, 11, 37, true, false},    // runs of one channel
                                           ShiftCase{2, 40, 5, 6, 16, false, true},     // batch 2, LeakyRelu
                                           ShiftCase{1, 36, 14, 14, 64, true, true},    // whole blocks
                                           ShiftCase{2, 50, 9, 10, 80, true, false},    // full and partial 64-channel groups
                                           ShiftCase{1, 64, 12, 12, 128, false, true},  // two full groups
                                           ShiftCase{1, 50, 13, 15, 64, true, true, 5},  // shifts of 2 pixels
                                           ShiftCase{1, 9, 1, 3, 5, false, false},     // one row: every read a border
                                           ShiftCase{1, 30, 9, 13, 48, false, true, 3, 0},  // no epilogue
                                           ShiftCase{1, 30, 9, 13, 48, false, true, 3, 1},  // Relu alone
                                           ShiftCase{2, 30, 9, 13, 40, true, true, 3, 2},   // Add alone
                                           ShiftCase{1, 30, 9, 13, 40, false, true, 3, 3},  // Clip(0, 6)
                                           ShiftCase{1, 18, 2, 5, 24, true, true},          // no interior: border blocks only
                                           ShiftCase{1, 18, 4, 4, 24, true, true, 5},       // the same with 2-pixel shifts
                                           ShiftCase{2, 18, 7, 4, 20, true, true},          // interior 2 columns wide
                                           ShiftCase{1, 18, 6, 7, 8, true, true},           // m < 16: no whole group
                                           // all border, a shift per channel: 249 edges, 29 of
                                           // them with a full block (the tables' budget is not
                                           // reached: 8 MiB would take ~1024 channels at 112x112)
                                           ShiftCase{1, 256, 28, 28, 32, true, false, 29},
                                           ShiftCase{1, 18, 6, 7, 8, false, true, 3, 0},  // the same, no epilogue
                                           // all border with 2-pixel shifts, a whole 64-channel
                                           // group: each row's edge in full blocks, in the assembly
                                           ShiftCase{1, 40, 4, 16, 64, true, true, 5}));

// A shift step of its own (a Relu reads the one-hot conv, so it is not fused) against the
// reference kernels: shifts in contiguous groups (copied run by run) or changing channel by
// channel (AVX-512: gathered per pixel, 16 channels at a time, where every shift reads inside
// the map), strided or cropping, 2-pixel shifts, channel counts off 16, maps with no interior.
TEST(ShiftStep, RunsAndGatherMatchReference) {
  struct Case {
    int64_t n, c, h, w, k, stride, pad;
    bool grouped;
  };
  const Case cases[] = {{2, 37, 9, 11, 3, 1, 1, false}, {1, 96, 12, 12, 3, 1, 1, false}, {1, 27, 8, 7, 3, 1, 1, true},
                        {2, 21, 13, 10, 3, 2, 1, false}, {1, 50, 9, 9, 5, 1, 2, false}, {1, 18, 7, 9, 3, 1, 0, false},
                        {1, 19, 2, 3, 5, 1, 2, false}};
  for (const Case& t : cases) {
    const int64_t taps = t.k * t.k;
    std::vector<float> dw(static_cast<size_t>(t.c * taps), 0.f);
    for (int64_t ch = 0; ch < t.c; ++ch)
      dw[static_cast<size_t>(ch * taps + (t.grouped ? ch * taps / t.c : ch % taps))] = 1.f;
    // 1x1 conv -> shift -> Relu -> 1x1 conv: the convs put the shift on NHWC.
    OnnxBuilder b;
    b.input("x", {t.n, t.c, t.h, t.w}).init("dw", {t.c, 1, t.k, t.k}, dw);
    b.init_random("w0", {t.c, t.c, 1, 1}, 0.3f).init_random("w1", {8, t.c, 1, 1}, 0.3f);
    b.node("Conv", {"x", "w0"}, {"a"});
    auto& sh = b.node("Conv", {"a", "dw"}, {"s"});
    OnnxBuilder::attr_ints(sh, "pads", {t.pad, t.pad, t.pad, t.pad});
    OnnxBuilder::attr_ints(sh, "strides", {t.stride, t.stride});
    OnnxBuilder::attr_int(sh, "group", t.c);
    b.node("Relu", {"s"}, {"r"});
    b.node("Conv", {"r", "w1"}, {"z"});
    b.output("z");
    Model m = b.load();
    Session fast(m, {2, true}), ref(m, {1, false});
    const std::string plan = fast.inspect();
    EXPECT_NE(plan.find("SluiceShift"), std::string::npos) << plan;
    EXPECT_NE(plan.find("shift:nhwc"), std::string::npos) << plan;
    std::map<std::string, Tensor> in{{"x", random_tensor({t.n, t.c, t.h, t.w}, 31)}};
    EXPECT_LT(normalized_error(fast.run(in).at("z"), ref.run(in).at("z")), 1e-5)
        << "c" << t.c << " " << t.h << "x" << t.w << " k" << t.k << " s" << t.stride << "\n" << plan;
  }
}

// Pad + Slice + Concat with Slice steps 2 on H and W (a probe's strided shift; YOLOv5's Focus is
// the same without the Pad) is a strided shift step, on NHWC between convs, against the
// reference kernels; each group starts at another offset, one reads the padding. Inputs whose
// steps differ on an axis (x[:, :, ::2] beside x[:, :, 0:4]: the same shape) are no shift.
TEST(ShiftStep, StridedSlicesOfAPaddedMapAreAStridedShift) {
  for (bool same_steps : {true, false}) {
    OnnxBuilder b;
    const int64_t c = 6, h = 8, w = 10;
    b.input("x", {2, c, h, w}).init_random("w0", {c, c, 1, 1}, 0.3f).init_random("w1", {5, c, 1, 1}, 0.3f);
    b.init_i64("pads", {8}, {0, 0, 1, 1, 0, 0, 1, 1});
    b.node("Conv", {"x", "w0"}, {"a"});
    b.node("Pad", {"a", "pads"}, {"p"});
    // (channels, start on H, start on W, step on H): group 0 reads the top padding row.
    const int64_t groups[3][4] = {{0, 0, 1, 2}, {2, 2, 0, 2}, {4, 1, 2, same_steps ? 2 : 1}};
    std::vector<std::string> parts;
    for (int i = 0; i < 3; ++i) {
      const auto& gr = groups[i];
      const std::string k = std::to_string(i);
      const int64_t hend = gr[3] == 2 ? gr[1] + h : gr[1] + h / 2;
      b.init_i64(std::string("st") + k, {3}, {gr[0], gr[1], gr[2]}).init_i64(std::string("en") + k, {3}, {gr[0] + 2, hend, gr[2] + w});
      b.init_i64(std::string("ax") + k, {3}, {1, 2, 3}).init_i64(std::string("sp") + k, {3}, {1, gr[3], 2});
      b.node("Slice", {"p", std::string("st") + k, std::string("en") + k, std::string("ax") + k, std::string("sp") + k}, {std::string("s") + k});
      parts.push_back(std::string("s") + k);
    }
    OnnxBuilder::attr_int(b.node("Concat", parts, {"cat"}), "axis", 1);
    b.node("Relu", {"cat"}, {"r"});
    b.node("Conv", {"r", "w1"}, {"z"});
    b.output("z");
    Model m = b.load();
    Session fast(m, {2, true}), ref(m, {1, false});
    const std::string plan = fast.inspect();
    EXPECT_EQ(plan.find("SluiceShift") != std::string::npos, same_steps) << plan;
    if (same_steps) {
      EXPECT_NE(plan.find("stride 2x2), NHWC]"), std::string::npos) << plan;
    }
    std::map<std::string, Tensor> in{{"x", random_tensor({2, c, h, w}, 32)}};
    const auto got = fast.run(in).at("z");
    EXPECT_EQ(got.shape(), (Shape{2, 5, h / 2, w / 2}));
    EXPECT_LT(normalized_error(got, ref.run(in).at("z")), 1e-5) << plan;
  }
}

// Slices of steps 65536 chained: their product, 2^32, does not fit the shift's int32 stride (it
// became 0, and the run died of a division by zero; found by a review). Not a shift; the
// reference's answer.
TEST(ShiftStep, ChainedHugeSliceStepsAreNoShift) {
  OnnxBuilder b;
  const int64_t big = int64_t{1} << 40, st = 65536;
  b.input("x", {1, 2, 4, 4}).init_i64("ax", {2}, {2, 3}).init_i64("st", {2}, {st, st}).init_i64("big", {2}, {big, big});
  b.init_i64("s0", {2}, {0, 0}).init_i64("s1", {2}, {1, 0});
  b.node("Slice", {"x", "s0", "big", "ax", "st"}, {"a1"});
  b.node("Slice", {"a1", "s0", "big", "ax", "st"}, {"a"});
  b.node("Slice", {"x", "s1", "big", "ax", "st"}, {"b1"});
  b.node("Slice", {"b1", "s0", "big", "ax", "st"}, {"b"});
  OnnxBuilder::attr_int(b.node("Concat", {"a", "b"}, {"y"}), "axis", 1);
  b.output("y");
  Model m = b.load();
  Session fast(m, {1, true}), ref(m, {1, false});
  EXPECT_EQ(fast.inspect().find("SluiceShift"), std::string::npos) << fast.inspect();
  std::map<std::string, Tensor> in{{"x", random_tensor({1, 2, 4, 4}, 34)}};
  const Tensor got = fast.run(in).at("y");
  EXPECT_EQ(got.shape(), (Shape{1, 4, 1, 1}));
  EXPECT_LT(normalized_error(got, ref.run(in).at("y")), 1e-6);
}

// A 1-D shift as Pad + Slice + Concat on a Conv1d's output, with no Conv1d after it (found by a
// probe: six reference Slices and a Concat): the Squeeze after the lifted conv sinks past the
// Slices too (their axes moved past the inserted one; given as -2, -1; int64 or int32), and the
// 2-D form is a shift step. Against the reference kernels.
TEST(ShiftStep, OneDimensionalPadSliceConcatIsAShift) {
  for (bool i32 : {false, true}) {
    OnnxBuilder b;
    b.input("x", {2, 4, 11}).init_random("w", {9, 4, 1}, 0.5f).init_i64("pads", {6}, {0, 0, 1, 0, 0, 1});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "kernel_shape", {1});
    b.node("Relu", {"c"}, {"r"});
    b.node("Pad", {"r", "pads"}, {"p"});
    std::vector<std::string> parts;
    for (int k = 0; k < 3; ++k) {
      const std::string i = std::to_string(k);
      if (i32)
        b.init_i32(std::string("st") + i, {2}, {3 * k, k}).init_i32(std::string("en") + i, {2}, {3 * k + 3, k + 11}).init_i32(std::string("ax") + i, {2}, {-2, -1});
      else
        b.init_i64(std::string("st") + i, {2}, {3 * k, k}).init_i64(std::string("en") + i, {2}, {3 * k + 3, k + 11}).init_i64(std::string("ax") + i, {2}, {-2, -1});
      b.node("Slice", {"p", std::string("st") + i, std::string("en") + i, std::string("ax") + i}, {std::string("s") + i});
      parts.push_back(std::string("s") + i);
    }
    OnnxBuilder::attr_int(b.node("Concat", parts, {"y"}), "axis", 1);
    b.output("y");
    Model m = b.load();
    Session fast(m, {1, true}), ref(m, {1, false});
    const std::string plan = fast.inspect();
    EXPECT_NE(plan.find("SluiceShift"), std::string::npos) << plan;
    EXPECT_EQ(plan.find("Slice "), std::string::npos) << plan;
    std::map<std::string, Tensor> in{{"x", random_tensor({2, 4, 11}, 33)}};
    const Tensor got = fast.run(in).at("y");
    EXPECT_EQ(got.shape(), (Shape{2, 9, 11}));
    EXPECT_LT(normalized_error(got, ref.run(in).at("y")), 1e-6) << plan;
  }
}

// A shift written on a channel-last model input (tf2onnx's Keras form): Split on axis 3, Pad
// and Slice on axes 1 and 2, Concat on axis 3, then the Transpose to NCHW before a 1x1 conv.
// Form C reads it through x's Transpose and the conv reads it as a fused shift; the numbers are
// the reference's. Padded with 0.5 instead of 0 it is no shift, and stays as written.
TEST(ShiftStep, ChannelLastInputShiftIsFound) {
  for (float fill : {0.f, 0.5f}) {
    OnnxBuilder b;
    b.input("x", {2, 5, 6, 8}).init_random("w", {6, 8, 1, 1}, 0.5f).init("fill", {}, {fill});
    auto& sp = b.node("Split", {"x"}, {"p0", "p1", "p2", "p3"});
    OnnxBuilder::attr_int(sp, "axis", 3);
    const int dy[4] = {0, 1, 0, -1}, dx[4] = {0, 0, 1, 1};
    std::vector<std::string> parts;
    for (int k = 0; k < 4; ++k) {
      const std::string i = std::to_string(k);
      if (dy[k] == 0 && dx[k] == 0) {
        parts.push_back("p" + i);
        continue;
      }
      // pad one side of H or W, then crop back: out[y][x] = in[y - dy][x - dx]
      b.init_i64("pads" + i, {8}, {0, std::max(dy[k], 0), std::max(dx[k], 0), 0, 0, std::max(-dy[k], 0), std::max(-dx[k], 0), 0});
      b.node("Pad", {"p" + i, "pads" + i, "fill"}, {"q" + i});
      b.init_i64("st" + i, {2}, {std::max(-dy[k], 0), std::max(-dx[k], 0)});
      b.init_i64("en" + i, {2}, {std::max(-dy[k], 0) + 5, std::max(-dx[k], 0) + 6}).init_i64("ax" + i, {2}, {1, 2});
      b.node("Slice", {"q" + i, "st" + i, "en" + i, "ax" + i}, {"s" + i});
      parts.push_back("s" + i);
    }
    OnnxBuilder::attr_int(b.node("Concat", parts, {"cat"}), "axis", 3);
    OnnxBuilder::attr_ints(b.node("Transpose", {"cat"}, {"t"}), "perm", {0, 3, 1, 2});
    b.node("Conv", {"t", "w"}, {"y"});
    b.output("y");
    Model m = b.load();
    Session fast(m, {1, true}), ref(m, {1, false});
    const std::string plan = fast.inspect();
    EXPECT_EQ(plan.find("shift+conv1x1") != std::string::npos, fill == 0.f) << plan;
    EXPECT_EQ(plan.find("Concat ") == std::string::npos, fill == 0.f) << plan;
    std::map<std::string, Tensor> in{{"x", random_tensor({2, 5, 6, 8}, 41)}};
    EXPECT_LT(normalized_error(fast.run(in).at("y"), ref.run(in).at("y")), 1e-6) << plan;
  }
}

// A shift that reads the model input as it is (NCHW: no conv before it) runs on the NCHW shift
// kernel, not the reference one: contiguous groups and channel by channel, strided, cropping,
// 2-pixel shifts, a map smaller than the reach, against the reference kernels; its output
// goes to the model's output as it is and to a Relu.
TEST(ShiftStep, NchwShiftOfTheInputMatchesReference) {
  struct Case {
    int64_t n, c, h, w, k, stride, pad;
  };
  for (const Case& t : {Case{2, 9, 9, 11, 3, 1, 1}, Case{1, 20, 10, 7, 3, 2, 1}, Case{1, 25, 9, 9, 5, 1, 2},
                        Case{1, 18, 7, 9, 3, 1, 0}, Case{2, 9, 2, 3, 5, 2, 2}}) {
    const int64_t taps = t.k * t.k;
    std::vector<float> dw(static_cast<size_t>(t.c * taps), 0.f);
    for (int64_t ch = 0; ch < t.c; ++ch) dw[static_cast<size_t>(ch * taps + ch % taps)] = 1.f;
    OnnxBuilder b;
    b.input("x", {t.n, t.c, t.h, t.w}).init("dw", {t.c, 1, t.k, t.k}, dw);
    auto& sh = b.node("Conv", {"x", "dw"}, {"s"});
    OnnxBuilder::attr_ints(sh, "pads", {t.pad, t.pad, t.pad, t.pad});
    OnnxBuilder::attr_ints(sh, "strides", {t.stride, t.stride});
    OnnxBuilder::attr_int(sh, "group", t.c);
    b.node("Relu", {"s"}, {"r"});
    b.output("s").output("r");
    Model m = b.load();
    Session fast(m, {2, true}), ref(m, {1, false});
    const std::string plan = fast.inspect();
    EXPECT_NE(plan.find("shift:nchw"), std::string::npos) << plan;
    std::map<std::string, Tensor> in{{"x", random_tensor({t.n, t.c, t.h, t.w}, 32)}};
    auto got = fast.run(in), want = ref.run(in);
    for (const char* o : {"s", "r"})
      EXPECT_EQ(normalized_error(got.at(o), want.at(o)), 0.0) << o << " c" << t.c << " " << t.h << "x" << t.w << " k" << t.k
                                                              << " s" << t.stride << "\n" << plan;
  }
}

// A shift found by running a subgraph on labelled input (recognise_shifts, form C) must not be
// fooled by a constant that equals the labels: channel 0 is x with its last column replaced by
// a constant holding exactly the first labelling's values there (4h + 4), channel 1 is x moved
// right by one. The first labelling reads a shift; the second (negated labels) must refuse it.
TEST(EvaluatedShift, ConstantThatEqualsTheLabelsIsNotTakenForX) {
  for (bool label_like : {true, false}) {
    OnnxBuilder b;
    b.input("x", {1, 2, 3, 4}).init("k", {1, 1, 3, 1}, {4, 8, 12}).init("z", {1, 1, 3, 1}, {0, 0, 0});
    b.init_i64("s0", {2}, {0, 0}).init_i64("e0", {2}, {1, 3}).init_i64("s1", {2}, {1, 0}).init_i64("e1", {2}, {2, 3});
    b.init_i64("ax", {2}, {1, 3}).init_random("w", {3, 2, 1, 1});
    b.node("Slice", {"x", "s0", "e0", "ax"}, {"a"});
    b.node("Slice", {"x", "s1", "e1", "ax"}, {"c"});
    OnnxBuilder::attr_int(b.node("Concat", {"a", label_like ? "k" : "z"}, {"y0"}), "axis", 3);
    OnnxBuilder::attr_int(b.node("Concat", {"z", "c"}, {"y1"}), "axis", 3);
    OnnxBuilder::attr_int(b.node("Concat", {"y0", "y1"}, {"s"}), "axis", 1);
    b.node("Conv", {"s", "w"}, {"out"});
    b.output("out");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, {1, true});
    bool shift = false;
    for (const auto& n : plan.graph().nodes)
      if (!n.dead) shift |= n.op == graph::OpType::SluiceShift || (n.op == graph::OpType::Conv && !n.p<graph::ConvParams>().pre_shift.empty());
    EXPECT_FALSE(shift) << (label_like ? "the label-like constant" : "a zero last column") << " was taken for a shift";
    const Tensor x = random_tensor({1, 2, 3, 4});
    EXPECT_LT(normalized_error(Session(m, {1, true}).run({{"x", x}})["out"], Session(m, {1, false}).run({{"x", x}})["out"]), 1e-6);
  }
}

// ShuffleNetV2's unit: Concat(x, conv(x)), the channel shuffle (Reshape [N, 2, C, H, W] ->
// Transpose (0, 2, 1, 3, 4) -> Reshape), then two channel Slices (torch.chunk): each chunk is a
// channel selection of the Concat, and becomes one Gather that runs on NHWC data (the 5-D
// Transpose ran on NCHW with reorders around it). An Identity output stays.
TEST(ChannelGather, ShuffleAndChunksBecomeGathersOnNhwc) {
  OnnxBuilder b;
  b.input("x", {2, 8, 5, 6}).init_random("w1", {8, 8, 1, 1}).init_random("w2", {8, 8, 1, 1});
  b.init_i64("s5", {5}, {2, 2, 8, 5, 6}).init_i64("s4", {4}, {2, 16, 5, 6});
  b.init_i64("a", {1}, {0}).init_i64("mid", {1}, {8}).init_i64("end", {1}, {16}).init_i64("ax", {1}, {1});
  b.node("Conv", {"x", "w1"}, {"bx"});
  OnnxBuilder::attr_int(b.node("Concat", {"x", "bx"}, {"cat"}), "axis", 1);
  b.node("Reshape", {"cat", "s5"}, {"r5"});
  OnnxBuilder::attr_ints(b.node("Transpose", {"r5"}, {"t5"}), "perm", {0, 2, 1, 3, 4});
  b.node("Reshape", {"t5", "s4"}, {"shuf"});
  b.node("Slice", {"shuf", "a", "mid", "ax"}, {"c1"});
  b.node("Slice", {"shuf", "mid", "end", "ax"}, {"c2"});
  b.node("Conv", {"c2", "w2"}, {"bc2"});
  OnnxBuilder::attr_int(b.node("Concat", {"c1", "bc2"}, {"cat2"}), "axis", 1);
  b.node("Identity", {"cat2"}, {"out"});
  b.output("out");
  Model m = b.load();
  for (int threads : {1, 2}) {
    runtime::Plan plan(*m.graph(), {}, {threads, true});
    int gathers = 0, moves = 0, identities = 0;
    for (const auto& st : plan.steps()) {
      const graph::Node& n = plan.graph().node(st.node);
      if (n.op == graph::OpType::Gather) {
        ++gathers;
        EXPECT_EQ(n.layout, graph::Layout::NHWC) << n.name;
      }
      moves += n.op == graph::OpType::Transpose || n.op == graph::OpType::Slice || n.op == graph::OpType::Reshape;
      identities += n.op == graph::OpType::Identity;
    }
    EXPECT_EQ(gathers, 2) << plan.describe(false);
    EXPECT_EQ(moves, 0) << plan.describe(false);
    EXPECT_LE(identities, 1);
    const Tensor x = random_tensor({2, 8, 5, 6});
    EXPECT_LT(normalized_error(Session(m, {threads, true}).run({{"x", x}})["out"], Session(m, {1, false}).run({{"x", x}})["out"]), 1e-6);
  }
}

// The Gather kernel itself, on NCHW data (behind no conv) and on NHWC (behind one), against the
// reference: indices with repeats, negatives, long runs (copied as runs) and short ones.
TEST(ChannelGather, KernelMatchesReferenceOnBothLayouts) {
  const std::vector<std::vector<int64_t>> cases = {{0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7}, {11, 0, -1, 3, 3, 5, -12}, {6}};
  for (const auto& idx : cases)
    for (bool nhwc : {false, true}) {
      OnnxBuilder b;
      b.input("x", {2, 12, 4, 5}).init_random("w", {12, 12, 1, 1});
      b.init_i64("idx", {static_cast<int64_t>(idx.size())}, idx);
      if (nhwc) b.node("Conv", {"x", "w"}, {"xc"});
      OnnxBuilder::attr_int(b.node("Gather", {nhwc ? "xc" : "x", "idx"}, {"g"}), "axis", 1);
      if (nhwc) {
        b.node("Relu", {"g"}, {"out"});
      } else {
        b.node("Identity", {"g"}, {"out"});
      }
      b.output("out");
      Model m = b.load();
      runtime::Plan plan(*m.graph(), {}, {2, true});
      for (const auto& st : plan.steps()) {
        const graph::Node& n = plan.graph().node(st.node);
        if (n.op == graph::OpType::Gather) {
          EXPECT_EQ(n.layout, nhwc ? graph::Layout::NHWC : graph::Layout::NCHW);
        }
      }
      const Tensor x = random_tensor({2, 12, 4, 5});
      // A copy: exact, but for the conv in front (oneDNN's sums round otherwise than the reference's).
      EXPECT_LE(normalized_error(Session(m, {2, true}).run({{"x", x}})["out"], Session(m, {1, false}).run({{"x", x}})["out"]),
                nhwc ? 1e-6 : 0.0)
          << "case of " << idx.size() << " indices, " << (nhwc ? "NHWC" : "NCHW");
    }
}

// Concat as block copies: on NCHW data along every axis (ranks 2-4, an empty input), and on
// NHWC data along the channels (behind convs, as DenseNet's), against the reference.
TEST(BlockConcat, EveryAxisOnNchwAndChannelsOnNhwc) {
  for (int64_t axis = -4; axis < 4; ++axis) {
    const int64_t a = axis < 0 ? axis + 4 : axis;
    Shape s1{2, 3, 4, 5}, s2{2, 3, 4, 5};
    s2[static_cast<size_t>(a)] = a == 1 ? 0 : 2;  // an empty input on the channel axis
    OnnxBuilder b;
    b.input("x", s1).input("z", s2);
    OnnxBuilder::attr_int(b.node("Concat", {"x", "z", "x"}, {"y"}), "axis", axis);
    b.output("y");
    Model m = b.load();
    const Tensor x = random_tensor(s1), z = random_tensor(s2, 4);
    EXPECT_EQ(normalized_error(Session(m, {2, true}).run({{"x", x}, {"z", z}})["y"], Session(m, {1, false}).run({{"x", x}, {"z", z}})["y"]), 0.0)
        << "axis " << axis;
  }
  OnnxBuilder b;
  b.input("x", {2, 4, 5, 6}).init_random("w1", {3, 4, 1, 1}).init_random("w2", {5, 4, 3, 3}).init_random("w3", {4, 12, 1, 1});
  b.node("Conv", {"x", "w1"}, {"a"});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w2"}, {"c"}), "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_int(b.node("Concat", {"a", "x", "c"}, {"cat"}), "axis", 1);
  b.node("Conv", {"cat", "w3"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {2, true});
  for (const auto& st : plan.steps())
    if (plan.graph().node(st.node).op == graph::OpType::Concat) {
      EXPECT_EQ(plan.graph().node(st.node).layout, graph::Layout::NHWC);
      EXPECT_EQ(st.kernel->name(), "concat:blocks");
    }
  const Tensor x = random_tensor({2, 4, 5, 6});
  EXPECT_LT(normalized_error(Session(m, {2, true}).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
}

}  // namespace
}  // namespace sluice::testing
