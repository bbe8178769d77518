// Each graph pass: the rewritten structure, and the numbers before and after
// (the optimised plan against the reference plan, which runs no rewrites but
// constant folding).
#include <cmath>

#include <gtest/gtest.h>

#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {
namespace {

int pass_count(const runtime::Plan& p, const std::string& name) {
  for (const auto& [n, c] : p.pass_log())
    if (n == name) return c;
  return -1;
}

int count_ops(const runtime::Plan& p, graph::OpType op) {
  int c = 0;
  for (const auto& st : p.steps()) c += p.graph().node(st.node).op == op;
  return c;
}

// The graph as the passes leave it: without resident planes or convs reading NCHW inputs, which
// follow the kernels' measured choice (a reorder in front of a conv that picked the direct
// kernel goes).
runtime::Plan make_plan(const Model& m, bool optimize) { return runtime::Plan(*m.graph(), {}, nhwc_plan_options(optimize)); }

double fast_vs_reference(const Model& m, const Shape& in_shape) {
  Session fast(m, {1, true}), ref(m, {1, false});
  Tensor x = random_tensor(in_shape, 3);
  auto a = fast.run({{"x", x}}), b = ref.run({{"x", x}});
  return normalized_error(a.begin()->second, b.begin()->second);
}

TEST(FoldConstants, PyTorchFlattenShapeChainVanishes) {
  // y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): PyTorch's x.view(x.size(0), -1).
  OnnxBuilder b;
  b.input("x", {2, 3, 4, 5}).init_i64("zero", {}, {0}).init_i64("minus1", {1}, {-1}).init_i64("axes0", {1}, {0});
  b.node("Shape", {"x"}, {"s"});
  b.node("Gather", {"s", "zero"}, {"n"});
  b.node("Unsqueeze", {"n", "axes0"}, {"n1"});
  OnnxBuilder::attr_int(b.node("Concat", {"n1", "minus1"}, {"shape"}), "axis", 0);
  b.node("Reshape", {"x", "shape"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "fold_constants"), 4);
  ASSERT_EQ(p.steps().size(), 1u);
  // The Reshape into [N, rest] left: as a Flatten at axis 1 (eliminate_identities), the form
  // that pruning follows to a classifier head.
  EXPECT_EQ(p.graph().node(p.steps()[0].node).op, graph::OpType::Flatten);
  Tensor x = random_tensor({2, 3, 4, 5});
  auto out = Session(m).run({{"x", x}});
  ASSERT_EQ(out["y"].shape(), (Shape{2, 60}));
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(out["y"].data<float>()[i], x.data<float>()[i]);
}

// An explicit zero Pad of H and W before a conv joins the conv's own pads (tf2onnx's "SAME"):
// no Pad step, the same answer as the generic ops. A non-zero fill, a Pad of the channels, or
// a padded value that something else reads too (an FBS gate's pool), stays a Pad.
TEST(EliminateIdentities, ZeroPadBeforeConvJoinsItsPads) {
  for (float fill : {0.f, 0.5f}) {
    for (int variant : {0, 1, 2}) {
      const bool channel_pad = variant == 1, shared = variant == 2;
      OnnxBuilder b;
      b.input("x", {2, 4, 7, 9}).init_random("w", {6, channel_pad ? 5 : 4, 3, 3}, 0.3f).init_random("bias", {6});
      b.init_i64("pads", {8}, {0, channel_pad ? 1 : 0, 2, 0, 0, 0, 1, 3}).init("fill", {}, {fill});
      b.node("Pad", {"x", "pads", "fill"}, {"xp"});
      OnnxBuilder::attr_ints(b.node("Conv", {"xp", "w", "bias"}, {"y"}), "pads", {1, 1, 1, 1});
      b.output("y");
      if (shared) {
        b.node("GlobalAveragePool", {"xp"}, {"pooled"});
        b.output("pooled");
      }
      Model m = b.load();
      runtime::Plan p = make_plan(m, true);
      bool has_pad = false;
      for (const auto& st : p.steps()) has_pad |= p.graph().node(st.node).op == graph::OpType::Pad;
      EXPECT_EQ(has_pad, fill != 0.f || channel_pad || shared) << fill << " " << variant;
      Tensor x = random_tensor({2, 4, 7, 9}, 5);
      const Tensor got = Session(m).run({{"x", x}})["y"], want = Session(m, {1, false}).run({{"x", x}})["y"];
      ASSERT_EQ(got.shape(), want.shape());
      double err = 0;
      for (int64_t i = 0; i < want.numel(); ++i)
        err = std::max(err, static_cast<double>(std::abs(got.data<float>()[i] - want.data<float>()[i])));
      EXPECT_LT(err, 1e-5) << fill << " " << variant;
    }
  }
}

// An explicit zero Pad of H and W before an AveragePool (torch's avg_pool2d with padding and
// count_include_pad=True; Inception-v3's branch pools) joins the pool's pads with
// count_include_pad set: no Pad step and the NHWC pool kernel, the reference kernels' answer
// (asymmetric pads, ceil_mode windows past the padded map, a pool with counted pads of its
// own). It stays a Pad for a non-zero fill, a pool with uncounted pads of its own, a MaxPool
// (a padded 0 may be the max), and a padded value that something else reads too.
TEST(EliminateIdentities, ZeroPadBeforeAveragePoolJoinsItsPads) {
  struct Case {
    const char* what;
    float fill;
    std::vector<int64_t> own_pads;
    bool count_own, ceil, max, shared, folds;
  };
  for (const Case& c : {Case{"torch's export", 0.f, {0, 0, 0, 0}, false, false, false, false, true},
                        Case{"ceil_mode", 0.f, {0, 0, 0, 0}, false, true, false, false, true},
                        Case{"own pads, counted", 0.f, {1, 0, 0, 1}, true, true, false, false, true},
                        Case{"own pads, not counted", 0.f, {1, 0, 0, 1}, false, false, false, false, false},
                        Case{"fill 0.5", 0.5f, {0, 0, 0, 0}, false, false, false, false, false},
                        Case{"MaxPool", 0.f, {0, 0, 0, 0}, false, false, true, false, false},
                        Case{"read twice", 0.f, {0, 0, 0, 0}, false, false, false, true, false}}) {
    OnnxBuilder b;
    b.input("x", {2, 5, 9, 11}).init_random("w", {5, 5, 1, 1}, 0.5f);
    b.init_i64("pads", {8}, {0, 0, 1, 2, 0, 0, 2, 1}).init("fill", {}, {c.fill});
    b.node("Conv", {"x", "w"}, {"h"});  // (a conv first: the pool then runs NHWC)
    b.node("Pad", {"h", "pads", "fill"}, {"xp"});
    auto& pool = b.node(c.max ? "MaxPool" : "AveragePool", {"xp"}, {"y"});
    OnnxBuilder::attr_ints(pool, "kernel_shape", {3, 3});
    OnnxBuilder::attr_ints(pool, "strides", {2, 2});
    OnnxBuilder::attr_ints(pool, "pads", c.own_pads);
    if (c.ceil) OnnxBuilder::attr_int(pool, "ceil_mode", 1);
    if (c.count_own) OnnxBuilder::attr_int(pool, "count_include_pad", 1);
    b.output("y");
    if (c.shared) {
      b.node("Neg", {"xp"}, {"z"});
      b.output("z");
    }
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::Pad) == 0, c.folds) << c.what;
    for (const auto& st : p.steps())
      if (c.folds && p.graph().node(st.node).op == graph::OpType::AveragePool) {
        EXPECT_EQ(st.kernel->name(), "nhwc") << c.what;
      }
    if (c.folds) {
      EXPECT_GE(pass_count(p, "eliminate_identities"), 1) << c.what << ": the fold counts";
    }
    const Tensor x = random_tensor({2, 5, 9, 11}, 8);
    for (int threads : {1, 2}) {
      auto got = Session(m, {threads, true}).run({{"x", x}}), want = Session(m, {1, false}).run({{"x", x}});
      for (const auto& [name, t] : want) {
        ASSERT_EQ(got[name].shape(), t.shape()) << c.what << " " << name;
        EXPECT_LT(normalized_error(got[name], t), 1e-6) << c.what << " " << name << ", " << threads << " threads";
      }
    }
  }
}

// GlobalMaxPool after a conv runs NHWC on the pool kernel (it ran on the reference kernel behind
// a reorder to NCHW): 3, 16 and 37 channels (a partial vector), batch 2, 1 and 2 threads,
// against the reference kernels.
TEST(AssignLayouts, GlobalMaxPoolRunsNhwc) {
  for (int64_t c : {3, 16, 37}) {
    OnnxBuilder b;
    b.input("x", {2, 4, 9, 7}).init_random("w", {c, 4, 3, 3}, 0.3f);
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"h"}), "pads", {1, 1, 1, 1});
    b.node("GlobalMaxPool", {"h"}, {"y"});
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    for (const auto& st : p.steps())
      if (p.graph().node(st.node).op == graph::OpType::GlobalMaxPool) {
        EXPECT_EQ(st.kernel->name(), "nhwc") << c;
      }
    EXPECT_LE(count_ops(p, graph::OpType::SluiceReorder), 1) << "only the image in, if the conv does not read NCHW";
    EXPECT_LT(fast_vs_reference(m, {2, 4, 9, 7}), 1e-6) << c;
  }
}

OnnxBuilder conv_bn_relu(bool with_identity) {
  OnnxBuilder b;
  b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 3, 3}, 0.3f).init_random("cb", {8});
  b.init_random("scale", {8}, 0.5f, 1.f).init_random("bias", {8}).init_random("mean", {8});
  b.init_random("var", {8}, 0.2f, 1.5f);
  b.node("Conv", {"x", "w", "cb"}, {"c"});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"bn"});
  if (with_identity) {
    b.node("Identity", {"bn"}, {"bn_id"});
    b.node("Relu", {"bn_id"}, {"y"});
  } else {
    b.node("Relu", {"bn"}, {"y"});
  }
  b.node("Sigmoid", {"bn"}, {"dead_branch"});  // reaches no output
  b.output("y");
  return b;
}

TEST(FoldBatchNorm, ConvWithBiasFoldsAndKeepsNumbers) {
  Model m = conv_bn_relu(false).load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "fold_batch_norm"), 1);
  EXPECT_EQ(count_ops(p, graph::OpType::BatchNormalization), 0);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
}

TEST(FoldBatchNorm, NotFoldedWhenConvOutputHasAnotherUser) {
  OnnxBuilder b;
  b.input("x", {1, 4, 6, 6}).init_random("w", {4, 4, 3, 3}, 0.3f);
  b.init_random("scale", {4}, 0.5f, 1.f).init_random("bias", {4}).init_random("mean", {4});
  b.init_random("var", {4}, 0.2f, 1.5f);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"bn"});
  b.node("Add", {"bn", "c"}, {"y"});  // c is used twice: folding would change it
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "fold_batch_norm"), 0);
  EXPECT_EQ(count_ops(p, graph::OpType::BatchNormalization), 1);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
}

TEST(FoldBatchNorm, FoldsWhenConvOutputIsSingleUse) {
  OnnxBuilder b;
  b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 3, 3}, 0.3f);
  b.init_random("scale", {8}, 0.5f, 1.f).init_random("bias", {8}).init_random("mean", {8});
  b.init_random("var", {8}, 0.2f, 1.5f);
  b.node("Conv", {"x", "w"}, {"c"});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "fold_batch_norm"), 1);
  EXPECT_EQ(count_ops(p, graph::OpType::BatchNormalization), 0);
  EXPECT_EQ(count_ops(make_plan(m, false), graph::OpType::BatchNormalization), 1);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
}

// Conv (no bias) -> Add of a per-channel constant -> BatchNormalization: the Add folds into the
// conv's bias, and then the BN, which met an Add before, folds too.
TEST(FoldBatchNorm, FoldsBehindAConstantAddThatFolded) {
  OnnxBuilder b;
  b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 3, 3}, 0.3f).init_random("shift", {1, 8, 1, 1});
  b.init_random("scale", {8}, 0.5f, 1.f).init_random("bias", {8}).init_random("mean", {8});
  b.init_random("var", {8}, 0.2f, 1.5f);
  b.node("Conv", {"x", "w"}, {"c"});
  b.node("Add", {"c", "shift"}, {"a"});
  b.node("BatchNormalization", {"a", "scale", "bias", "mean", "var"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(count_ops(p, graph::OpType::BatchNormalization), 0);
  EXPECT_EQ(count_ops(p, graph::OpType::Add), 0);
  EXPECT_EQ(count_ops(p, graph::OpType::Conv), 1);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
}

// A channel mask or scale as a full-size constant ([1, C, H, W]: torch.where(mask > 0, x,
// torch.zeros_like(x)), x * mask.expand_as(x)) folds into the conv as the [1, C, 1, 1] form
// does, and only when each channel holds one value and the other branch is all zeros.
TEST(FoldChannelScales, FullSizeMasksFoldOnlyWhenEachChannelIsOneValue) {
  struct Case {
    bool where, channel_varies, zeros_not_zero;
  };
  for (const Case& k : {Case{false, false, false}, Case{false, true, false}, Case{true, false, false},
                        Case{true, true, false}, Case{true, false, true}}) {
    std::vector<float> mask(8 * 6 * 6), zeros(8 * 6 * 6, 0.f);
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i / 36) % 3 == 1 ? 0.f : 1.5f;  // channels 1, 4, 7 off
    if (k.channel_varies) mask[2 * 36 + 7] = 0.f;  // one pixel of channel 2 masked: not a channel mask
    if (k.zeros_not_zero) zeros[5] = 0.25f;
    OnnxBuilder b;
    b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 3, 3}, 0.3f).init_random("bias", {8});
    b.init("mask", {1, 8, 6, 6}, mask).init("zeros", {1, 8, 6, 6}, zeros).init("zero", {}, {0.f});
    auto& conv = b.node("Conv", {"x", "w", "bias"}, {"c"});
    OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"});
    if (k.where) {
      b.node("Greater", {"mask", "zero"}, {"keep"});
      b.node("Where", {"keep", "r", "zeros"}, {"y"});
    } else {
      b.node("Mul", {"r", "mask"}, {"y"});
    }
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    const bool folds = !k.channel_varies && !k.zeros_not_zero;
    const int left = count_ops(p, graph::OpType::Where) + count_ops(p, graph::OpType::Mul);
    EXPECT_EQ(left, folds ? 0 : 1) << k.where << k.channel_varies << k.zeros_not_zero;
    EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5) << k.where << k.channel_varies << k.zeros_not_zero;
  }
}

// A BatchNorm lowered as (x - mean) / sd * gamma + beta folds whole, the Div too (by 1 / sd):
// its zero-gamma channels (beta 0) are then zero filters, which pruning removes.
TEST(FoldChannelScales, BatchNormLoweredWithDivFolds) {
  std::vector<float> gamma = {1.2f, 0.f, 0.7f, 0.9f, 0.f, 1.1f}, beta = {0.1f, 0.f, -0.2f, 0.3f, 0.f, 0.05f};
  OnnxBuilder b;
  b.input("x", {1, 3, 6, 6}).init_random("w", {6, 3, 3, 3}, 0.3f).init_random("mean", {6, 1, 1}, 0.2f);
  b.init_random("sd", {6, 1, 1}, 0.1f, 1.f).init("g", {6, 1, 1}, gamma).init("be", {6, 1, 1}, beta);
  b.init_random("w2", {4, 6, 1, 1}, 0.3f);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
  b.node("Sub", {"c", "mean"}, {"d"});
  b.node("Div", {"d", "sd"}, {"n"});
  b.node("Mul", {"n", "g"}, {"s"});
  b.node("Add", {"s", "be"}, {"a"});
  b.node("Relu", {"a"}, {"r"});
  b.node("Conv", {"r", "w2"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(count_ops(p, graph::OpType::Div) + count_ops(p, graph::OpType::Mul) + count_ops(p, graph::OpType::Sub) +
                count_ops(p, graph::OpType::Add),
            0);
  EXPECT_EQ(pass_count(p, "prune_channels"), 2);
  EXPECT_LT(fast_vs_reference(m, {1, 3, 6, 6}), 1e-5);
}

// A 0/1 mask after relu6 written as Relu then Clip folds into the conv's filters; not when a
// value on the way is also a graph output (it would lose the masked channels too).
TEST(FoldChannelScales, MaskAfterActivationChainOnlyWhenNothingElseReadsTheChain) {
  for (bool relu_is_output : {false, true}) {
    OnnxBuilder b;
    b.input("x", {1, 3, 6, 6}).init_random("w", {4, 3, 3, 3}, 0.3f).init_random("bias", {4}, 0.1f, 0.2f);
    b.init("lo", {}, {0.f}).init("hi", {}, {6.f}).init("mask", {1, 4, 1, 1}, {1.f, 0.f, 1.f, 0.f});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w", "bias"}, {"c"}), "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"});
    b.node("Clip", {"r", "lo", "hi"}, {"k"});
    b.node("Mul", {"k", "mask"}, {"y"});
    b.output("y");
    if (relu_is_output) b.output("r");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::Mul), relu_is_output ? 1 : 0) << relu_is_output;
    Tensor x = random_tensor({1, 3, 6, 6}, 4);
    auto got = Session(m).run({{"x", x}}), want = Session(m, {1, false}).run({{"x", x}});
    for (const auto& [name, t] : want) EXPECT_LT(normalized_error(got.at(name), t), 1e-5) << name << " " << relu_is_output;
  }
}

TEST(EliminateIdentitiesAndDeadNodes, RemovesThem) {
  Model m = conv_bn_relu(true).load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "eliminate_identities"), 1);
  EXPECT_GE(pass_count(p, "remove_dead_nodes"), 1);
  EXPECT_EQ(count_ops(p, graph::OpType::Identity), 0);
  EXPECT_EQ(count_ops(p, graph::OpType::Sigmoid), 0);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
}

// The no-op forms PyTorch's dynamo exporter writes: a Slice over the whole extent, a Reshape to
// the same shape, a Cast to the same dtype. A whole-extent Slice with step -1 reverses the
// axis and a Slice that drops an element changes the data: both stay.
TEST(EliminateIdentities, NoOpSliceReshapeCastGoReversingSliceStays) {
  OnnxBuilder b;
  b.input("x", {2, 3, 4, 5});
  b.init_i64("s0", {2}, {0, 0}).init_i64("e_all", {2}, {INT64_MAX, INT64_MAX}).init_i64("axes", {2}, {0, 1});
  b.init_i64("one", {2}, {1, 1}).init_i64("shape", {4}, {2, 3, 4, 5});
  b.init_i64("rs", {1}, {-1}).init_i64("re", {1}, {INT64_MIN}).init_i64("ra", {1}, {3}).init_i64("rstep", {1}, {-1});
  b.init_i64("ds", {1}, {1}).init_i64("de", {1}, {INT64_MAX});
  b.node("Slice", {"x", "s0", "e_all", "axes", "one"}, {"a"});
  b.node("Reshape", {"a", "shape"}, {"c"});
  auto& cast = b.node("Cast", {"c"}, {"d"});
  OnnxBuilder::attr_int(cast, "to", 1);
  b.node("Slice", {"d", "rs", "re", "ra", "rstep"}, {"r"});  // reversed along W: same shape, other data
  b.node("Slice", {"r", "ds", "de", "ra"}, {"e"});           // drops W = 0
  b.node("Relu", {"e"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "eliminate_identities"), 3);
  EXPECT_EQ(count_ops(p, graph::OpType::Slice), 2);
  EXPECT_EQ(count_ops(p, graph::OpType::Reshape) + count_ops(p, graph::OpType::Cast), 0);
  EXPECT_LT(fast_vs_reference(m, {2, 3, 4, 5}), 1e-6);
}

// TorchScript writes a Pad of zeros before avg_pool2d: it goes. A Pad that keeps the shape
// but moves the data (-1 before, +1 after along W) stays (as a Pad, or as the shift it is).
// Transposes back and forth (channel-last graphs from tf2onnx): NCHW -> NHWC -> NCHW vanishes;
// NCHW -> NHWC -> another order becomes one Transpose; a first Transpose with another reader
// stays for it; a Transpose by the identity permutation goes. Against the reference kernels.
TEST(EliminateIdentities, TransposePairsFold) {
  struct Case {
    std::vector<int64_t> second;
    bool other_reader;
    int transposes_left;
  };
  for (const Case& c : {Case{{0, 3, 1, 2}, false, 0}, Case{{0, 2, 1, 3}, false, 1}, Case{{0, 3, 1, 2}, true, 1},
                        Case{{}, false, 1}}) {
    OnnxBuilder b;
    b.input("x", {2, 3, 4, 5});
    OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"t1"}), "perm", {0, 2, 3, 1});
    auto& t2 = b.node("Transpose", {"t1"}, {"t2"});
    if (!c.second.empty()) OnnxBuilder::attr_ints(t2, "perm", c.second);
    b.node("Relu", {"t2"}, {"y"});
    b.output("y");
    if (c.other_reader) {
      b.node("Neg", {"t1"}, {"z"});
      b.output("z");
    }
    OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"same"}), "perm", {0, 1, 2, 3});
    b.node("Abs", {"same"}, {"w"});
    b.output("w");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    int transposes = 0;
    for (const auto& st : p.steps()) transposes += p.graph().node(st.node).op == graph::OpType::Transpose;
    EXPECT_EQ(transposes, c.transposes_left);
    const Tensor x = random_tensor({2, 3, 4, 5}, 5);
    auto got = Session(m, {1, true}).run({{"x", x}}), want = Session(m, {1, false}).run({{"x", x}});
    for (const auto& [name, t] : want) {
      ASSERT_EQ(got[name].shape(), t.shape()) << name;
      EXPECT_EQ(normalized_error(got[name], t), 0.0) << name;
    }
  }
}

TEST(EliminateIdentities, ZeroPadGoesShapeKeepingShiftStays) {
  OnnxBuilder b(13);
  b.input("x", {2, 3, 4, 5});
  b.init_i64("zero", {8}, {0, 0, 0, 0, 0, 0, 0, 0}).init_i64("shift", {8}, {0, 0, 0, -1, 0, 0, 0, 1});
  b.node("Pad", {"x", "zero"}, {"a"});
  b.node("Pad", {"a", "shift"}, {"c"});
  b.node("Relu", {"c"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "eliminate_identities"), 1);
  EXPECT_EQ(count_ops(p, graph::OpType::Pad) + count_ops(p, graph::OpType::SluiceShift), 1);
  EXPECT_LT(fast_vs_reference(m, {2, 3, 4, 5}), 1e-6);
}

// A conv padded by its kernel's size or more on a side, then a residual Add and a Relu: oneDNN
// 2.6's brgconv with the sum post-op crashed on it (pads [4, 1, 2, 1] on a 3x3 kernel) or, without
// the Relu, was off by ~2.6; the Add stays a node there. Pads below the kernel still fuse.
TEST(FuseResidualAdd, NotFusedWherePaddingReachesTheKernelSize) {
  for (int64_t top : {4, 3, 2})
    for (bool relu : {true, false}) {
      OnnxBuilder b;
      const int64_t oh = (14 + top + 2 - 3) + 1, ow = 9;
      b.input("x", {2, 23, 14, 9}).input("r", {2, 29, oh, ow});
      b.init_random("w", {29, 23, 3, 3}, 0.3f).init_random("b", {29});
      OnnxBuilder::attr_ints(b.node("Conv", {"x", "w", "b"}, {"y"}, "conv"), "pads", {top, 1, 2, 1});
      b.node("Add", {"y", "r"}, {relu ? "s" : "z"});
      if (relu) b.node("Relu", {"s"}, {"z"});
      b.output("z");
      Model m = b.load();
      runtime::Plan plan(*m.graph(), {}, {1, true});
      const graph::Node* conv = last_node(plan.graph(), graph::OpType::Conv);
      ASSERT_NE(conv, nullptr);
      EXPECT_EQ(conv->p<graph::ConvParams>().fused_sum, top < 3) << "top pad " << top;
      Session fast(m, [] { SessionOptions o; o.sparse = SparseMode::Off; return o; }()), ref(m, {1, false});
      const std::map<std::string, Tensor> in{{"x", random_tensor({2, 23, 14, 9}, 5)}, {"r", random_tensor({2, 29, oh, ow}, 6)}};
      EXPECT_LT(normalized_error(fast.run(in).at("z"), ref.run(in).at("z")), 1e-5) << "top pad " << top << " relu " << relu;
    }
}

TEST(FuseActivations, ClipWithConstantBoundsBecomesEpilogue) {
  // A Clip with min > max is legal ONNX (every value becomes max) but not an epilogue oneDNN
  // takes: it stays a node (loading failed before).
  for (auto [lo, hi] : {std::pair{0.f, 6.f}, std::pair{2.f, 1.f}}) {
    OnnxBuilder b(13);
    b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 1, 1}).init("lo", {}, {lo}).init("hi", {}, {hi});
    b.node("Conv", {"x", "w"}, {"c"});
    b.node("Clip", {"c", "lo", "hi"}, {"y"});
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    const bool fused = lo <= hi;
    EXPECT_EQ(pass_count(p, "fuse_activations"), fused ? 1 : 0);
    EXPECT_EQ(count_ops(p, graph::OpType::Clip), fused ? 0 : 1);
    EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
  }
}

TEST(FuseActivations, ReluThenClipComposeOnlyWhenExact) {
  // torch's F.relu6 at opset 13: Relu, then Clip(0, 6): one epilogue. A Clip whose lower
  // bound is below 0 after a Relu is not a Clip alone, and stays.
  for (float lo : {0.f, -1.f}) {
    OnnxBuilder b(13);
    b.input("x", {1, 4, 6, 6}).init_random("w", {8, 4, 3, 3}).init("lo", {}, {lo}).init("hi", {}, {0.5f});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"});
    b.node("Clip", {"r", "lo", "hi"}, {"y"});
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::Clip), lo == 0.f ? 0 : 1) << "lo " << lo;
    EXPECT_EQ(count_ops(p, graph::OpType::Relu), 0);
    EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 6}), 1e-5);
  }
}

// SiLU as y * sigmoid(y) after a conv (EfficientNet's): the conv's Swish epilogue, either operand
// order; when y has another reader it stays three ops.
TEST(FuseActivations, SiluBecomesTheConvsSwishEpilogue) {
  for (int variant = 0; variant < 3; ++variant) {
    OnnxBuilder b(13);
    b.input("x", {2, 4, 6, 6}).init_random("w", {8, 4, 3, 3});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
    b.node("Sigmoid", {"c"}, {"s"});
    if (variant == 1) {
      b.node("Mul", {"s", "c"}, {"y"});
    } else {
      b.node("Mul", {"c", "s"}, {"y"});
    }
    b.output("y");
    if (variant == 2) b.output("c");  // y also read elsewhere
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::Sigmoid), variant == 2 ? 1 : 0) << "variant " << variant;
    EXPECT_EQ(count_ops(p, graph::OpType::Mul), variant == 2 ? 1 : 0) << "variant " << variant;
    const Tensor x = random_tensor({2, 4, 6, 6});
    EXPECT_LT(normalized_error(Session(m, {1, true}).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
  }
}

// hardswish as torch exports it below opset 14: y * HardSigmoid(y; alpha 1/6, beta 0.5), either
// operand order: the conv's HardSwish epilogue. Another HardSigmoid (a squeeze-and-excitation's
// gate, alpha 0.2) stays.
TEST(FuseActivations, HardswishWrittenOutBecomesTheConvsEpilogue) {
  for (int variant = 0; variant < 3; ++variant) {
    OnnxBuilder b(13);
    b.input("x", {2, 4, 6, 6}).init_random("w", {8, 4, 3, 3});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
    auto& hs = b.node("HardSigmoid", {"c"}, {"s"});
    OnnxBuilder::attr_float(hs, "alpha", variant == 2 ? 0.2f : 1.f / 6.f);
    OnnxBuilder::attr_float(hs, "beta", 0.5f);
    b.node("Mul", {variant == 1 ? "s" : "c", variant == 1 ? "c" : "s"}, {"y"});
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::HardSigmoid), variant == 2 ? 1 : 0) << "variant " << variant;
    EXPECT_EQ(count_ops(p, graph::OpType::Mul), variant == 2 ? 1 : 0) << "variant " << variant;
    const Tensor x = random_tensor({2, 4, 6, 6});
    EXPECT_LT(normalized_error(Session(m, {1, true}).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5)
        << "variant " << variant;
  }
}

// x op s with s one value per (sample, channel) (a squeeze-and-excitation scale) or per channel,
// either operand first, on NHWC (behind a conv) and NCHW data: the per-channel kernel, against
// the reference.
TEST(FastElementwise, PerChannelOperandOnBothLayouts) {
  for (const std::string op : {"Mul", "Sub", "Div", "PRelu"})
    for (bool nhwc : {false, true})
      for (bool s_first : {false, true})
        for (const Shape& ss : {Shape{2, 5, 1, 1}, Shape{1, 5, 1, 1}, Shape{5, 1, 1}}) {
          if (op == "PRelu" && s_first) continue;  // PRelu(x, slope): the slopes are its second input
          OnnxBuilder b(13);
          b.input("x", {2, 5, 4, 3}).input("s", ss).init_random("w", {5, 5, 1, 1});
          if (nhwc) b.node("Conv", {"x", "w"}, {"xc"});
          b.node("Relu", {"s"}, {"sp"});
          b.init("eps", {}, {0.5f});
          b.node("Add", {"sp", "eps"}, {"sv"});  // Div by a value >= 0.5
          b.node(op, {s_first ? "sv" : (nhwc ? "xc" : "x"), s_first ? (nhwc ? "xc" : "x") : "sv"}, {"y"});
          b.output("y");
          Model m = b.load();
          runtime::Plan p = make_plan(m, true);
          bool per_channel = false;
          for (const auto& st : p.steps())
            per_channel |= st.kernel->name().find("per-channel") != std::string::npos;
          EXPECT_TRUE(per_channel) << op << (nhwc ? " NHWC" : " NCHW") << (s_first ? " s first" : "") << "\n" << p.describe(false);
          const Tensor x = random_tensor({2, 5, 4, 3}), sv = random_tensor(ss, 3);
          EXPECT_LT(normalized_error(Session(m, {2, true}).run({{"x", x}, {"s", sv}})["y"],
                                     Session(m, {1, false}).run({{"x", x}, {"s", sv}})["y"]),
                    1e-5)
              << op << (nhwc ? " NHWC" : " NCHW") << (s_first ? " s first" : "");
        }
}

// Channel-last data (no conv: NCHW-ordered): an operand broadcast along rows, either a row vector
// (a bias over the last axis) or one value per row (LayerNorm's mean), either side; ReduceMean over
// the last axes; x ** 2. Against the reference.
TEST(FastElementwise, RowBroadcastsReduceMeanAndSquare) {
  struct Case {
    Shape s;
    const char* kernel;
  };
  for (const Case& c : {Case{{7}, "row-vector"}, Case{{1, 1, 7}, "row-vector"}, Case{{5, 7}, "row-vector"},
                        Case{{2, 3, 5, 1}, "per-row"}, Case{{2, 1, 1, 1}, "per-row"}})
    for (const char* op : {"Add", "Sub", "Div"})
      for (bool s_first : {false, true}) {
        OnnxBuilder b(13);
        b.input("x", {2, 3, 5, 7}).input("s", c.s).init("half", {}, {0.5f});
        b.node("Abs", {"s"}, {"sa"});
        b.node("Add", {"sa", "half"}, {"sv"});  // Div by a value >= 0.5
        b.node(op, {s_first ? "sv" : "x", s_first ? "x" : "sv"}, {"y"});
        b.output("y");
        Model m = b.load();
        runtime::Plan p = make_plan(m, true);
        bool found = false;
        for (const auto& st : p.steps()) found |= st.kernel->name().find(c.kernel) != std::string::npos;
        EXPECT_TRUE(found) << op << " " << shape_str(c.s) << "\n" << p.describe(false);
        const Tensor x = random_tensor({2, 3, 5, 7}), sv = random_tensor(c.s, 5);
        EXPECT_LT(normalized_error(Session(m, {2, true}).run({{"x", x}, {"s", sv}})["y"],
                                   Session(m, {1, false}).run({{"x", x}, {"s", sv}})["y"]),
                  1e-6)
            << op << " " << shape_str(c.s) << (s_first ? " s first" : "");
      }
  for (const std::vector<int64_t>& axes : {std::vector<int64_t>{-1}, std::vector<int64_t>{2, 3}, std::vector<int64_t>{1, 2, 3}})
    for (int keepdims : {0, 1}) {
      OnnxBuilder b(13);
      b.input("x", {2, 3, 5, 7}).init("two", {}, {2.f});
      b.node("Pow", {"x", "two"}, {"sq"});
      auto& rm = b.node("ReduceMean", {"sq"}, {"y"});
      OnnxBuilder::attr_ints(rm, "axes", axes);
      OnnxBuilder::attr_int(rm, "keepdims", keepdims);
      b.output("y");
      Model m = b.load();
      runtime::Plan p = make_plan(m, true);
      int fast = 0;
      for (const auto& st : p.steps())
        fast += st.kernel->name() == "reduce-mean:rows" || st.kernel->name() == "elementwise:square" ||
                st.kernel->name() == "nhwc";
      EXPECT_GE(fast, 2) << p.describe(false);
      const Tensor x = random_tensor({2, 3, 5, 7});
      EXPECT_LT(normalized_error(Session(m, {2, true}).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-6);
    }
}

TEST(AssignLayouts, ReordersOnlyAtTheBoundaries) {
  // x(NCHW) -> conv -> relu -> conv -> Flatten: one reorder in, one out (before Flatten).
  OnnxBuilder b;
  b.input("x", {1, 4, 7, 7}).init_random("w1", {6, 4, 3, 3}).init_random("w2", {6, 6, 3, 3});
  b.node("Conv", {"x", "w1"}, {"c1"});
  b.node("Relu", {"c1"}, {"r1"});
  b.node("Conv", {"r1", "w2"}, {"c2"});
  b.node("Flatten", {"c2"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(pass_count(p, "assign_layouts"), 2);
  EXPECT_EQ(count_ops(p, graph::OpType::SluiceReorder), 2);
  EXPECT_LT(fast_vs_reference(m, {1, 4, 7, 7}), 1e-5);
}

// x -> Conv 3x3 (6 channels) -> c1 -> Conv k2 x k2 (m2 channels) -> c2 -> Flatten -> y, with
// `outputs` as the graph outputs (in that order, repeats kept).
Model two_convs_flattened(const Shape& xs, int64_t m2, int64_t k2, const std::vector<std::string>& outputs) {
  OnnxBuilder b;
  b.input("x", xs).init_random("w1", {6, xs[1], 3, 3}).init_random("w2", {m2, 6, k2, k2});
  b.node("Conv", {"x", "w1"}, {"c1"});
  b.node("Conv", {"c1", "w2"}, {"c2"});
  b.node("Flatten", {"c2"}, {"y"});
  for (const auto& o : outputs) b.output(o);
  return b.load();
}

// Every named output of the optimised session against the reference kernels.
void expect_outputs_match_reference(const Model& m, const Shape& xs, const std::vector<std::string>& names) {
  Session fast(m, {1, true}), ref(m, {1, false});
  Tensor x = random_tensor(xs, 3);
  auto a = fast.run({{"x", x}}), r = ref.run({{"x", x}});
  for (const auto& name : names) EXPECT_LT(normalized_error(a.at(name), r.at(name)), 1e-5) << name;
}

TEST(AssignLayouts, OutputAlsoReadInsideIsReorderedOnce) {
  // c2 is a graph output and Flatten's input: one NHWC -> NCHW reorder serves both (there were
  // two, one for the output and one for Flatten, doing the same work).
  Model m = two_convs_flattened({2, 4, 7, 7}, 6, 3, {"y", "c2"});
  EXPECT_EQ(count_ops(make_plan(m, true), graph::OpType::SluiceReorder), 2);  // x in, c2 out
  expect_outputs_match_reference(m, {2, 4, 7, 7}, {"y", "c2"});
}

TEST(AssignLayouts, OutputsListedTwiceOrFeedingOtherOutputsMatchReference) {
  // c1 is an output and feeds the output c2; c2 is listed twice and also read by Flatten.
  Model m = two_convs_flattened({1, 4, 6, 6}, 5, 1, {"c1", "c2", "y", "c2"});
  expect_outputs_match_reference(m, {1, 4, 6, 6}, {"c1", "c2", "y"});
  EXPECT_EQ(count_ops(make_plan(m, true), graph::OpType::SluiceReorder), 3);  // x in, c1 and c2 out
}

TEST(AssignLayouts, GlobalPoolOutputNeedsNoReorder) {
  OnnxBuilder b;
  b.input("x", {2, 4, 5, 5}).init_random("w1", {6, 4, 3, 3}).init_random("fc", {3, 6});
  b.node("Conv", {"x", "w1"}, {"c1"});
  b.node("GlobalAveragePool", {"c1"}, {"g"});
  b.node("Flatten", {"g"}, {"f"});
  OnnxBuilder::attr_int(b.node("Gemm", {"f", "fc"}, {"y"}), "transB", 1);
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  EXPECT_EQ(count_ops(p, graph::OpType::SluiceReorder), 1);  // only the image going in
  EXPECT_LT(fast_vs_reference(m, {2, 4, 5, 5}), 1e-5);
}

// x.mean((2, 3)) after a conv (ShuffleNetV2's head) runs as the NHWC global average pool, with a
// Flatten when the axes go: no reorder besides the image's, no generic ReduceMean.
TEST(AssignLayouts, SpatialReduceMeanBecomesGlobalPool) {
  for (int keepdims : {0, 1}) {
    OnnxBuilder b;
    b.input("x", {2, 4, 5, 5}).init_random("w1", {6, 4, 3, 3});
    b.node("Conv", {"x", "w1"}, {"c1"});
    auto& rm = b.node("ReduceMean", {"c1"}, {"y"});
    OnnxBuilder::attr_ints(rm, "axes", {-2, -1});
    OnnxBuilder::attr_int(rm, "keepdims", keepdims);
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    EXPECT_EQ(count_ops(p, graph::OpType::ReduceMean), 0);
    EXPECT_EQ(count_ops(p, graph::OpType::GlobalAveragePool), 1);
    EXPECT_EQ(count_ops(p, graph::OpType::SluiceReorder), 1);  // only the image going in
    EXPECT_LT(fast_vs_reference(m, {2, 4, 5, 5}), 1e-5) << "keepdims " << keepdims;
  }
}

// A Linear whose weight column 1 is zero: with a bias per output feature it goes (exactly); with
// a bias per row and feature ([N, M], a different constant in each row, added after the Gemm) it
// stays, and inspect says why. Numbers against the reference either way.
TEST(PruneChannels, LinearFeatureGoesUnlessItsBiasDiffersByRow) {
  for (bool per_row : {false, true}) {
    OnnxBuilder b;
    std::vector<float> w1 = {0.5f, 0, -1, 2, 0, 0.25f, -0.5f, 0, 1, 1, 0, -2};  // [4, 3], column 1 zero
    b.input("x", {2, 4}).init("w1", {4, 3}, w1).init_random("w2", {3, 2});
    if (per_row) b.init("c1", {2, 3}, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f});
    else b.init("c1", {3}, {0.1f, 0.2f, 0.3f});
    b.node("Gemm", {"x", "w1", "c1"}, {"h"}, "fc1");
    b.node("Relu", {"h"}, {"r"});
    b.node("Gemm", {"r", "w2"}, {"y"}, "fc2");
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    if (per_row) {
      // (The [2, 3] bias is an Add after the Gemm: normalise_gemms puts it there, so that the
      // product runs on oneDNN; the dead feature stays for that Add, a constant per row.)
      EXPECT_NE(insp.find("'fc1': 0 of 3 features removed; 1 dead kept: read by Add fc1_c of [2, 3], not one value per "
                          "feature"),
                std::string::npos)
          << insp;
    } else {
      EXPECT_NE(insp.find("'fc1': 1 of 3 features removed (1 constants folded"), std::string::npos) << insp;
    }
    EXPECT_LT(fast_vs_reference(m, {2, 4}), 1e-6);
  }
}

// A grouped conv's zero filters go as many from every group (a probe found RegNet's kept whole:
// 11 of 5672 dead channels went); what one group has more of stays, and inspect says why. So
// does a depthwise conv of channel multiplier 2 (each group's two filters read one channel); one
// of multiplier 1 after a conv loses its zero filters together with the conv's filters for them. Numbers against the
// reference every way.
TEST(PruneChannels, GroupedConvsLoseAsManyZeroFiltersFromEveryGroup) {
  struct G {
    int64_t group, mult;
    std::vector<int> dead;  // zero filters
    std::string expect;
  };
  const std::vector<G> cases{
      {2, 1, {0}, "'grouped': 0 of 8 channels removed; 1 dead kept: 1 dead or unread kept so that every group of a grouped conv loses as many"},
      {2, 1, {0, 5}, "'grouped': 2 of 8 channels removed"},
      {2, 1, {0, 1, 5}, "'grouped': 2 of 8 channels removed; 1 dead kept: 1 dead or unread kept so that every group"},
      {4, 1, {0, 3, 4, 6}, "'grouped': 4 of 8 channels removed"},
      {8, 2, {0}, "'grouped': 0 of 16 channels removed; 1 dead kept: 1 dead or unread kept so that every group"},
      {8, 2, {0, 3, 4, 7, 8, 11, 12, 15}, "'grouped': 8 of 16 channels removed"},
      {8, 1, {0, 1}, "'pw1 through depthwise grouped': 2 of 8 channels removed"},
      {8, 1, {0}, "'pw1 through depthwise grouped': 1 of 8 channels removed"}};
  for (const G& t : cases) {
    OnnxBuilder b;
    const int64_t per = (8 / t.group) * 9;
    std::vector<float> wd(static_cast<size_t>(8 * t.mult * per), 0.f);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (size_t i = 0; i < wd.size(); ++i)
      if (!std::count(t.dead.begin(), t.dead.end(), static_cast<int>(i / static_cast<size_t>(per)))) wd[i] = nd(rng);
    b.input("x", {1, 8, 6, 6}).init_random("w1", {8, 8, 1, 1}).init("wd", {8 * t.mult, 8 / t.group, 3, 3}, wd);
    b.init_random("w2", {4, 8 * t.mult, 1, 1});
    b.node("Conv", {"x", "w1"}, {"a"}, "pw1");
    b.node("Relu", {"a"}, {"r"});
    auto& dw = b.node("Conv", {"r", "wd"}, {"d"}, "grouped");
    OnnxBuilder::attr_int(dw, "group", t.group);
    OnnxBuilder::attr_ints(dw, "pads", {1, 1, 1, 1});
    b.node("Conv", {"d", "w2"}, {"y"}, "pw2");
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    EXPECT_NE(insp.find(t.expect), std::string::npos) << "group " << t.group << ":\n" << insp;
    EXPECT_LT(fast_vs_reference(m, {1, 8, 6, 6}), 1e-5) << "group " << t.group << " x" << t.mult;
  }
}

// A grouped conv reading a conv's dead channels: as many go from each of its input groups, the
// rest stay; a dead channel of non-zero constant value (its bias) folds into the grouped conv's
// bias for the output channels of its group when the grouped conv has no padding, and stays
// when it has. Numbers against the reference every way.
TEST(PruneChannels, GroupedReaderLosesAsManyInputsFromEveryGroup) {
  struct G {
    std::vector<int> dead;
    bool padded;
    std::string expect;
  };
  const std::vector<G> cases{{{0, 4}, true, "'pw1': 2 of 8 channels removed"},
                             {{1, 6}, false, "'pw1': 2 of 8 channels removed (1 constants folded into readers' biases)"},
                             {{1, 6}, true, "'pw1': 0 of 8 channels removed"},
                             {{0, 1, 4}, true, "'pw1': 2 of 8 channels removed; 1 dead kept: 1 constant non-zero channels read through zero padding"},
                             {{0, 2}, true, "'pw1': 0 of 8 channels removed; 2 dead kept: 2 dead or unread kept so that every group"}};
  for (const G& t : cases) {
    OnnxBuilder b;
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    std::vector<float> w1(8 * 6), b1(8, 0.f);
    for (size_t i = 0; i < w1.size(); ++i)
      if (!std::count(t.dead.begin(), t.dead.end(), static_cast<int>(i / 6))) w1[i] = nd(rng);
    for (size_t o = 0; o < b1.size(); ++o) b1[o] = o % 2 ? 0.25f * static_cast<float>(o) : 0.f;  // odd channels: constant != 0
    b.input("x", {1, 6, 7, 7}).init("w1", {8, 6, 1, 1}, w1).init("b1", {8}, b1);
    b.init_random("wg", {6, 4, 3, 3}).init_random("bg", {6}, 0.3f).init_random("w2", {3, 6, 1, 1});
    b.node("Conv", {"x", "w1", "b1"}, {"a"}, "pw1");
    b.node("Relu", {"a"}, {"r"});
    auto& gc = b.node("Conv", {"r", "wg", "bg"}, {"d"}, "grouped");
    OnnxBuilder::attr_int(gc, "group", 2);
    if (t.padded) OnnxBuilder::attr_ints(gc, "pads", {1, 1, 1, 1});
    b.node("Conv", {"d", "w2"}, {"y"}, "pw2");
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    EXPECT_NE(insp.find(t.expect), std::string::npos) << insp;
    EXPECT_LT(fast_vs_reference(m, {1, 6, 7, 7}), 1e-5) << insp;
  }
}

// A constant channel through a padded AveragePool without count_include_pad stays itself, and
// goes (folded), unless the pool is dilated: a window can then have no tap inside the map, and
// its output is 0, not the constant (found by the review: x 2 rows high, kernel 2 dilated 3,
// pads 1: the one window reads rows -1 and 2). Numbers against the reference either way.
TEST(PruneChannels, AveragePoolPassesAConstantUnlessAWindowCanMissTheMap) {
  for (int64_t dil : {1, 3}) {
    OnnxBuilder b(19);  // (AveragePool's dilations: opset 19)
    std::vector<float> w(4 * 9);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    for (size_t i = 0; i < w.size(); ++i) w[i] = i / 9 == 2 ? 0.f : nd(rng);  // filter 2 all zero
    b.input("x", {1, 1, 2, 5}).init("w", {4, 1, 3, 3}, w).init("b", {4}, {0.1f, -0.2f, 0.7f, 0.3f}).init_random("w2", {3, 4, 1, 1});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w", "b"}, {"c"}, "stem"), "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"});
    auto& pool = b.node("AveragePool", {"r"}, {"p"});
    OnnxBuilder::attr_ints(pool, "kernel_shape", {2, 1});
    OnnxBuilder::attr_ints(pool, "dilations", {dil, 1});
    OnnxBuilder::attr_ints(pool, "pads", {1, 0, 1, 0});
    b.node("Conv", {"p", "w2"}, {"y"}, "head");
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    const bool removed = insp.find("'stem': 1 of 4 channels removed (1 constants folded") != std::string::npos;
    EXPECT_EQ(removed, dil == 1) << insp;
    if (dil != 1) {
      EXPECT_NE(insp.find("dilated windows wholly in it"), std::string::npos) << insp;
    }
    EXPECT_LT(fast_vs_reference(m, {1, 1, 2, 5}), 1e-5) << "dilation " << dil;
  }
}

// A decoder's bilinear (or bicubic) upsampling between a slimmed conv and its reader: a zero
// channel interpolates to zero, so it goes; a channel whose constant is not 0 (a zero filter
// with a bias of 0.7) would come out of the interpolation only up to rounding, and stays, with
// the reason. It was "a Resize that interpolates" and nothing went.
TEST(PruneChannels, LinearResizePassesZeroChannelsOnly) {
  for (const char* mode : {"linear", "cubic"})
    for (const char* coords : {"half_pixel", "align_corners", "asymmetric"}) {
      OnnxBuilder b(13);
      std::vector<float> w(6 * 2 * 9);
      std::mt19937 rng(8);
      std::normal_distribution<float> nd;
      for (size_t i = 0; i < w.size(); ++i) w[i] = (i / 18 == 1 || i / 18 == 4) ? 0.f : nd(rng);  // filters 1, 4 zero
      b.input("x", {1, 2, 5, 6}).init("w", {6, 2, 3, 3}, w).init("b", {6}, {0.1f, 0.f, -0.2f, 0.3f, 0.7f, 0.2f});
      b.init_random("w2", {3, 6, 3, 3}).init("scales", {4}, {1.f, 1.f, 2.f, 2.f});
      OnnxBuilder::attr_ints(b.node("Conv", {"x", "w", "b"}, {"c"}, "enc"), "pads", {1, 1, 1, 1});
      b.node("Relu", {"c"}, {"r"});
      auto& rs = b.node("Resize", {"r", "", "scales"}, {"u"}, "up");
      OnnxBuilder::attr_str(rs, "mode", mode);
      OnnxBuilder::attr_str(rs, "coordinate_transformation_mode", coords);
      OnnxBuilder::attr_ints(b.node("Conv", {"u", "w2"}, {"y"}, "dec"), "pads", {1, 1, 1, 1});
      b.output("y");
      Model m = b.load();
      const std::string what = std::string(mode) + ", " + coords;
      const std::string insp = Session(m).inspect();
      EXPECT_NE(insp.find("'enc': 1 of 6 channels removed"), std::string::npos) << what << "\n" << insp;
      EXPECT_NE(insp.find("a linear or cubic Resize"), std::string::npos) << what << "\n" << insp;
      EXPECT_LT(fast_vs_reference(m, {1, 2, 5, 6}), 1e-5) << what;
    }
}

// A depthwise conv's zero filter that its producer tried and kept (a non-zero constant read
// through the next conv's padding) has one entry in inspect, with that reason, not a second one
// saying a grouped conv keeps its own zero filters (found by the review).
TEST(PruneChannels, DepthwiseZeroFilterKeptWithOneReason) {
  OnnxBuilder b;
  std::vector<float> wd(8 * 9);
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  for (size_t i = 9; i < wd.size(); ++i) wd[i] = nd(rng);  // filter 0 all zero
  std::vector<float> bd(8, 0.f);
  bd[0] = 0.5f;
  b.input("x", {1, 8, 6, 6}).init_random("w1", {8, 8, 1, 1}).init("wd", {8, 1, 3, 3}, wd).init("bd", {8}, bd);
  b.init_random("w2", {4, 8, 3, 3});
  b.node("Conv", {"x", "w1"}, {"a"}, "pw1");
  b.node("Relu", {"a"}, {"r"});
  auto& dw = b.node("Conv", {"r", "wd", "bd"}, {"d"}, "dw");
  OnnxBuilder::attr_int(dw, "group", 8);
  OnnxBuilder::attr_ints(dw, "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_ints(b.node("Conv", {"d", "w2"}, {"y"}, "c3"), "pads", {1, 1, 1, 1});
  b.output("y");
  Model m = b.load();
  const std::string insp = Session(m).inspect();
  EXPECT_NE(insp.find("'pw1 through depthwise dw'"), std::string::npos) << insp;
  EXPECT_EQ(insp.find("'dw': "), std::string::npos) << insp;
  EXPECT_LT(fast_vs_reference(m, {1, 8, 6, 6}), 1e-5);
}

// A zero filter with a NaN bias (a slimmed BN whose running mean is inf folds so), under a Relu
// or a Clip that the conv's epilogue takes: the channel is NaN in ONNX Runtime (Relu keeps NaN),
// not the 0 that the fused activation (NaN -> 0 or min) made of it, and it was removed as a zero
// channel, the output then finite (a probe's find). It stays, so the model runs on the
// reference kernels and the output is NaN, as ORT's.
TEST(PruneChannels, ZeroFilterWithNanBiasIsNotAZeroChannel) {
  for (const char* act : {"Relu", "Clip"}) {
    OnnxBuilder b;
    std::mt19937 rng(4);
    std::normal_distribution<float> nd;
    std::vector<float> w1(4 * 3 * 9), b1(4, 0.1f);
    for (size_t i = 0; i < w1.size(); ++i) w1[i] = i / 27 == 1 ? 0.f : nd(rng);  // filter 1 all zero
    b1[1] = std::numeric_limits<float>::quiet_NaN();
    b.input("x", {1, 3, 6, 6}).init("w1", {4, 3, 3, 3}, w1).init("b1", {4}, b1).init_random("w2", {5, 4, 3, 3});
    b.init("lo", {}, {0.f}).init("hi", {}, {6.f});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w1", "b1"}, {"c"}, "c1"), "pads", {1, 1, 1, 1});
    if (std::string(act) == "Relu")
      b.node("Relu", {"c"}, {"r"});
    else
      b.node("Clip", {"c", "lo", "hi"}, {"r"});
    OnnxBuilder::attr_ints(b.node("Conv", {"r", "w2"}, {"y"}, "c2"), "pads", {1, 1, 1, 1});
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    EXPECT_NE(insp.find("'c1': 0 of 4 channels removed; 1 dead kept: 1 constant channels that are inf or NaN"),
              std::string::npos)
        << act << "\n" << insp;
    const Tensor y = Session(m).run({{"x", random_tensor({1, 3, 6, 6}, 2)}})["y"];
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_TRUE(std::isnan(y.data<float>()[i])) << act << " at " << i;
  }
}

// a + cat(conv1(a), conv2(a)) (found by a probe: nothing went): an Add of two activations ties
// a and the Concat's channels into one residual group; a channel goes where it is zero in a and
// in the conv of the Concat it comes from (0 and 7 here), from both convs' outputs (and inputs)
// and a's; only 0 where a's channel 7 is not dead. Where a Concat part (c2's 4-7) would lose
// every channel, nothing of the group goes. Numbers against the reference kernels every way.
TEST(PruneChannels, ConcatAddedToAResidualLosesChannelsDeadInEveryMember) {
  struct Case {
    bool a7_dead, c2_all_dead;
    int64_t removed;
  };
  for (const Case& t : {Case{true, false, 2}, Case{false, false, 1}, Case{true, true, 0}}) {
    OnnxBuilder b;
    std::mt19937 rng(9);
    std::normal_distribution<float> nd;
    auto filters = [&](int64_t m, int64_t c, int64_t taps, std::vector<int> dead) {
      std::vector<float> w(static_cast<size_t>(m * c * taps));
      for (int64_t o = 0; o < m; ++o)
        for (int64_t i = 0; i < c * taps; ++i)
          w[static_cast<size_t>(o * c * taps + i)] = std::count(dead.begin(), dead.end(), o) ? 0.f : nd(rng);
      return w;
    };
    std::vector<int> a_dead{0};
    if (t.c2_all_dead) a_dead.insert(a_dead.end(), {4, 5, 6});  // (then 4-7 are dead in every member)
    if (t.a7_dead) a_dead.push_back(7);
    b.input("x", {1, 3, 6, 6}).init("w0", {8, 3, 3, 3}, filters(8, 3, 9, a_dead));
    b.init("w1", {4, 8, 3, 3}, filters(4, 8, 9, {0, 1}));
    b.init("w2", {4, 8, 1, 1}, filters(4, 8, 1, t.c2_all_dead ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{3}));
    b.init_random("w3", {5, 8, 3, 3});
    for (const char* c : {"c0", "c1"}) b.init(std::string("b") + c, {c[1] == '0' ? 8 : 4}, std::vector<float>(c[1] == '0' ? 8 : 4, 0.f));
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w0", "bc0"}, {"c"}, "c0"), "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"a"});
    OnnxBuilder::attr_ints(b.node("Conv", {"a", "w1", "bc1"}, {"p"}, "c1"), "pads", {1, 1, 1, 1});
    b.node("Conv", {"a", "w2"}, {"q"}, "c2");
    OnnxBuilder::attr_int(b.node("Concat", {"p", "q"}, {"r"}), "axis", 1);
    b.node("Add", {"a", "r"}, {"s"});
    b.node("Relu", {"s"}, {"t"});
    OnnxBuilder::attr_ints(b.node("Conv", {"t", "w3"}, {"y"}, "c3"), "pads", {1, 1, 1, 1});
    b.output("y");
    Model m = b.load();
    const std::string insp = Session(m).inspect();
    const std::string group = "'residual group {c0, c1, c2}': " + std::to_string(t.removed) + " of 8 channels removed";
    EXPECT_NE(insp.find(group), std::string::npos) << insp;
    if (t.c2_all_dead) {
      EXPECT_NE(insp.find("every channel of c2, a part of a Concat in it, is dead"), std::string::npos) << insp;
    }
    runtime::Plan p = make_plan(m, true);
    for (const auto& st : p.steps()) {
      const graph::Node& n = p.graph().node(st.node);
      if (n.name == "c3") {
        EXPECT_EQ(p.graph().value(n.inputs[0]).shape[1], 8 - t.removed) << insp;
      }
    }
    // Dense MACs stay the model's (c1 and c2 read the stream, which c0's compaction shrank
    // first: they counted 6 input channels; found by a review).
    RunStats st;
    Session(m).run({{"x", random_tensor({1, 3, 6, 6}, 4)}}, &st);
    EXPECT_EQ(st.dense_macs, 36 * (8 * 3 * 9 + 4 * 8 * 9 + 4 * 8 + 5 * 8 * 9)) << insp;
    EXPECT_LT(fast_vs_reference(m, {1, 3, 6, 6}), 1e-5) << insp;
  }
}

// inspect names `removed` (e.g. "'c1': 2 of 8 channels removed"), and the plan's numbers equal
// the reference kernels'.
void expect_removed_and_exact(const Model& m, const std::string& removed, const Shape& in) {
  const std::string insp = Session(m).inspect();
  EXPECT_NE(insp.find(removed), std::string::npos) << insp;
  EXPECT_LT(fast_vs_reference(m, in), 1e-5) << insp;
}

// A depthwise 3x3 conv 'shift' from `in` to `out` whose kernels are one-hot (channel c reads
// tap (c % 3, c / 3 % 3)): a shift, as ShiftResNet writes it.
void one_hot_shift(OnnxBuilder& b, const std::string& in, const std::string& out, int64_t c) {
  std::vector<float> onehot(static_cast<size_t>(c * 9), 0.f);
  for (int64_t i = 0; i < c; ++i) onehot[static_cast<size_t>(i * 9 + (i % 3) * 3 + (i / 3) % 3)] = 1.f;
  b.init("wsh", {c, 1, 3, 3}, onehot);
  auto& sh = b.node("Conv", {in, "wsh"}, {out}, "shift");
  OnnxBuilder::attr_ints(sh, "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_int(sh, "group", c);
}

// relu(b(shift(relu(a(s)))) + s), s = relu(stem(x)) (a probe's ShiftResNet block): the shift,
// a one-hot depthwise conv, is fused into b's input read; channels 2 and 5, dead in stem and in
// b, go from the residual stream all the same (they were kept: "written by conv b in a form this
// pass does not rewrite"). Numbers against the reference kernels.
TEST(PruneChannels, AResidualWriterWithAFusedShiftLosesItsDeadChannels) {
  OnnxBuilder b;
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  auto filters = [&](int64_t m, int64_t per, std::vector<int> dead) {
    std::vector<float> w(static_cast<size_t>(m * per));
    for (int64_t o = 0; o < m; ++o)
      for (int64_t i = 0; i < per; ++i) w[static_cast<size_t>(o * per + i)] = std::count(dead.begin(), dead.end(), o) ? 0.f : nd(rng);
    return w;
  };
  b.input("x", {1, 3, 8, 8}).init("ws", {8, 3, 3, 3}, filters(8, 27, {2, 5})).init("bs", {8}, filters(8, 1, {2, 5}));
  b.init("wa", {16, 8, 1, 1}, filters(16, 8, {}));
  b.init("wb", {8, 16, 1, 1}, filters(8, 16, {2, 5})).init("bb", {8}, filters(8, 1, {2, 5}));
  b.init("wh", {4, 8, 1, 1}, filters(4, 8, {}));
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "ws", "bs"}, {"c"}, "stem"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c"}, {"s"});
  b.node("Conv", {"s", "wa"}, {"a0"}, "a");
  b.node("Relu", {"a0"}, {"a1"});
  one_hot_shift(b, "a1", "sh", 16);
  b.node("Conv", {"sh", "wb", "bb"}, {"b0"}, "b");
  b.node("Add", {"b0", "s"}, {"r"});
  b.node("Relu", {"r"}, {"t"});
  b.node("Conv", {"t", "wh"}, {"y"}, "head");
  b.output("y");
  Model m = b.load();
  const std::string insp = Session(m).inspect();
  EXPECT_NE(insp.find("'residual group {stem, b}': 2 of 8 channels removed"), std::string::npos) << insp;
  runtime::Plan p = make_plan(m, true);
  bool fused = false;
  for (const auto& st : p.steps()) {
    const graph::Node& n = p.graph().node(st.node);
    if (n.name == "b") fused = !n.p<graph::ConvParams>().pre_shift.empty();
    if (n.name == "head") {
      EXPECT_EQ(p.graph().value(n.inputs[0]).shape[1], 6) << insp;
    }
  }
  EXPECT_TRUE(fused) << insp;
  EXPECT_LT(fast_vs_reference(m, {1, 3, 8, 8}), 1e-5) << insp;
}

// A channel-last graph as tf2onnx writes it: Transpose to NCHW before each conv and back after
// it, the BatchNorm as Mul and Add of [C] constants on the last axis, a Relu, and a Mul by a
// per-row [H, 1] constant: the Transposes move below those ops and cancel, so the BN folds and
// the conv's dead channels (2 and 5: zero filter, zero bias, zero BN shift) go. Numbers against
// the reference kernels.
TEST(EliminateIdentities, TransposesMoveBelowElementwiseOpsAndCancel) {
  OnnxBuilder b;
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  std::vector<float> w1(8 * 3 * 9), scale(8), shift(8), rows(6), w2(4 * 8 * 9);
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = (i / 27 == 2 || i / 27 == 5) ? 0.f : nd(rng);
  for (int c = 0; c < 8; ++c) scale[static_cast<size_t>(c)] = 0.5f + 0.1f * static_cast<float>(c), shift[static_cast<size_t>(c)] = (c == 2 || c == 5) ? 0.f : nd(rng);
  for (auto& v : rows) v = 1.f + 0.1f * nd(rng);
  for (auto& v : w2) v = nd(rng);
  b.input("x", {1, 6, 6, 3}).init("w1", {8, 3, 3, 3}, w1).init("scale", {8}, scale).init("shift", {8}, shift);
  b.init("rows", {6, 1}, rows).init("w2", {4, 8, 3, 3}, w2);
  OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"xc"}), "perm", {0, 3, 1, 2});
  OnnxBuilder::attr_ints(b.node("Conv", {"xc", "w1"}, {"c1"}, "conv1"), "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_ints(b.node("Transpose", {"c1"}, {"c1l"}), "perm", {0, 2, 3, 1});
  b.node("Mul", {"c1l", "scale"}, {"m1"});
  b.node("Add", {"shift", "m1"}, {"a1"});
  b.node("Relu", {"a1"}, {"r1"});
  OnnxBuilder::attr_ints(b.node("Transpose", {"r1"}, {"r1c"}), "perm", {0, 3, 1, 2});
  OnnxBuilder::attr_ints(b.node("Conv", {"r1c", "w2"}, {"c2"}, "conv2"), "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_ints(b.node("Transpose", {"c2"}, {"c2l"}), "perm", {0, 2, 3, 1});
  b.node("Mul", {"c2l", "rows"}, {"h2"});  // [1, 6, 6, 4] * [6, 1]: per row (H), broadcast over W and C
  b.node("Relu", {"h2"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan p = make_plan(m, true);
  int transposes = 0;
  for (const auto& st : p.steps()) {
    const graph::Node& n = p.graph().node(st.node);
    transposes += n.op == graph::OpType::Transpose;
    if (n.name == "conv2") {
      EXPECT_EQ(p.graph().value(n.inputs[0]).shape[1], 6) << p.describe(false);
    }
  }
  EXPECT_EQ(transposes, 2) << p.describe(false);  // the input's, and the one before the output's Relu
  EXPECT_LT(fast_vs_reference(m, {1, 6, 6, 3}), 1e-5);
  // A constant that would expand the value ([2, 1, 1, 1] against N = 1) keeps its Transpose.
  OnnxBuilder c;
  c.input("x", {1, 2, 3, 4}).init("two", {2, 1, 1, 1}, {2.f, -3.f});
  OnnxBuilder::attr_ints(c.node("Transpose", {"x"}, {"t"}), "perm", {0, 3, 1, 2});
  c.node("Mul", {"t", "two"}, {"y"});
  c.output("y");
  Model mc = c.load();
  Tensor x = random_tensor({1, 2, 3, 4}, 7);
  const Tensor y = Session(mc).run({{"x", x}})["y"];
  ASSERT_EQ(y.shape(), (Shape{2, 4, 2, 3}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 4; ++ch)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t w = 0; w < 3; ++w)
          ASSERT_EQ(y.data<float>()[((n * 4 + ch) * 2 + h) * 3 + w], (n == 0 ? 2.f : -3.f) * x.data<float>()[(h * 3 + w) * 4 + ch]);
}

// shift -> 1x1 conv -> Mul and Add of [1, C, 1, 1] constants (a BN written out) -> Relu: the
// shift fused into the conv's input read leaves its output channels to scale as any conv's, so
// the BN folds and the channels its zero scale and shift kill (1 and 6) go. Against the
// reference kernels.
TEST(PruneChannels, ABatchNormAfterAShiftFusedConvFoldsAndItsDeadChannelsGo) {
  OnnxBuilder b;
  std::vector<float> scale(8), shift(8);
  for (int c = 0; c < 8; ++c) {
    const bool dead = c == 1 || c == 6;
    scale[static_cast<size_t>(c)] = dead ? 0.f : 0.5f + 0.1f * static_cast<float>(c);
    shift[static_cast<size_t>(c)] = dead ? 0.f : 0.2f - 0.05f * static_cast<float>(c);
  }
  b.input("x", {1, 8, 7, 7}).init_random("wb", {8, 8, 1, 1});
  b.init("scale", {1, 8, 1, 1}, scale).init("shift", {1, 8, 1, 1}, shift).init_random("wh", {4, 8, 3, 3});
  one_hot_shift(b, "x", "sh", 8);
  b.node("Conv", {"sh", "wb"}, {"c"}, "b");
  b.node("Mul", {"c", "scale"}, {"m"});
  b.node("Add", {"m", "shift"}, {"a"});
  b.node("Relu", {"a"}, {"r"});
  OnnxBuilder::attr_ints(b.node("Conv", {"r", "wh"}, {"y"}, "head"), "pads", {1, 1, 1, 1});
  b.output("y");
  expect_removed_and_exact(b.load(), "'b': 2 of 8 channels removed", {1, 8, 7, 7});
}

// Upsample (opsets 7-9's Resize, nearest): the dead channels of the conv before it go, as behind
// a Resize (they were kept: "read by Upsample").
TEST(PruneChannels, DeadChannelsBeforeAnUpsampleGo) {
  OnnxBuilder b(9);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  std::vector<float> w(8 * 3 * 9);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i / 27 == 2 || i / 27 == 5) ? 0.f : nd(rng);
  b.input("x", {1, 3, 5, 5}).init("w", {8, 3, 3, 3}, w).init("scales", {4}, {1.f, 1.f, 2.f, 2.f}).init_random("wh", {4, 8, 3, 3});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}, "c1"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c"}, {"r"});
  b.node("Upsample", {"r", "scales"}, {"u"});
  OnnxBuilder::attr_ints(b.node("Conv", {"u", "wh"}, {"y"}, "head"), "pads", {1, 1, 1, 1});
  b.output("y");
  expect_removed_and_exact(b.load(), "'c1': 2 of 8 channels removed", {1, 3, 5, 5});
}

// a + cat(p, p), one conv's output read twice by the Concat (torch exports cat([p, p]) so): not
// a group this pass rewrites (it compacted that conv twice and read past its weights; found by
// a review). Numbers against the reference kernels.
TEST(PruneChannels, ConcatOfOneConvTwiceInAResidualStays) {
  OnnxBuilder b;
  std::vector<float> w0(8 * 3 * 9), w1(4 * 8 * 9);
  std::mt19937 rng(10);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < w0.size(); ++i) w0[i] = i / 27 == 0 || i / 27 == 4 ? 0.f : nd(rng);  // a's 0 and 4 dead
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = i / 72 == 0 ? 0.f : nd(rng);  // p's 0 dead: cat's 0 and 4
  b.input("x", {1, 3, 6, 6}).init("w0", {8, 3, 3, 3}, w0).init("w1", {4, 8, 3, 3}, w1).init_random("w3", {5, 8, 1, 1});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w0"}, {"c"}, "c0"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c"}, {"a"});
  OnnxBuilder::attr_ints(b.node("Conv", {"a", "w1"}, {"p"}, "c1"), "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_int(b.node("Concat", {"p", "p"}, {"r"}), "axis", 1);
  b.node("Add", {"a", "r"}, {"s"});
  b.node("Conv", {"s", "w3"}, {"y"}, "c3");
  b.output("y");
  Model m = b.load();
  const std::string insp = Session(m).inspect();
  EXPECT_NE(insp.find("a Concat that reads one conv's output twice"), std::string::npos) << insp;
  EXPECT_LT(fast_vs_reference(m, {1, 3, 6, 6}), 1e-5) << insp;
}

// A depthwise one-hot shift whose pruned channels have all-zero kernels (found by a probe) is
// one-hot only once pruning has removed them: it is recognised then, fused into its 1x1 reader,
// and the dense MACs still count the 8-channel depthwise conv of the model. A kernel with a
// second non-zero tap stays a conv.
TEST(PruneChannels, ShiftWithPrunedChannelsIsRecognisedAfterPruning) {
  for (bool pure : {true, false}) {
    OnnxBuilder b;
    std::vector<float> wd(8 * 9, 0.f);
    for (int c = 0; c < 8; ++c)
      if (c != 2 && c != 5) wd[static_cast<size_t>(c * 9 + (c * 4) % 9)] = 1.f;  // channels 2 and 5: all zero
    if (!pure) wd[1 * 9 + 8] = 0.5f;
    b.input("x", {1, 4, 6, 7}).init_random("w1", {8, 4, 1, 1}).init("wd", {8, 1, 3, 3}, wd).init_random("w2", {5, 8, 1, 1});
    b.node("Conv", {"x", "w1"}, {"a"}, "pw1");
    b.node("Relu", {"a"}, {"r"});
    auto& dw = b.node("Conv", {"r", "wd"}, {"d"}, "dw");
    OnnxBuilder::attr_int(dw, "group", 8);
    OnnxBuilder::attr_ints(dw, "pads", {1, 1, 1, 1});
    b.node("Conv", {"d", "w2"}, {"y"}, "pw2");
    b.output("y");
    Model m = b.load();
    runtime::Plan p = make_plan(m, true);
    const auto& log = p.pass_log();
    const auto prune = std::find_if(log.begin(), log.end(), [](const auto& e) { return e.first == "prune_channels"; });
    ASSERT_NE(prune, log.end());
    EXPECT_EQ(prune->second, 2);
    const bool again = std::find_if(prune, log.end(), [](const auto& e) { return e.first == "recognise_shifts"; }) != log.end();
    EXPECT_EQ(again, pure);
    int convs = 0, fused = 0;
    for (const auto& st : p.steps()) {
      const graph::Node& n = p.graph().node(st.node);
      if (n.op != graph::OpType::Conv) continue;
      ++convs;
      fused += !n.p<graph::ConvParams>().pre_shift.src.empty();
    }
    EXPECT_EQ(convs, pure ? 2 : 3);
    EXPECT_EQ(fused, pure ? 1 : 0);
    RunStats st;
    Session(m).run({{"x", random_tensor({1, 4, 6, 7}, 2)}}, &st);
    const int64_t px = 6 * 7, dense = px * (8 * 4 + 8 * 9 + 5 * 8);
    EXPECT_EQ(st.dense_macs, dense);
    EXPECT_EQ(st.executed_macs, px * (6 * 4 + (pure ? 0 : 6 * 9) + 5 * 6));
    EXPECT_LT(fast_vs_reference(m, {1, 4, 6, 7}), 1e-5) << (pure ? "pure" : "not one-hot");
  }
}

// The same with a full (group 1) one-hot conv, 8 -> 6, two of its filters zero, after a conv
// with two dead channels (two more unread): recognised after pruning, its dense MACs are the model's 6 x 8 x 9 per
// pixel (they counted the 6 inputs left; found by a review).
TEST(PruneChannels, FullOneHotShiftAfterPruningCountsTheModelsMacs) {
  OnnxBuilder b;
  std::vector<float> w1(8 * 4), ws(6 * 8 * 9, 0.f);
  std::mt19937 rng(12);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = i / 4 == 2 || i / 4 == 5 ? 0.f : nd(rng);
  const int src[6] = {0, -1, 3, 4, -1, 7};  // output o copies input src[o] (-1: a zero filter)
  for (int o = 0; o < 6; ++o)
    if (src[o] >= 0) ws[static_cast<size_t>((o * 8 + src[o]) * 9 + (o * 2) % 9)] = 1.f;
  b.input("x", {1, 4, 5, 5}).init("w1", {8, 4, 1, 1}, w1).init("ws", {6, 8, 3, 3}, ws).init_random("w2", {3, 6, 1, 1});
  b.node("Conv", {"x", "w1"}, {"a"}, "c1");
  OnnxBuilder::attr_ints(b.node("Conv", {"a", "ws"}, {"s"}, "sh"), "pads", {1, 1, 1, 1});
  b.node("Conv", {"s", "w2"}, {"y"}, "c2");
  b.output("y");
  Model m = b.load();
  const std::string insp = Session(m).inspect();
  EXPECT_NE(insp.find("shift+conv1x1"), std::string::npos) << insp;
  RunStats st;
  Session(m).run({{"x", random_tensor({1, 4, 5, 5}, 5)}}, &st);
  EXPECT_EQ(st.dense_macs, 25 * (8 * 4 + 6 * 8 * 9 + 3 * 6)) << insp;
  EXPECT_EQ(st.executed_macs, 25 * (4 * 4 + 3 * 4)) << insp;  // c1 keeps the 4 channels the shift reads
  EXPECT_LT(fast_vs_reference(m, {1, 4, 5, 5}), 1e-5) << insp;
}

// A BatchNorm1d behind a Linear (an MLP head slimmed by its BN scales; found by a probe: it
// stayed a step of its own and no feature was removed) folds into the Gemm, whatever the form of
// the Linear: Gemm with transB, Gemm without, MatMul + Add. Its zero-scale features are then
// removed (constants folded into the next Gemm's bias where beta is not 0), the Relu fused.
TEST(FoldBatchNorm, BatchNorm1dBehindALinearFoldsAndItsDeadFeaturesGo) {
  for (int form = 0; form < 3; ++form)
    for (float beta0 : {0.f, 0.6f}) {
      OnnxBuilder b;
      const int64_t k = 6, f = 8;
      std::vector<float> scale(f), beta(f), mean(f), var(f);
      for (int64_t i = 0; i < f; ++i) {
        scale[i] = i % 3 == 0 ? 0.f : 0.5f + 0.1f * static_cast<float>(i);  // features 0, 3, 6: zero scale
        beta[i] = i % 3 == 0 ? beta0 : 0.05f * static_cast<float>(i);
        mean[i] = 0.1f * static_cast<float>(i), var[i] = 1.f + 0.2f * static_cast<float>(i);
      }
      b.input("x", {3, k}).init("s", {f}, scale).init("bb", {f}, beta).init("m", {f}, mean).init("v", {f}, var);
      b.init_random("w", form == 0 ? Shape{f, k} : Shape{k, f}).init_random("c", {f}).init_random("w2", {4, f});
      if (form == 2) {
        b.node("MatMul", {"x", "w"}, {"p"});
        b.node("Add", {"p", "c"}, {"h"});
      } else {
        auto& gm = b.node("Gemm", {"x", "w", "c"}, {"h"}, "fc1");
        if (form == 0) OnnxBuilder::attr_int(gm, "transB", 1);
      }
      b.node("BatchNormalization", {"h", "s", "bb", "m", "v"}, {"n"});
      b.node("Relu", {"n"}, {"r"});
      OnnxBuilder::attr_int(b.node("Gemm", {"r", "w2"}, {"y"}, "fc2"), "transB", 1);
      b.output("y");
      Model m = b.load();
      runtime::Plan p = make_plan(m, true);
      const std::string what = "form " + std::to_string(form) + " beta " + std::to_string(beta0);
      EXPECT_EQ(count_ops(p, graph::OpType::BatchNormalization), 0) << what;
      EXPECT_EQ(count_ops(p, graph::OpType::Relu), 0) << what;
      ASSERT_EQ(count_ops(p, graph::OpType::Gemm), 2) << what;
      EXPECT_EQ(pass_count(p, "prune_channels"), 3) << what;
      EXPECT_EQ(p.graph().value(p.graph().node(p.steps()[0].node).outputs[0]).shape, (Shape{3, f - 3})) << what;
      EXPECT_LT(fast_vs_reference(m, {3, k}), 1e-6) << what;
    }
}

// A Linear written as MatMul [+ Add] becomes a Gemm (passes::linear_as_gemm), and then prunes
// as one: the dead feature of fc1 goes, its constant bias folded into fc2's. A bias that is
// not one value per column ([2, 3]) stays an Add after a bias-less Gemm; a 3-D input stays a
// MatMul. Every form equals the reference kernels.
// Gemm with alpha, beta and transA in every combination (C a bias row; A given as x, or as a
// transposed x: the two transposes cancel) runs on a fast kernel in the form alpha 1, beta 1, no
// transA, with the reference's results.
TEST(LinearAsGemm, AlphaBetaAndTransAAreFoldedAway) {
  int combos = 0;
  for (float alpha : {1.f, 0.5f})
    for (float beta : {1.f, 0.f, -2.f})
      for (int trans_a = 0; trans_a < 3; ++trans_a) {  // 0: x, 1: transA on x^T (a Transpose node), 2: transA on x^T given
        OnnxBuilder b;
        b.input("x", trans_a == 2 ? Shape{6, 3} : Shape{3, 6}).init_random("w", {4, 6}).init_random("c", {4});
        std::string a = "x";
        if (trans_a == 1) {
          OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"xt"}), "perm", {1, 0});
          a = "xt";
        }
        auto& gemm = b.node("Gemm", {a, "w", "c"}, {"y"});
        OnnxBuilder::attr_int(gemm, "transB", 1);
        OnnxBuilder::attr_int(gemm, "transA", trans_a > 0);
        OnnxBuilder::attr_float(gemm, "alpha", alpha);
        OnnxBuilder::attr_float(gemm, "beta", beta);
        b.output("y");
        Model m = b.load();
        runtime::Plan plan(*m.graph(), {}, {1, true});
        int transposes = 0;
        for (const auto& st : plan.steps()) {
          const graph::Node& n = plan.graph().node(st.node);
          transposes += n.op == graph::OpType::Transpose;
          if (n.op != graph::OpType::Gemm) continue;
          const auto& p = n.p<graph::GemmParams>();
          EXPECT_TRUE(p.alpha == 1.f && p.beta == 1.f && !p.trans_a) << alpha << " " << beta << " " << trans_a;
          EXPECT_EQ(st.kernel->name().find("reference"), std::string::npos) << st.kernel->name();
        }
        EXPECT_EQ(transposes, trans_a == 2 ? 1 : 0) << "the model's Transpose and transA cancel";
        EXPECT_LT(fast_vs_reference(m, trans_a == 2 ? Shape{6, 3} : Shape{3, 6}), 1e-6)
            << alpha << " " << beta << " " << trans_a;
        ++combos;
      }
  EXPECT_EQ(combos, 18);
}

// Gemm's C in the shapes other exporters write: one value ([], [1], [1, 1]: a bias row of it),
// one per row ([M, 1]), a full [M, N], or an input given at run time: the product runs on
// oneDNN (once the whole Gemm ran on the reference kernel), the rest of C in an Add after it;
// with beta, alpha and transB too. The reference kernels' results.
TEST(LinearAsGemm, EveryShapeOfCRunsTheProductOnOneDnn) {
  struct Case {
    Shape c;
    bool runtime, add;
    float beta;
  };
  for (const Case& k : {Case{{}, false, false, 1.f}, Case{{1}, false, false, 1.f}, Case{{1, 1}, false, false, 1.f},
                        Case{{3, 1}, false, true, 1.f}, Case{{3, 5}, false, true, 1.f}, Case{{3, 5}, false, true, -0.5f},
                        Case{{3, 5}, true, true, 1.f}, Case{{5}, true, true, 1.f}}) {
    OnnxBuilder b;
    b.input("x", {3, 6}).init_random("w", {5, 6});
    if (k.runtime)
      b.input("c", k.c);
    else
      b.init_random("c", k.c);
    auto& gemm = b.node("Gemm", {"x", "w", "c"}, {"y"});
    OnnxBuilder::attr_int(gemm, "transB", 1);
    OnnxBuilder::attr_float(gemm, "beta", k.beta);
    b.output("y");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, {1, true});
    int adds = 0;
    for (const auto& st : plan.steps()) {
      const graph::Node& n = plan.graph().node(st.node);
      adds += n.op == graph::OpType::Add;
      if (n.op == graph::OpType::Gemm) {
        EXPECT_EQ(st.kernel->name().rfind("onednn", 0), 0u) << st.kernel->name();
      }
    }
    EXPECT_EQ(adds, k.add ? 1 : 0) << shape_str(k.c);
    std::map<std::string, Tensor> in{{"x", random_tensor({3, 6}, 2)}};
    if (k.runtime) in["c"] = random_tensor(k.c, 3);
    auto got = Session(m, {1, true}).run(in), want = Session(m, {1, false}).run(in);
    EXPECT_LT(normalized_error(got.at("y"), want.at("y")), 1e-6) << shape_str(k.c) << (k.runtime ? " at run time" : "");
  }
}

TEST(LinearAsGemm, MatMulAddIsAGemmAndPrunes) {
  for (int form = 0; form < 3; ++form) {  // bias [3], bias [1, 3], bias [2, 3]
    OnnxBuilder b;
    std::vector<float> w1 = {0.5f, 0, -1, 2, 0, 0.25f, -0.5f, 0, 1, 1, 0, -2};  // [4, 3], column 1 zero
    b.input("x", {2, 4}).init("w1", {4, 3}, w1).init_random("w2", {3, 2});
    const Shape bias_shape = form == 0 ? Shape{3} : form == 1 ? Shape{1, 3} : Shape{2, 3};
    b.init("c1", bias_shape, form == 2 ? std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}
                                       : std::vector<float>{0.1f, 0.2f, 0.3f});
    b.node("MatMul", {"x", "w1"}, {"h0"}, "fc1");
    b.node("Add", {"h0", "c1"}, {"h"});
    b.node("Relu", {"h"}, {"r"});
    // fc2's own bias as a row ([1, 2]) in form 1: a Gemm reader with it still takes fc1's pruning.
    b.init("c2", form == 1 ? Shape{1, 2} : Shape{2}, {0.7f, -0.4f});
    b.node("MatMul", {"r", "w2"}, {"y0"}, "fc2");
    b.node("Add", {"y0", "c2"}, {"y"});
    b.output("y");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, {1, true});
    int gemms = 0, matmuls = 0, adds = 0;
    for (const graph::Node& n : plan.graph().nodes) {
      if (n.dead) continue;
      gemms += n.op == graph::OpType::Gemm, matmuls += n.op == graph::OpType::MatMul, adds += n.op == graph::OpType::Add;
    }
    EXPECT_EQ(gemms, 2) << form;
    EXPECT_EQ(matmuls, 0) << form;
    EXPECT_EQ(adds, form == 2 ? 1 : 0) << form;
    const std::string insp = Session(m).inspect();
    if (form < 2) {
      EXPECT_NE(insp.find("'fc1': 1 of 3 features removed (1 constants folded"), std::string::npos) << insp;
    }
    EXPECT_LT(fast_vs_reference(m, {2, 4}), 1e-6) << form;
  }
  OnnxBuilder b;
  b.input("x", {2, 5, 4}).init_random("w", {4, 3}).init_random("c", {3});
  b.node("MatMul", {"x", "w"}, {"h"});
  b.node("Add", {"h", "c"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {1, true});
  EXPECT_NE(last_node(plan.graph(), graph::OpType::MatMul), nullptr) << "a 3-D input is not a Gemm's";
  EXPECT_EQ(last_node(plan.graph(), graph::OpType::Gemm), nullptr);
}

// lift_1d + sink_squeezes: a Conv1d whose output is also a graph output, read by a constant Add
// ([C, 1]: per channel) and Relu (which run in 2-D), a ReduceSum over the channels without
// keepdims (in 2-D it also reduces the inserted axis, or it would keep a rank too many) and a
// Concat with a 3-D graph input (not a lifted value: it reads the 3-D conv output). Every output
// against the same model written with an explicit Unsqueeze, a 2-D conv over [N, C, 1, L] and a
// Squeeze, on the reference kernels.
TEST(Lift1d, SqueezesSinkOnlyWhereThe2dFormComputesTheSame) {
  std::vector<float> w(6 * 3 * 3), bias(6), shift(6);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 29 % 13) / 13.0 - 0.4);
  for (size_t i = 0; i < 6; ++i) {
    bias[i] = 0.1f * static_cast<float>(i) - 0.2f;
    shift[i] = 0.3f - 0.1f * static_cast<float>(i);
  }
  auto model = [&](bool two_d, bool computed_weight = false) {
    OnnxBuilder b;
    b.input("x", {2, 3, 20}).input("x2", {2, 6, 20});
    b.init("b", {6}, bias).init("shift", {6, 1}, shift).init_i64("ax1", {1}, {1}).init_i64("ax2", {1}, {2});
    if (two_d) {
      b.init("w", {6, 3, 1, 3}, w);
      b.node("Unsqueeze", {"x", "ax2"}, {"x4"});
      OnnxBuilder::attr_ints(b.node("Conv", {"x4", "w", "b"}, {"c4"}), "pads", {0, 1, 0, 1});
      b.node("Squeeze", {"c4", "ax2"}, {"c"});
    } else {
      // No kernel_shape: the 1-D pads say it is 1-D (a computed weight's rank is not known
      // before shape inference).
      b.init("w", {6, 3, 3}, w);
      if (computed_weight) b.node("Identity", {"w"}, {"wi"});
      OnnxBuilder::attr_ints(b.node("Conv", {"x", computed_weight ? "wi" : "w", "b"}, {"c"}), "pads", {1, 1});
    }
    b.node("Add", {"c", "shift"}, {"s"});
    b.node("Relu", {"s"}, {"r"});
    OnnxBuilder::attr_int(b.node("ReduceSum", {"r", "ax1"}, {"red"}), "keepdims", 0);
    OnnxBuilder::attr_int(b.node("Concat", {"c", "x2"}, {"cat"}), "axis", 1);
    b.output("c").output("red").output("cat");
    return b.load();
  };
  Model one = model(false), two = model(true), computed = model(false, true);
  runtime::Plan p = make_plan(one, true);
  EXPECT_EQ(pass_count(p, "lift_1d"), 1);
  int squeezes = 0, in_4d = 0;
  for (const auto& st : p.steps()) {
    const graph::Node& n = p.graph().node(st.node);
    squeezes += n.op == graph::OpType::Squeeze;
    if (n.op == graph::OpType::ReduceSum || n.op == graph::OpType::Conv)
      in_4d += p.graph().value(n.inputs[0]).shape.size() == 4;
    if (n.op == graph::OpType::Concat) {
      EXPECT_EQ(p.graph().value(n.outputs[0]).shape.size(), 3u);
    }
  }
  EXPECT_EQ(squeezes, 1) << "only for the conv's own output (a graph output, read by the Concat)";
  EXPECT_EQ(in_4d, 2) << "the conv and the ReduceSum (behind the Add and Relu) read [N, C, 1, L]";
  const Tensor x = random_tensor({2, 3, 20}, 3), x2 = random_tensor({2, 6, 20}, 4);
  for (int threads : {1, 2}) {
    SessionOptions o;
    o.threads = threads;
    auto want = Session(two, {1, false}).run({{"x", x}, {"x2", x2}});
    for (const Model* m : {&one, &computed}) {
      auto got = Session(*m, o).run({{"x", x}, {"x2", x2}});
      for (const char* name : {"c", "red", "cat"}) {
        ASSERT_EQ(got[name].shape(), want[name].shape()) << name;
        EXPECT_LT(normalized_error(got[name], want[name]), 1e-6) << name;
      }
    }
  }
}

// ---- If: the branch a condition known at load picks (torch's squeeze(dim) of a dim it cannot
// see, its LocalResponseNorm) ----

onnx::GraphProto* branch(onnx::NodeProto& n, const std::string& name) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::GRAPH);
  a->mutable_g()->set_name(name);
  return a->mutable_g();
}
onnx::NodeProto* sub_node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& in,
                          const std::vector<std::string>& out, const std::string& name) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const auto& i : in) n->add_input(i);
  for (const auto& o : out) n->add_output(o);
  return n;
}
void sub_output(onnx::GraphProto* g, const std::string& name) {
  auto* vi = g->add_output();
  vi->set_name(name);
  vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
}
// cond = (Shape(x)[2] == 1), from x's shape alone.
void dim2_is_one(OnnxBuilder& b, const std::string& x, const std::string& cond) {
  b.init_i64(cond + "_two", {}, {2}).init_i64(cond + "_one", {}, {1});
  b.node("Shape", {x}, {cond + "_shape"});
  b.node("Gather", {cond + "_shape", cond + "_two"}, {cond + "_dim"});
  b.node("Equal", {cond + "_dim", cond + "_one"}, {cond});
}

// If `name` on cond: then Identity(x), else Neg(x).
void identity_or_neg_if(OnnxBuilder& b, const std::string& cond, const std::string& out, const std::string& name) {
  auto& n = b.node("If", {cond}, {out}, name);
  sub_node(branch(n, "then_branch"), "Identity", {"x"}, {"a"}, "a");
  sub_output(n.mutable_attribute(0)->mutable_g(), "a");
  sub_node(branch(n, "else_branch"), "Neg", {"x"}, {"bb"}, "bb");
  sub_output(n.mutable_attribute(1)->mutable_g(), "bb");
}
// The message of the sluice::Error that f throws ("" after a test failure if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected sluice::Error";
  return "";
}

// then: Squeeze(x, axis 2); else: x * 2 (a branch initializer times a value of the graph); a
// Relu after the If. One model, both branches, by the shape it is run on.
OnnxBuilder squeeze_or_double() {
  OnnxBuilder b;
  b.input("x", {1, 2, -1, 3}).init_i64("axes2", {1}, {2});
  dim2_is_one(b, "x", "cond");
  auto& n = b.node("If", {"cond"}, {"picked"}, "if1");
  sub_node(branch(n, "then_branch"), "Squeeze", {"x", "axes2"}, {"squeezed"}, "squeeze");
  sub_output(n.mutable_attribute(0)->mutable_g(), "squeezed");
  onnx::GraphProto* e = branch(n, "else_branch");
  auto* two = e->add_initializer();
  two->set_name("two");
  two->set_data_type(onnx::TensorProto::FLOAT);
  two->add_float_data(2.f);
  sub_node(e, "Mul", {"x", "two"}, {"doubled"}, "double");
  sub_output(e, "doubled");
  b.node("Relu", {"picked"}, {"y"});
  b.output("y");
  return b;
}

TEST(IfBranches, TheConditionFromShapesPicksTheBranch) {
  Model m = squeeze_or_double().load();
  for (int64_t h : {1, 2}) {
    Tensor x = random_tensor({1, 2, h, 3}, 5);
    for (bool optimize : {true, false}) {
      const Tensor y = Session(m, {1, optimize}).run({{"x", x}})["y"];
      ASSERT_EQ(y.shape(), h == 1 ? (Shape{1, 2, 3}) : (Shape{1, 2, h, 3})) << "optimize " << optimize;
      for (int64_t i = 0; i < x.numel(); ++i)
        ASSERT_EQ(y.data<float>()[i], std::max(0.f, (h == 1 ? 1.f : 2.f) * x.data<float>()[i])) << i;
    }
  }
  // Resolved at load: the plan has no If, and runs only the taken branch's nodes.
  runtime::Plan p(*m.graph(), {{"x", {1, 2, 2, 3}}}, nhwc_plan_options(true));
  ASSERT_EQ(p.graph().ifs_taken.size(), 1u);  // what inspect reports
  EXPECT_EQ(p.graph().ifs_taken[0], (std::pair<std::string, std::string>{"if1", "else"}));
  for (const auto& st : p.steps()) {
    EXPECT_NE(p.graph().node(st.node).op, graph::OpType::If);
    EXPECT_NE(p.graph().node(st.node).op, graph::OpType::Squeeze);
  }
}

TEST(IfBranches, NestedBranchesReadEveryEnclosingScope) {
  // then: t = x + 1, then an inner If (Shape(t)[2] == 1) whose then reads x and t: x * t; the
  // inner else gives t. The outer else gives x. The If's output is the graph output itself.
  OnnxBuilder b;
  b.input("x", {1, 2, -1, 3}).init("one", {1}, {1.f});
  dim2_is_one(b, "x", "cond");
  auto& n = b.node("If", {"cond"}, {"y"}, "outer");
  onnx::GraphProto* t = branch(n, "then_branch");
  sub_node(t, "Add", {"x", "one"}, {"t"}, "add");
  auto* two = t->add_initializer();
  two->set_name("inner_two");
  two->set_data_type(onnx::TensorProto::INT64);
  two->add_int64_data(2);
  auto* onei = t->add_initializer();
  onei->set_name("inner_one");
  onei->set_data_type(onnx::TensorProto::INT64);
  onei->add_int64_data(1);
  sub_node(t, "Shape", {"t"}, {"ts"}, "tshape");
  sub_node(t, "Gather", {"ts", "inner_two"}, {"td"}, "tgather");
  sub_node(t, "Equal", {"td", "inner_one"}, {"tc"}, "tequal");
  onnx::NodeProto* inner = sub_node(t, "If", {"tc"}, {"inner_y"}, "inner");
  onnx::GraphProto* it = branch(*inner, "then_branch");
  sub_node(it, "Mul", {"x", "t"}, {"xt"}, "mul");
  sub_output(it, "xt");
  onnx::GraphProto* ie = branch(*inner, "else_branch");
  sub_node(ie, "Identity", {"t"}, {"tt"}, "ident");
  sub_output(ie, "tt");
  sub_output(t, "inner_y");
  onnx::GraphProto* e = branch(n, "else_branch");
  sub_node(e, "Identity", {"x"}, {"xx"}, "outer_ident");
  sub_output(e, "xx");
  b.output("y");
  Model m = b.load();
  for (int64_t h : {1, 2}) {
    Tensor x = random_tensor({1, 2, h, 3}, 6);
    const Tensor y = Session(m).run({{"x", x}})["y"];
    ASSERT_EQ(y.shape(), x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.data<float>()[i];
      ASSERT_EQ(y.data<float>()[i], h == 1 ? v * (v + 1.f) : v) << "h " << h << " at " << i;
    }
  }
}

// x [1, 2, 2, 3] and an If 'by_data' to `out` on sum(x) > 0.
OnnxBuilder data_condition_if(const std::string& out) {
  OnnxBuilder b;
  b.input("x", {1, 2, 2, 3}).init("zero", {}, {0.f});
  b.node("ReduceSum", {"x"}, {"sum"});
  b.node("Greater", {"sum", "zero"}, {"positive"});
  identity_or_neg_if(b, "positive", out, "by_data");
  return b;
}

TEST(IfBranches, ADataDependentConditionIsRefusedByName) {
  OnnxBuilder b = data_condition_if("y");
  b.output("y");
  Model m = b.load();
  const std::string what = error_of([&] { Session(m).run({{"x", random_tensor({1, 2, 2, 3})}}); });
  for (const char* frag : {"'by_data'", "(If)", "'positive'", "depends on the input data"})
    EXPECT_NE(what.find(frag), std::string::npos) << what;
}

TEST(IfBranches, AnUnsupportedOpInABranchIsNamed) {
  OnnxBuilder b = squeeze_or_double();
  onnx::GraphProto* e = b.proto().mutable_graph()->mutable_node(3)->mutable_attribute(1)->mutable_g();
  e->mutable_node(0)->set_op_type("NoSuchOp");
  const std::string what = error_of([&] { b.load(); });
  EXPECT_NE(what.find("node 'double' (NoSuchOp): unsupported operator 'NoSuchOp'"), std::string::npos) << what;
}

// A 3-D pool over depth alone (torch's LocalResponseNorm pools [N, 1, C, H, W] so) runs as a 2-D
// pool over [N, C, D, H * W]: against a direct loop, with depth padding, stride and ceil_mode.
TEST(DepthPools, PoolOverDepthOnlyMatchesADirectLoop) {
  const int64_t n = 2, c = 2, d = 7, h = 3, w = 4;
  for (const char* op : {"AveragePool", "MaxPool"})
    for (int include_pad : {0, 1})
      for (int ceil : {0, 1}) {
        const int64_t k = 3, s = 2, p0 = 1, p1 = 1;
        OnnxBuilder b;
        b.input("x", {n, c, d, h, w});
        auto& node = b.node(op, {"x"}, {"y"}, "pool3d");
        OnnxBuilder::attr_ints(node, "kernel_shape", {k, 1, 1});
        OnnxBuilder::attr_ints(node, "strides", {s, 1, 1});
        OnnxBuilder::attr_ints(node, "pads", {p0, 0, 0, p1, 0, 0});
        OnnxBuilder::attr_int(node, "ceil_mode", ceil);
        if (std::string(op) == "AveragePool") OnnxBuilder::attr_int(node, "count_include_pad", include_pad);
        b.output("y");
        Model m = b.load();
        Tensor x = random_tensor({n, c, d, h, w}, 9);
        const Tensor y = Session(m).run({{"x", x}})["y"];
        const double span = static_cast<double>(d + p0 + p1 - k) / s;
        const int64_t od = (ceil ? static_cast<int64_t>(std::ceil(span)) : static_cast<int64_t>(span)) + 1;
        ASSERT_EQ(y.shape(), (Shape{n, c, od, h, w})) << op;
        const float* X = x.data<float>();
        for (int64_t nc = 0; nc < n * c; ++nc)
          for (int64_t o = 0; o < od; ++o)
            for (int64_t q = 0; q < h * w; ++q) {
              float acc = std::string(op) == "MaxPool" ? -INFINITY : 0.f;
              int64_t count = 0;
              for (int64_t t = o * s - p0; t < o * s - p0 + k; ++t) {
                if (t >= d + p1) break;  // past the padded end (a ceil_mode window)
                ++count;
                if (t < 0 || t >= d) continue;
                const float v = X[(nc * d + t) * h * w + q];
                acc = std::string(op) == "MaxPool" ? std::max(acc, v) : acc + v;
              }
              if (std::string(op) == "AveragePool") {
                int64_t inside = 0;
                for (int64_t t = std::max<int64_t>(0, o * s - p0); t < std::min(d, o * s - p0 + k); ++t) ++inside;
                acc /= static_cast<float>(include_pad ? count : inside);
              }
              ASSERT_NEAR(y.data<float>()[(nc * od + o) * h * w + q], acc, 1e-6)
                  << op << " include_pad " << include_pad << " ceil " << ceil << " at " << nc << "," << o << "," << q;
            }
      }
  // A 3-D window on a 4-D input: refused, by name (it ran as a 2-D pool over [N, C, H, W]).
  {
    OnnxBuilder b4(19);
    b4.input("x", {1, 1, 4, 3});
    OnnxBuilder::attr_ints(b4.node("MaxPool", {"x"}, {"y"}, "mp"), "kernel_shape", {2, 1, 1});
    b4.output("y");
    Model m4 = b4.load();
    const std::string what = error_of([&] { Session(m4).run({{"x", random_tensor({1, 1, 4, 3})}}); });
    EXPECT_NE(what.find("'mp' (MaxPool): its window"), std::string::npos) << what;
    EXPECT_NE(what.find("must be 5-D"), std::string::npos) << what;
  }
  // A 3-D window over H or W too is not this: refused, by name.
  OnnxBuilder b;
  b.input("x", {1, 1, 4, 4, 4});
  OnnxBuilder::attr_ints(b.node("AveragePool", {"x"}, {"y"}, "cube"), "kernel_shape", {2, 2, 2});
  b.output("y");
  Model m = b.load();
  const std::string what = error_of([&] { Session(m).run({{"x", random_tensor({1, 1, 4, 4, 4})}}); });
  EXPECT_NE(what.find("'cube'"), std::string::npos) << what;
  EXPECT_NE(what.find("only over depth alone"), std::string::npos) << what;
}

// The taken branch's nodes get what top-level ones get: a 1-D conv lifted to 2-D, a depth-only
// 3-D pool run as a 2-D one.
TEST(IfBranches, TheTakenBranchLiftsAndLowersItsNodes) {
  OnnxBuilder b;
  b.input("v", {1, 1, 4, 3, 2}).input("s", {1, 2, 5}).init_i64("two", {}, {2}).init_i64("four", {}, {4});
  b.node("Shape", {"v"}, {"vs"});
  b.node("Gather", {"vs", "two"}, {"vd"});
  b.node("Equal", {"vd", "four"}, {"cond"});
  auto& n = b.node("If", {"cond"}, {"p", "c"}, "if1");
  onnx::GraphProto* t = branch(n, "then_branch");
  auto* pool = sub_node(t, "AveragePool", {"v"}, {"tp"}, "");
  OnnxBuilder::attr_ints(*pool, "kernel_shape", {2, 1, 1});
  auto* w = t->add_initializer();
  w->set_name("w3");
  w->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : {3, 2, 3}) w->add_dims(d);
  for (int i = 0; i < 18; ++i) w->add_float_data(0.1f * static_cast<float>(i % 7) - 0.3f);
  OnnxBuilder::attr_ints(*sub_node(t, "Conv", {"s", "w3"}, {"tc"}, ""), "pads", {1, 1});
  sub_output(t, "tp");
  sub_output(t, "tc");
  onnx::GraphProto* e = branch(n, "else_branch");
  sub_node(e, "Identity", {"v"}, {"ep"}, "");
  sub_node(e, "Identity", {"s"}, {"ec"}, "");
  sub_output(e, "ep");
  sub_output(e, "ec");
  b.output("p").output("c");
  Model m = b.load();
  Tensor v = random_tensor({1, 1, 4, 3, 2}, 3), sx = random_tensor({1, 2, 5}, 4);
  auto out = Session(m).run({{"v", v}, {"s", sx}});
  const Tensor& p = out.at("p");
  ASSERT_EQ(p.shape(), (Shape{1, 1, 3, 3, 2}));
  for (int64_t dd = 0; dd < 3; ++dd)
    for (int64_t q = 0; q < 6; ++q)
      EXPECT_NEAR(p.data<float>()[dd * 6 + q], 0.5f * (v.data<float>()[dd * 6 + q] + v.data<float>()[(dd + 1) * 6 + q]), 1e-6);
  const Tensor& c = out.at("c");
  ASSERT_EQ(c.shape(), (Shape{1, 3, 5}));
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t l = 0; l < 5; ++l) {
      double want = 0;
      for (int64_t ci = 0; ci < 2; ++ci)
        for (int64_t k = 0; k < 3; ++k)
          if (l + k - 1 >= 0 && l + k - 1 < 5)
            want += static_cast<double>(0.1f * static_cast<float>((o * 6 + ci * 3 + k) % 7) - 0.3f) * sx.data<float>()[ci * 5 + l + k - 1];
      EXPECT_NEAR(c.data<float>()[o * 5 + l], want, 1e-5) << o << "," << l;
    }
  // The unnamed branch nodes are named after their If.
  runtime::Plan plan(*m.graph(), {}, nhwc_plan_options(true));
  bool named = false;
  for (const auto& st : plan.steps()) named = named || plan.graph().node(st.node).name.rfind("if1/then/", 0) == 0;
  EXPECT_TRUE(named);
}

// A branch may read a value that a later node of the file computes; an operator Sluice lacks
// (Loop) matters only in the branch that is taken; a float16 initializer only cast to float is
// widened in a branch as at the top level.
TEST(IfBranches, LaterValuesUntakenLoopsAndHalfInitializers) {
  for (bool take_loop : {false, true}) {
    OnnxBuilder b;
    b.input("x", {1, 2, 1, 3}).input("flag", {1}, onnx::TensorProto::BOOL);
    auto& n = b.node("If", {"flag"}, {"y"}, "if1");
    onnx::GraphProto* t = branch(n, "then_branch");
    auto* h = t->add_initializer();
    h->set_name("h");
    h->set_data_type(onnx::TensorProto::FLOAT16);
    h->add_int32_data(0x4000);  // 2.0 in half precision
    auto* cast = sub_node(t, "Cast", {"h"}, {"hf"}, "cast");
    OnnxBuilder::attr_int(*cast, "to", onnx::TensorProto::FLOAT);
    sub_node(t, "Mul", {"late", "hf"}, {"ty"}, "mul");
    sub_output(t, "ty");
    onnx::GraphProto* e = branch(n, "else_branch");
    auto* loop = sub_node(e, "Loop", {"", "", "x"}, {"ey"}, "myloop");
    onnx::GraphProto* body = branch(*loop, "body");
    auto add_in = [&](const std::string& name, int elem) {
      auto* vi = body->add_input();
      vi->set_name(name);
      vi->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
      vi->mutable_type()->mutable_tensor_type()->mutable_shape();
    };
    add_in("i", onnx::TensorProto::INT64);
    add_in("cin", onnx::TensorProto::BOOL);
    add_in("carried", onnx::TensorProto::FLOAT);
    sub_node(body, "Identity", {"cin"}, {"cout"}, "cpass");
    sub_node(body, "Identity", {"carried"}, {"next"}, "vpass");
    auto* co = body->add_output();
    co->set_name("cout");
    co->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::BOOL);
    co->mutable_type()->mutable_tensor_type()->mutable_shape();
    sub_output(body, "next");
    sub_output(e, "ey");
    b.node("Neg", {"x"}, {"late"}, "late_node");  // after the If in the file
    b.output("y");
    Model m = b.load();
    Tensor x = random_tensor({1, 2, 1, 3}, 8);
    Tensor flag(DType::Bool, {1});
    flag.data<bool>()[0] = !take_loop;
    if (!take_loop) {
      const Tensor y = Session(m).run({{"x", x}, {"flag", flag}})["y"];
      for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y.data<float>()[i], -2.f * x.data<float>()[i]);
    } else {
      const std::string what = error_of([&] { Session(m).run({{"x", x}, {"flag", flag}}); });
      EXPECT_NE(what.find("node 'myloop' (Loop): unsupported operator 'Loop'"), std::string::npos) << what;
      EXPECT_NE(what.find("If 'if1'"), std::string::npos) << what;
    }
  }
}

TEST(IfBranches, UnreadIfsGoAndInputConditionsAskForTheirValue) {
  // An If that nothing reads is dropped, whatever its condition.
  OnnxBuilder b = data_condition_if("unread");
  b.node("Relu", {"x"}, {"y"});
  b.output("y");
  Tensor x = random_tensor({1, 2, 2, 3});
  const Tensor y = Session(b.load()).run({{"x", x}})["y"];
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y.data<float>()[i], std::max(0.f, x.data<float>()[i]));
  // A bool model input as the condition, planned without its value: the message asks for it.
  OnnxBuilder c;
  c.input("x", {1, 2}).input("flag", {}, onnx::TensorProto::BOOL);
  identity_or_neg_if(c, "flag", "y", "by_flag");
  c.output("y");
  Model model = c.load();
  const std::string what = error_of([&] { runtime::Plan plan(*model.graph(), {}, nhwc_plan_options(true)); });
  EXPECT_NE(what.find("'by_flag' (If): its condition is the model input 'flag'"), std::string::npos) << what;
  EXPECT_NE(what.find("--input flag="), std::string::npos) << what;
  // A float model input as the condition is no bool, given or not (it was asked for when given: a fuzzer).
  OnnxBuilder f;
  f.input("x", {1, 2}).input("flag", {});
  identity_or_neg_if(f, "flag", "y", "by_float");
  f.output("y");
  Model fm = f.load();
  const std::string fwhat = error_of([&] { Session(fm).run({{"x", random_tensor({1, 2})}, {"flag", random_tensor({})}}); });
  EXPECT_NE(fwhat.find("'by_float' (If): its condition, the model input 'flag', must be one bool, got float32"),
            std::string::npos)
      << fwhat;
}

// Opset 18's forms (ReduceMean's axes as an input) inside a branch pass the ONNX 1.12 checker,
// restated there as at the top level.
TEST(IfBranches, NewerOpsetFormsInsideABranch) {
  OnnxBuilder b(18);
  b.input("x", {1, 2, 1, 3}).init_i64("axes", {2}, {2, 3});
  dim2_is_one(b, "x", "cond");
  auto& n = b.node("If", {"cond"}, {"y"}, "if1");
  sub_node(branch(n, "then_branch"), "ReduceMean", {"x", "axes"}, {"mean"}, "mean");
  sub_output(n.mutable_attribute(0)->mutable_g(), "mean");
  sub_node(branch(n, "else_branch"), "Identity", {"x"}, {"same"}, "same");
  sub_output(n.mutable_attribute(1)->mutable_g(), "same");
  b.output("y");
  Tensor x = random_tensor({1, 2, 1, 3}, 2);
  const Tensor y = Session(b.load()).run({{"x", x}})["y"];
  ASSERT_EQ(y.shape(), (Shape{1, 2, 1, 1}));
  for (int64_t c = 0; c < 2; ++c) {
    const float* r = x.data<float>() + c * 3;
    EXPECT_NEAR(y.data<float>()[c], (r[0] + r[1] + r[2]) / 3.f, 1e-6);
  }
}

}  // namespace
}  // namespace sluice::testing
