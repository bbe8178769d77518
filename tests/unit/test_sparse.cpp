// The sparse conv kernel (ops/sparse) against the reference conv: sparsities 0%, 50%, 90%,
// 99% and 100% (an all-zero layer), odd shapes, strides 1 and 2, 1x1 to 5x5, asymmetric pads,
// fused residual sum and ReLU; executed MACs = non-zero weights x output pixels; the
// measured mode picks one of the two kernels and says so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <set>

#include "ops/sparse/sparse.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"

namespace sluice::testing {
namespace {

struct SparseCase {
  int64_t n, c, h, w, m, k, stride, pad;
  double zeros;
  bool residual;
};
// Readable, stable test names (gtest otherwise prints the struct's bytes, padding included).
void PrintTo(const SparseCase& p, std::ostream* os) {
  *os << "n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w << "_m" << p.m << "_k" << p.k << "_s" << p.stride << "_p"
      << p.pad << "_zeros" << p.zeros << (p.residual ? "_residual" : "");
}

// Conv (weights with the given fraction of zeros) [+ Add residual] + Relu.
Model sparse_model(const SparseCase& p, int64_t* nonzero) {
  std::mt19937 rng(static_cast<uint32_t>(p.c * 131 + p.m * 7 + p.k + static_cast<int>(p.zeros * 100)));
  std::normal_distribution<float> nd(0.f, 0.3f);
  std::vector<float> w(static_cast<size_t>(p.m * p.c * p.k * p.k));
  for (auto& v : w) v = nd(rng);
  std::vector<size_t> idx(w.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  const auto nz = static_cast<size_t>(static_cast<double>(w.size()) * (1 - p.zeros) + 0.5);
  for (size_t i = nz; i < idx.size(); ++i) w[idx[i]] = 0.f;
  *nonzero = static_cast<int64_t>(nz);
  OnnxBuilder b;
  b.input("x", {p.n, p.c, p.h, p.w}).init("w", {p.m, p.c, p.k, p.k}, w).init_random("b", {p.m});
  auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
  OnnxBuilder::attr_ints(conv, "strides", {p.stride, p.stride});
  OnnxBuilder::attr_ints(conv, "pads", {p.pad, p.pad + 1, p.pad, p.pad});  // asymmetric
  std::string last = "y";
  if (p.residual) {
    const int64_t oh = (p.h + 2 * p.pad - p.k) / p.stride + 1, ow = (p.w + 2 * p.pad + 1 - p.k) / p.stride + 1;
    b.input("r", {p.n, p.m, oh, ow});
    b.node("Add", {"y", "r"}, {"s"});
    last = "s";
  }
  b.node("Relu", {last}, {"z"});
  b.output("z");
  return b.load();
}

class SparseVsReference : public ::testing::TestWithParam<SparseCase> {};

TEST_P(SparseVsReference, MatchesAndCountsNonZeroMacs) {
  const SparseCase p = GetParam();
  int64_t nonzero = 0;
  Model m = sparse_model(p, &nonzero);
  SessionOptions always;
  always.sparse = SparseMode::Always;
  Session fast(m, always), ref(m, {1, false});
  std::map<std::string, Tensor> in{{"x", random_tensor({p.n, p.c, p.h, p.w}, 11)}};
  for (const auto& v : m.inputs())
    if (v.name == "r") in["r"] = random_tensor(v.shape, 12);
  RunStats st;
  auto a = fast.run(in, &st), b = ref.run(in);
  EXPECT_LT(normalized_error(a.at("z"), b.at("z")), 1e-5);
  const std::string plan = fast.inspect();
  EXPECT_NE(plan.find("sparse:direct"), std::string::npos) << plan;
  const Shape& ys = a.at("z").shape();
  int64_t conv_dense = 0, conv_exec = 0;
  for (const auto& l : st.layers)
    if (l.op == "Conv") conv_dense = l.dense_macs, conv_exec = l.executed_macs;
  EXPECT_EQ(conv_dense, p.n * p.m * p.c * p.k * p.k * ys[2] * ys[3]);
  EXPECT_EQ(conv_exec, p.n * nonzero * ys[2] * ys[3]);
}

INSTANTIATE_TEST_SUITE_P(
    Sparsities, SparseVsReference,
    ::testing::Values(SparseCase{1, 16, 14, 14, 24, 3, 1, 1, 0.0, false},   // 0%: every weight
                      SparseCase{1, 13, 11, 9, 7, 3, 1, 1, 0.5, true},      // odd sizes, residual
                      SparseCase{2, 32, 28, 28, 32, 3, 1, 1, 0.9, false},   // batch 2, several pixel blocks
                      SparseCase{1, 24, 15, 17, 40, 3, 2, 1, 0.9, true},    // stride 2
                      SparseCase{1, 64, 7, 7, 64, 3, 1, 1, 0.99, false},    // late layer, 99%
                      SparseCase{1, 8, 9, 9, 5, 3, 1, 1, 1.0, false},       // all-zero layer: bias only
                      SparseCase{1, 40, 12, 12, 48, 1, 1, 0, 0.8, true},    // 1x1
                      SparseCase{2, 24, 14, 13, 20, 1, 2, 0, 0.8, true},    // 1x1 stride 2: one phase read
                      SparseCase{1, 6, 13, 13, 9, 5, 2, 2, 0.7, false},     // 5x5 stride 2
                      SparseCase{1, 48, 60, 60, 16, 3, 1, 1, 0.95, false},  // wide rows: aligned variant
                      SparseCase{1, 3, 38, 38, 20, 7, 2, 3, 0.9, true}));     // 7x7 stem, several tasks

// `size` weights N(0, 0.3), each zero with probability `zeros`; *nonzero: how many are not.
std::vector<float> sparse_matrix(int64_t size, double zeros, uint32_t seed, int64_t* nonzero) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.3f);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<float> w(static_cast<size_t>(size));
  *nonzero = 0;
  for (auto& v : w) {
    v = u(rng) < zeros ? 0.f : nd(rng);
    *nonzero += v != 0.f;
  }
  return w;
}

// Model m (input "x", output "z") with the sparse kernels forced, against the reference kernels,
// on x: the normalised error of z; *st: the forced run's stats, *plan: its inspect().
double forced_sparse_vs_reference(const Model& m, const Tensor& x, RunStats* st, std::string* plan) {
  SessionOptions always;
  always.sparse = SparseMode::Always;
  Session fast(m, always), ref(m, {1, false});
  auto a = fast.run({{"x", x}}, st);
  *plan = fast.inspect();
  return normalized_error(a.at("z"), ref.run({{"x", x}}).at("z"));
}

struct GemmCase {
  int64_t rows, k, n;
  bool trans_b;
  double zeros;
};
void PrintTo(const GemmCase& p, std::ostream* os) {
  *os << "rows" << p.rows << "_k" << p.k << "_n" << p.n << (p.trans_b ? "_transB" : "") << "_zeros" << p.zeros;
}

class SparseGemmVsReference : public ::testing::TestWithParam<GemmCase> {};

TEST_P(SparseGemmVsReference, MatchesAndCountsNonZeroMacs) {
  const GemmCase p = GetParam();
  int64_t nonzero = 0;
  const std::vector<float> w = sparse_matrix(p.k * p.n, p.zeros, static_cast<uint32_t>(p.k + p.n), &nonzero);
  OnnxBuilder b;
  b.input("x", {p.rows, p.k}).init("w", p.trans_b ? Shape{p.n, p.k} : Shape{p.k, p.n}, w).init_random("c", {p.n});
  auto& gemm = b.node("Gemm", {"x", "w", "c"}, {"y"});
  OnnxBuilder::attr_int(gemm, "transB", p.trans_b ? 1 : 0);
  b.node("Relu", {"y"}, {"z"});
  b.output("z");
  Model m = b.load();
  RunStats st;
  std::string plan;
  EXPECT_LT(forced_sparse_vs_reference(m, random_tensor({p.rows, p.k}, 5), &st, &plan), 1e-5);
  EXPECT_NE(plan.find("sparse:csr"), std::string::npos);
  EXPECT_EQ(st.dense_macs, p.rows * p.k * p.n);
  EXPECT_EQ(st.executed_macs, p.rows * nonzero);
}

INSTANTIATE_TEST_SUITE_P(Sparsities, SparseGemmVsReference,
                         ::testing::Values(GemmCase{1, 512, 1000, true, 0.9},   // ResNet-18's FC at 90%
                                           GemmCase{3, 67, 29, true, 0.5},      // batch 3, odd sizes
                                           GemmCase{2, 301, 19, true, 0.4},     // ~180 non-zeros a row: gathered 32 at a time
                                           GemmCase{2, 40, 33, false, 0.95},    // B not transposed
                                           GemmCase{1, 16, 8, true, 1.0},       // all zero: bias only
                                           GemmCase{1, 5, 7, true, 0.0}));      // no zeros

// A Linear layer exported as MatMul (A [..., K] x constant B [K, N], + Add bias): the same CSR
// kernel, A's leading dims as its rows; the non-zero MACs counted.
TEST(SparseMatMul, MatchesReferenceAndCountsNonZeroMacs) {
  for (const Shape& as : {Shape{2, 3, 40}, Shape{1, 512}, Shape{5, 7}, Shape{16, 64}}) {
    const int64_t k = as.back(), n = k == 512 ? 100 : 24;
    int64_t nonzero = 0;
    const std::vector<float> w = sparse_matrix(k * n, 0.85, static_cast<uint32_t>(k), &nonzero);
    OnnxBuilder b;
    b.input("x", as).init("w", {k, n}, w).init_random("c", {n});
    b.node("MatMul", {"x", "w"}, {"y"});
    b.node("Add", {"y", "c"}, {"t"});
    b.node("Relu", {"t"}, {"z"});
    b.output("z");
    Model m = b.load();
    const Tensor x = random_tensor(as, 6);
    RunStats st;
    std::string plan;
    EXPECT_LT(forced_sparse_vs_reference(m, x, &st, &plan), 1e-5) << shape_str(as);
    EXPECT_NE(plan.find("sparse:csr"), std::string::npos) << plan;
    int64_t rows = 1;
    for (size_t d = 0; d + 1 < as.size(); ++d) rows *= as[d];
    int64_t mm_exec = -1;
    for (const auto& l : st.layers)  // a 2-D MatMul + Add runs as a Gemm (passes::linear_as_gemm)
      if (l.op == (as.size() == 2 ? "Gemm" : "MatMul")) mm_exec = l.executed_macs;
    EXPECT_EQ(mm_exec, rows * nonzero) << shape_str(as);
    // The measured choice (oneDNN's MatMul itself times two forms from 8 rows on): either
    // kernel, the same answer, and both times shown.
    Session measured(m, {1, true}), ref(m, {1, false});
    EXPECT_LT(normalized_error(measured.run({{"x", x}}).at("z"), ref.run({{"x", x}}).at("z")), 1e-5) << shape_str(as);
    EXPECT_NE(measured.inspect().find("[measured: sparse"), std::string::npos) << measured.inspect();
  }
}

TEST(SparseMeasured, ChoosesOneKernelAndShowsBothTimes) {
  int64_t nonzero = 0;
  Model m = sparse_model({1, 64, 14, 14, 64, 3, 1, 1, 0.95, false}, &nonzero);
  Session s(m);  // SparseMode::Measured
  const std::string plan = s.inspect();
  EXPECT_NE(plan.find("[measured: sparse "), std::string::npos) << plan;
  Session off(m, [] { SessionOptions o; o.sparse = SparseMode::Off; return o; }());
  EXPECT_EQ(off.inspect().find("sparse"), std::string::npos);
  Tensor x = random_tensor({1, 64, 14, 14}, 3);
  EXPECT_LT(normalized_error(s.run({{"x", x}}).at("z"), off.run({{"x", x}}).at("z")), 1e-5);
}

TEST(SparseMeasured, DenseWeightsAreNotTimed) {
  int64_t nonzero = 0;
  Model m = sparse_model({1, 16, 10, 10, 16, 3, 1, 1, 0.3, false}, &nonzero);
  Session s(m);
  EXPECT_EQ(s.inspect().find("[measured"), std::string::npos);
}

// The measured choice's margin, on given times: by default the sparse kernel must win by 10%;
// with a margin over 1 (a batch-1 Gemm streaming mostly-zero weights) it wins a tie.
TEST(SparseMeasured, MarginDecidesTies) {
  int64_t nonzero = 0;
  Model m = sparse_model({1, 16, 10, 10, 16, 3, 1, 1, 0.9, false}, &nonzero);
  runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
  const graph::Graph& g = plan.graph();
  const graph::Node* conv = last_node(g, graph::OpType::Conv);
  ASSERT_NE(conv, nullptr);
  auto choose = [&](double t_sparse, double t_dense, double margin) {
    return ops::choose_measured(ops::make_onednn_conv(g, *conv), ops::make_sparse_conv(g, *conv), SparseMode::Measured,
                                0.9, g, *conv, t_sparse, t_dense, margin)
        ->name();
  };
  EXPECT_EQ(choose(0.010, 0.010, 0.9).rfind("onednn", 0), 0u);
  EXPECT_EQ(choose(0.008, 0.010, 0.9).rfind("sparse", 0), 0u);
  EXPECT_EQ(choose(0.010, 0.010, 1.1).rfind("sparse", 0), 0u);
  EXPECT_EQ(choose(0.012, 0.010, 1.1).rfind("onednn", 0), 0u);
}

// The two sparse conv variants (aligned reads over shifted copies, and plain unaligned reads)
// on the same node and data, on a shape where both apply, at 70% and 95% zeros.
// The last Conv of case c's model, planned as a session plans it (NHWC, the residual fused),
// handed to check(graph, conv).
template <typename Check>
void on_planned_conv(const SparseCase& c, Check&& check) {
  int64_t nonzero = 0;
  Model m = sparse_model(c, &nonzero);
  runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());  // (its conv reads NHWC, as the kernels the tests make)
  const graph::Node* conv = last_node(plan.graph(), graph::OpType::Conv);
  ASSERT_NE(conv, nullptr);
  check(plan.graph(), *conv);
}

// The sparse kernel against oneDNN's dense conv on the same node and data, the fused residual
// also laid over the output (as plans do; max_kernel_diff runs both): output groups not a
// multiple of 16, batch 2, stride 2, several input-channel blocks, a 7x7 map (prefetch).
TEST(SparseConvVariants, InPlaceResidualMatchesOneDnn) {
  for (const SparseCase& c : {SparseCase{2, 40, 20, 20, 21, 3, 1, 1, 0.8, true},
                              SparseCase{1, 96, 15, 15, 19, 3, 2, 1, 0.6, true},
                              SparseCase{2, 160, 7, 7, 37, 3, 1, 1, 0.9, true}})
    on_planned_conv(c, [&](const graph::Graph& g, const graph::Node& conv) {
      ASSERT_TRUE(conv.p<graph::ConvParams>().fused_sum) << "the residual Add should fuse into the conv";
      auto sparse = ops::make_sparse_conv(g, conv, ops::SparseVariant::Plain), dense = ops::make_onednn_conv(g, conv);
      ASSERT_NE(sparse, nullptr);
      ASSERT_NE(dense, nullptr);
      EXPECT_LT(max_kernel_diff(*sparse, *dense, g, conv, 5), 1e-3) << c.c << "->" << c.m << " h" << c.h;
    });
}

// Strides the sparse kernels do not take are named as they are: (1, 2) differ (a Conv1d of
// stride 2 runs as a 2-D conv of strides (1, 2)); it once read "stride other than 1 or 2".
TEST(SparseConvVariants, SaysWhichStridesItDoesNotTake) {
  on_planned_conv({1, 20, 14, 14, 20, 3, 1, 1, 0.9, false}, [&](const graph::Graph& g, const graph::Node& conv) {
    const auto id = static_cast<graph::NodeId>(&conv - g.nodes.data());
    for (const auto& [strides, want] : {std::pair{std::vector<int64_t>{1, 2}, "strides differ between height and width"},
                                        std::pair{std::vector<int64_t>{3, 3}, "stride other than 1 or 2"}}) {
      graph::Graph gg = g;
      gg.node(id).p<graph::ConvParams>().strides = strides;
      std::string why;
      EXPECT_EQ(ops::make_sparse_conv(gg, gg.node(id), ops::SparseVariant::Plain, &why), nullptr);
      EXPECT_EQ(why, want);
    }
  });
}

// A weight of inf or NaN: the kernels that pad a copy of the input with zeros (every sparse
// variant, the direct planar conv) do not take the conv, and say why; finite: they do.
TEST(SparseConvVariants, NonFiniteWeightsAreNotTaken) {
  on_planned_conv({1, 20, 14, 14, 20, 3, 1, 1, 0.9, false}, [&](const graph::Graph& g, const graph::Node& conv) {
    ASSERT_NE(ops::make_sparse_conv(g, conv, ops::SparseVariant::Plain), nullptr);
    ASSERT_NE(ops::make_direct_conv(g, conv), nullptr);
    for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
      const graph::Graph gg = with_constant_element(g, conv, 1, 0, bad);
      const graph::Node& nn = gg.node(static_cast<graph::NodeId>(&conv - g.nodes.data()));
      for (ops::SparseVariant v : {ops::SparseVariant::Plain, ops::SparseVariant::Copies, ops::SparseVariant::Split,
                                   ops::SparseVariant::Gather}) {
        std::string why;
        EXPECT_EQ(ops::make_sparse_conv(gg, nn, v, &why), nullptr) << bad;
        EXPECT_EQ(why, "inf or NaN weights") << bad;
      }
      EXPECT_EQ(ops::make_direct_conv(gg, nn), nullptr) << bad;
      EXPECT_FALSE(ops::all_finite(gg.value(nn.inputs[1]).constant));
    }
    EXPECT_NE(ops::make_direct_conv(g, conv), nullptr) << "the plan's own weights stay finite";
  });
}

// An inf or NaN that arises inside the network from finite inputs: a NaN weight in a dense
// conv, or weights that overflow to inf, read by a 90%-zero conv on the sparse kernel (which
// skips 0 x NaN) or by a shift fused into a 1x1 conv (which skips its zero border). The run
// is repeated on the reference kernels (RunStats::nonfinite_outputs), so NaN and inf fall
// where the reference kernels (ONNX Runtime's products) put them; a finite run is not repeated.
TEST(NonFiniteInside, RunsAgainOnTheReferenceKernels) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  auto sparse_w = [&](Shape s) {
    std::vector<float> w(static_cast<size_t>(s[0] * s[1] * s[2] * s[3]));
    for (size_t i = 0; i < w.size(); ++i) w[i] = i % 10 == 3 ? nd(rng) : 0.f;
    return w;
  };
  auto model = [&](int which) {
    OnnxBuilder b;
    b.input("x", {2, 16, 10, 10});
    std::vector<float> w1(16 * 16 * 9);
    for (float& v : w1) v = nd(rng) * (which == 1 || which == 3 ? 1e20f : 0.3f);
    if (which == 0) w1[5] = std::numeric_limits<float>::quiet_NaN();
    b.init("w1", {16, 16, 3, 3}, w1);
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w1"}, {"c1"}), "pads", {1, 1, 1, 1});
    if (which < 3) {  // a 90%-zero 3x3 conv
      b.init("w2", {16, 16, 3, 3}, sparse_w({16, 16, 3, 3})).init_random("b2", {16});
      OnnxBuilder::attr_ints(b.node("Conv", {"c1", "w2", "b2"}, {"y"}), "pads", {1, 1, 1, 1});
    } else {  // a one-hot depthwise conv (a shift), then a 1x1 conv
      std::vector<float> oh(16 * 9, 0.f);
      for (int c = 0; c < 16; ++c) oh[static_cast<size_t>(c * 9 + c % 9)] = 1.f;
      b.init("ws", {16, 1, 3, 3}, oh).init_random("w3", {8, 16, 1, 1});
      auto& sh = b.node("Conv", {"c1", "ws"}, {"s"});
      OnnxBuilder::attr_ints(sh, "pads", {1, 1, 1, 1});
      OnnxBuilder::attr_int(sh, "group", 16);
      b.node("Conv", {"s", "w3"}, {"y"});
    }
    b.output("y");
    return b.load();
  };
  for (int which : {0, 1, 2, 3}) {  // NaN weight, overflow, finite (sparse); overflow (shift)
    const bool finite = which == 2;
    Tensor x = random_tensor({2, 16, 10, 10}, 4);
    if (which == 1 || which == 3)  // inputs of 1e19 and weights of 1e20: sums past FLT_MAX, inf of either sign
      for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] *= 1e19f;
    const Model m = model(which);
    const Tensor ref = Session(m, {1, false}).run({{"x", x}}).at("y");
    for (int threads : {1, 2}) {
      SessionOptions o{threads, true};
      o.sparse = SparseMode::Always;
      Session sess(m, o);
      const std::string plan = sess.inspect(false);
      EXPECT_NE(plan.find(which == 3 ? "shift+conv1x1" : "sparse:"), std::string::npos) << plan;
      RunStats stats;
      const Tensor got = sess.run({{"x", x}}, &stats).at("y");
      // A NaN weight: every run takes the reference kernels (RunStats::nonfinite_weights), no
      // second run; an overflow inside: the fast run's non-finite outputs make the second.
      EXPECT_EQ(stats.nonfinite_outputs, which == 1 || which == 3) << which;
      EXPECT_EQ(stats.nonfinite_weights.empty(), which != 0) << which;
      EXPECT_FALSE(stats.nonfinite_inputs);
      ASSERT_EQ(got.numel(), ref.numel());
      int64_t nan = 0, inf = 0, differ = 0;
      for (int64_t i = 0; i < ref.numel(); ++i) {
        const float a = got.data<float>()[i], r = ref.data<float>()[i];
        nan += std::isnan(r), inf += std::isinf(r);
        if (std::isnan(a) != std::isnan(r) || std::isinf(a) != std::isinf(r) ||
            (std::isfinite(r) && std::abs(a - r) > 1e-3f * (1.f + std::abs(r))))
          ++differ;
      }
      EXPECT_EQ(differ, 0) << "case " << which << ", " << threads << " threads";
      EXPECT_EQ(nan + inf > 0, !finite) << "case " << which << ": the reference output itself";
    }
  }
}

// A model whose outputs are -inf by design (a Log of a Relu output: log 0) on dense kernels
// that skip nothing: no second run on the reference kernels (once every run paid for it, ~110x
// slower), and the reference kernels' -inf where they put them. The same model with a 90%-zero
// conv on the sparse kernel (which skips products) is run again.
TEST(NonFiniteInside, PlansThatSkipNothingAreNotRunAgain) {
  for (bool sparse : {false, true}) {
    OnnxBuilder b;
    b.input("x", {1, 16, 8, 8});
    std::vector<float> w(16 * 16 * 9);
    std::mt19937 rng(9);
    std::normal_distribution<float> nd;
    for (size_t i = 0; i < w.size(); ++i) w[i] = sparse && i % 10 != 3 ? 0.f : nd(rng);
    b.init("w", {16, 16, 3, 3}, w);
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}), "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"});
    b.node("Log", {"r"}, {"y"});
    b.output("y");
    const Model m = b.load();
    SessionOptions o{1, true};
    o.sparse = sparse ? SparseMode::Always : SparseMode::Off;
    Session sess(m, o);
    const Tensor x = random_tensor({1, 16, 8, 8}, 10);
    RunStats stats;
    const Tensor got = sess.run({{"x", x}}, &stats).at("y");
    const Tensor want = Session(m, {1, false}).run({{"x", x}}).at("y");
    int64_t minus_inf = 0, differ = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      const float a = got.data<float>()[i], r = want.data<float>()[i];
      minus_inf += std::isinf(r) && r < 0;
      differ += std::isinf(r) ? a != r : !(std::abs(a - r) <= 1e-4f * (1.f + std::abs(r)));
    }
    EXPECT_GT(minus_inf, 0) << "a Relu output of 0 somewhere";
    EXPECT_EQ(differ, 0);
    EXPECT_EQ(stats.nonfinite_outputs, sparse) << (sparse ? "the sparse plan skips products" : "the dense plan skips none");
  }
}

TEST(SparseConvVariants, AlignedEqualsPlain) {
  for (double zeros : {0.7, 0.95})
    on_planned_conv({1, 32, 28, 28, 40, 3, 1, 1, zeros, true}, [&](const graph::Graph& g, const graph::Node& conv) {
      auto aligned = ops::make_sparse_conv(g, conv, ops::SparseVariant::Copies);
      auto plain = ops::make_sparse_conv(g, conv, ops::SparseVariant::Plain);
      ASSERT_NE(aligned, nullptr) << "28x28 rows pad to 32 floats: the aligned variant should apply";
      ASSERT_NE(plain, nullptr);
      EXPECT_NE(aligned->name(), plain->name());
      EXPECT_LT(max_kernel_diff(*aligned, *plain, g, conv, 4), 1e-4) << zeros;
    });
}

// The split variant (taps summed apart by horizontal shift, at aligned reads) against the plain
// one on the same node and data: stride 1 (three shifts), stride 2 with batch 2 and the fused
// residual (two shifts), at 70% and 95% zeros; a 5x5 kernel (five shifts) does not take it.
TEST(SparseConvVariants, SplitEqualsPlain) {
  for (const SparseCase& c : {SparseCase{1, 32, 28, 28, 40, 3, 1, 1, 0.7, true},
                              SparseCase{1, 40, 28, 28, 19, 3, 1, 1, 0.95, false},
                              SparseCase{2, 24, 60, 60, 21, 3, 2, 1, 0.8, true},
                              SparseCase{1, 16, 28, 28, 16, 5, 1, 2, 0.7, false}})
    on_planned_conv(c, [&](const graph::Graph& g, const graph::Node& conv) {
      auto split = ops::make_sparse_conv(g, conv, ops::SparseVariant::Split);
      auto plain = ops::make_sparse_conv(g, conv, ops::SparseVariant::Plain);
      ASSERT_NE(plain, nullptr);
      if (c.k == 5) {
        EXPECT_EQ(split, nullptr) << "five horizontal shifts: more sums than registers";
        return;
      }
      if (!ops::sparse_split_available()) {
        EXPECT_EQ(split, nullptr) << "the split variant is AVX-512 only";
        return;
      }
      ASSERT_NE(split, nullptr) << "rows pad to 32 floats: the split variant should apply";
      EXPECT_NE(split->name().find("split"), std::string::npos) << split->name();
      EXPECT_LT(max_kernel_diff(*split, *plain, g, conv, 4), 1e-4) << c.c << "->" << c.m << " s" << c.stride;
    });
}

// The gathered variant (each tap's input pixels gathered into aligned rows; maps of at most 64
// output pixels) against oneDNN's dense conv on the same node and data, the fused residual also
// laid over the output: 7x8 maps (3x3, 5x5 and 1x1 kernels; the pads are asymmetric), stride 2 onto 7x8, exactly 64
// pixels (8x8), a 3x5 map (one vector per row on AVX-512), batch 2, several input-channel
// blocks, 0%, 70%, 99% and 100% zeros; a 9x9 map (81 pixels) does not take it.
TEST(SparseConvVariants, GatherMatchesOneDnn) {
  int checked = 0;
  for (const SparseCase& c : {SparseCase{1, 40, 7, 7, 37, 3, 1, 1, 0.7, true},
                              SparseCase{2, 300, 7, 7, 21, 3, 1, 1, 0.99, true},
                              SparseCase{1, 24, 7, 7, 19, 5, 1, 2, 0.0, false},
                              SparseCase{1, 64, 7, 7, 40, 1, 1, 0, 0.7, true},
                              SparseCase{2, 48, 14, 14, 33, 3, 2, 1, 0.8, true},
                              SparseCase{1, 32, 8, 7, 17, 3, 1, 1, 0.7, false},
                              SparseCase{1, 70, 3, 4, 16, 3, 1, 1, 1.0, true},
                              SparseCase{1, 16, 9, 8, 16, 3, 1, 1, 0.7, false}})
    on_planned_conv(c, [&](const graph::Graph& g, const graph::Node& conv) {
      auto gather = ops::make_sparse_conv(g, conv, ops::SparseVariant::Gather);
      const Shape& ys = g.value(conv.outputs[0]).shape;
      if (ys[2] * ys[3] > 64) {
        EXPECT_EQ(gather, nullptr) << ys[2] << "x" << ys[3] << ": more output pixels than a gathered row holds";
        return;
      }
      ASSERT_NE(gather, nullptr) << ys[2] << "x" << ys[3];
      EXPECT_NE(gather->name().find("gather"), std::string::npos) << gather->name();
      auto dense = ops::make_onednn_conv(g, conv);
      ASSERT_NE(dense, nullptr);
      EXPECT_LT(max_kernel_diff(*gather, *dense, g, conv, 6), 1e-3) << c.c << "->" << c.m << " h" << c.h << " k" << c.k;
      ++checked;
    });
  EXPECT_EQ(checked, 7);
}

// A sparse conv with a 1x1 conv beside it on the same input (a ResNet block's first conv and
// its downsample): x -> A (k x k, stride s, pads p, Relu) -> A2 (3x3, + B's output, Relu) -> z,
// and x -> B (1x1, stride s[, Relu]) as A2's residual. Weights 80% (A, A2) and `zeros_b` zero.
struct BlockCase {
  int64_t n, c, h, m, k, s, p;
  double zeros_b;
  bool b_relu;
};
Model block_model(const BlockCase& t) {
  std::mt19937 rng(static_cast<uint32_t>(t.c * 17 + t.m + t.k));
  std::normal_distribution<float> nd(0.f, 0.3f);
  auto weights = [&](int64_t count, double zeros) {
    std::vector<float> w(static_cast<size_t>(count));
    for (auto& v : w) v = std::uniform_real_distribution<double>(0, 1)(rng) < zeros ? 0.f : nd(rng);
    return w;
  };
  const int64_t o = (t.h + 2 * t.p - t.k) / t.s + 1;
  OnnxBuilder b;
  b.input("x", {t.n, t.c, t.h, t.h});
  b.init("wa", {t.m, t.c, t.k, t.k}, weights(t.m * t.c * t.k * t.k, 0.8)).init_random("ba", {t.m});
  b.init("wa2", {t.m, t.m, 3, 3}, weights(t.m * t.m * 9, 0.8)).init_random("ba2", {t.m});
  b.init("wb", {t.m, t.c, 1, 1}, weights(t.m * t.c, t.zeros_b)).init_random("bb", {t.m});
  auto& a = b.node("Conv", {"x", "wa", "ba"}, {"a"});
  OnnxBuilder::attr_ints(a, "strides", {t.s, t.s});
  OnnxBuilder::attr_ints(a, "pads", {t.p, t.p, t.p, t.p});
  b.node("Relu", {"a"}, {"ra"});
  OnnxBuilder::attr_ints(b.node("Conv", {"ra", "wa2", "ba2"}, {"a2"}), "pads", {1, 1, 1, 1});
  auto& sc = b.node("Conv", {"x", "wb", "bb"}, {"sc"});
  OnnxBuilder::attr_ints(sc, "strides", {t.s, t.s});
  std::string shortcut = "sc";
  if (t.b_relu) b.node("Relu", {"sc"}, {"rsc"}), shortcut = "rsc";
  b.node("Add", {"a2", shortcut}, {"sum"});
  b.node("Relu", {"sum"}, {"z"});
  b.output("z");
  EXPECT_EQ(o, (t.h - 1) / t.s + 1) << "the shortcut's map must be the conv's";
  return b.load();
}

// With --sparse always the first conv does the 1x1's work (fuse_shortcuts): the same answer as
// the reference kernels on 1 and 2 threads, the 1x1's step says so, and the stats count each
// layer's own non-zero MACs. Stride 2 (3x3: the split or shifted-copies variant; onto a 7x7
// map: the gathered one), a 7x7 stride-2 pad-3 conv (the shortcut's tap has a horizontal
// shift), stride 1, batch 2, a Relu on the shortcut, output channels off 16.
TEST(ShortcutFusion, SparseConvDoesTheDownsampleWork) {
  const BlockCase cases[] = {{1, 16, 28, 24, 3, 2, 1, 0.9, false}, {2, 32, 14, 40, 3, 2, 1, 0.8, true},
                             {1, 3, 32, 20, 7, 2, 3, 0.7, false},  {1, 8, 16, 16, 3, 1, 1, 0.9, true}};
  for (const BlockCase& t : cases) {
    Model m = block_model(t);
    const Tensor x = random_tensor({t.n, t.c, t.h, t.h}, 3);
    auto ref = Session(m, {1, false}).run({{"x", x}});
    for (int threads : {1, 2}) {
      SessionOptions o{threads, true};
      o.sparse = SparseMode::Always;
      Session sess(m, o);
      RunStats st;
      auto got = sess.run({{"x", x}}, &st);
      EXPECT_LT(normalized_error(got.at("z"), ref.at("z")), 1e-5) << "c" << t.c << " k" << t.k << " s" << t.s;
      const std::string plan = sess.inspect(false);
      EXPECT_NE(plan.find("with the 1x1 '"), std::string::npos) << plan;
      EXPECT_NE(plan.find("(its non-zero weights there)"), std::string::npos) << plan;
      runtime::Plan p(*m.graph(), {}, o);
      int fused = -1;
      for (const auto& [name, count] : p.pass_log())
        if (name == "fuse_shortcuts") fused = count;
      EXPECT_EQ(fused, 1);
      // Each layer's executed MACs: its own non-zero weights times its output pixels.
      for (const runtime::Step& s : p.steps()) {
        const graph::Node& n = p.graph().node(s.node);
        if (n.op != graph::OpType::Conv) continue;
        const Tensor& w = p.graph().value(n.inputs[1]).constant;
        const int64_t nz = w.numel() - static_cast<int64_t>(std::llround(ops::zero_fraction(w) * static_cast<double>(w.numel())));
        const Shape& ys = p.graph().value(n.outputs[0]).shape;
        EXPECT_EQ(s.executed_macs, t.n * nz * ys[2] * ys[3]) << n.name << ": " << s.kernel->name();
      }
    }
  }
}

// count weights, 8 of every 10 zero, the rest normal (sd 0.3) from rng.
std::vector<float> eight_in_ten_zero(int64_t count, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 0.3f);
  std::vector<float> w(static_cast<size_t>(count));
  for (size_t i = 0; i < w.size(); ++i) w[i] = i % 10 < 8 ? 0.f : nd(rng);
  return w;
}

// Two sparse convs on the input of one 1x1 (a probe's case): the 1x1 runs inside the first
// alone (it was fused into both, its output written twice), and the answer is the reference's.
TEST(ShortcutFusion, OneShortcutGoesIntoOneConv) {
  std::mt19937 rng(21);
  auto weights = [&](int64_t count) { return eight_in_ten_zero(count, rng); };
  OnnxBuilder b;
  b.input("x", {1, 16, 14, 14});
  for (const char* n : {"a1", "a2"}) {
    b.init(std::string(n) + "_w", {24, 16, 3, 3}, weights(24 * 16 * 9)).init_random(std::string(n) + "_b", {24});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", std::string(n) + "_w", std::string(n) + "_b"}, {n}), "pads", {1, 1, 1, 1});
    b.output(n);
  }
  b.init("sc_w", {24, 16, 1, 1}, weights(24 * 16)).init_random("sc_b", {24});
  b.node("Conv", {"x", "sc_w", "sc_b"}, {"sc"});
  b.output("sc");
  Model m = b.load();
  SessionOptions o{1, true};
  o.sparse = SparseMode::Always;
  runtime::Plan plan(*m.graph(), {}, o);
  int with = 0, into = 0;
  for (const runtime::Step& st : plan.steps()) {
    with += st.kernel->name().find("with the 1x1") != std::string::npos;
    into += st.kernel->name().find("fused into") != std::string::npos;
  }
  EXPECT_EQ(with, 1);
  EXPECT_EQ(into, 1);
  const Tensor x = random_tensor({1, 16, 14, 14}, 4);
  auto got = Session(m, o).run({{"x", x}}), want = Session(m, {1, false}).run({{"x", x}});
  for (const char* n : {"a1", "a2", "sc"}) EXPECT_LT(normalized_error(got.at(n), want.at(n)), 1e-5) << n;
}

// The shortcut's output in planes while the conv's own input and output stay NHWC (a review's
// case: the conv's output a graph output, the shortcut's read by a sparse conv): the conv is
// made again for that layout (it was not, and wrote NHWC where planes were read: error 1.19).
TEST(ShortcutFusion, ShortcutOutputInPlanesAlone) {
  std::mt19937 rng(23);
  auto weights = [&](int64_t count) { return eight_in_ten_zero(count, rng); };
  OnnxBuilder b;
  b.input("x", {1, 16, 28, 28});
  b.init("a_w", {24, 16, 3, 3}, weights(24 * 16 * 9)).init_random("a_b", {24});
  auto& a = b.node("Conv", {"x", "a_w", "a_b"}, {"a"});
  OnnxBuilder::attr_ints(a, "strides", {2, 2});
  OnnxBuilder::attr_ints(a, "pads", {1, 1, 1, 1});
  b.output("a");
  b.init("sc_w", {24, 16, 1, 1}, weights(24 * 16)).init_random("sc_b", {24});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "sc_w", "sc_b"}, {"sc"}), "strides", {2, 2});
  b.init("c_w", {24, 24, 3, 3}, weights(24 * 24 * 9)).init_random("c_b", {24});
  OnnxBuilder::attr_ints(b.node("Conv", {"sc", "c_w", "c_b"}, {"z"}), "pads", {1, 1, 1, 1});
  b.output("z");
  Model m = b.load();
  const Tensor x = random_tensor({1, 16, 28, 28}, 5);
  auto want = Session(m, {1, false}).run({{"x", x}});
  for (int threads : {1, 2}) {
    SessionOptions o{threads, true};
    o.sparse = SparseMode::Always;
    Session sess(m, o);
    const std::string plan = sess.inspect(false);
    EXPECT_NE(plan.find("fused (its output in resident planes"), std::string::npos) << plan;
    auto got = sess.run({{"x", x}});
    for (const char* n : {"a", "z"}) EXPECT_LT(normalized_error(got.at(n), want.at(n)), 1e-5) << n << ", " << threads;
  }
}

// Which 1x1 convs qualify: the same input, stride and map, no padding, no residual of its own
// (fusable_shortcut). The fused kernel of each variant that applies against the two convs on
// the direct kernel, both outputs, with Relu on the first.
TEST(ShortcutFusion, OnlyAOneByOneOnTheSameInputAndMapQualifies) {
  std::set<ops::SparseVariant> tried;
  for (const BlockCase& t : {BlockCase{2, 16, 28, 24, 3, 2, 1, 0.9, true}, BlockCase{1, 24, 14, 40, 3, 2, 1, 0.8, false},
                             BlockCase{1, 16, 20, 20, 3, 1, 1, 0.7, false}}) {
    Model m = block_model(t);
    runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
    const graph::Graph& g = plan.graph();
    const graph::Node *a = nullptr, *b = nullptr, *a2 = nullptr;
    for (const graph::Node& n : g.nodes)
      if (!n.dead && n.op == graph::OpType::Conv && g.value(n.inputs[1]).shape[2] == 1) b = &n;
    ASSERT_NE(b, nullptr);
    for (const graph::Node& n : g.nodes)
      if (!n.dead && n.op == graph::OpType::Conv && &n != b) (n.inputs[0] == b->inputs[0] ? a : a2) = &n;
    ASSERT_NE(a, nullptr);
    ASSERT_NE(a2, nullptr);
    EXPECT_TRUE(ops::fusable_shortcut(g, *a, *b));
    EXPECT_FALSE(ops::fusable_shortcut(g, *b, *b));
    EXPECT_FALSE(ops::fusable_shortcut(g, *a2, *b)) << "another input";
    EXPECT_FALSE(ops::fusable_shortcut(g, *a, *a2)) << "a 3x3 on another input";
    const auto id = static_cast<graph::NodeId>(b - g.nodes.data());
    auto altered = [&](auto&& change) {
      graph::Graph gg = g;
      change(gg.node(id).template p<graph::ConvParams>());
      return ops::fusable_shortcut(gg, gg.node(static_cast<graph::NodeId>(a - g.nodes.data())), gg.node(id));
    };
    EXPECT_FALSE(altered([](graph::ConvParams& q) { q.pads = {0, 1, 0, 0}; })) << "padded";
    EXPECT_FALSE(altered([](graph::ConvParams& q) { q.strides = {3, 3}; })) << "another stride";
    EXPECT_FALSE(altered([](graph::ConvParams& q) { q.fused_sum = true; })) << "a residual of its own";
    EXPECT_TRUE(altered([](graph::ConvParams&) {}));

    // Both outputs against the direct kernel's, per variant.
    auto da = ops::make_direct_conv(g, *a), db = ops::make_direct_conv(g, *b);
    ASSERT_NE(da, nullptr);
    ASSERT_NE(db, nullptr);
    const Shape &xs = g.value(a->inputs[0]).shape, &ya = g.value(a->outputs[0]).shape, &yb = g.value(b->outputs[0]).shape;
    const Tensor x = random_tensor({xs[0], xs[2], xs[3], xs[1]}, 9);  // NHWC
    auto run = [&](const ops::Kernel& k, const graph::Node& n, std::vector<std::vector<float>>& outs) {
      std::vector<ops::TensorView> in(n.inputs.size());
      in[0] = {DType::Float32, xs, const_cast<float*>(x.data<float>())};
      std::vector<ops::TensorView> out;
      for (auto& o : outs) out.push_back({DType::Float32, o.size() == static_cast<size_t>(ya[0] * ya[1] * ya[2] * ya[3]) ? ya : yb, o.data()});
      std::vector<std::byte> scratch(k.scratch_bytes() + 64);
      k.run({in, out, reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64)});
    };
    const size_t na = static_cast<size_t>(ya[0] * ya[1] * ya[2] * ya[3]), nb = static_cast<size_t>(yb[0] * yb[1] * yb[2] * yb[3]);
    std::vector<std::vector<float>> want_a{std::vector<float>(na)}, want_b{std::vector<float>(nb)};
    run(*da, *a, want_a);
    run(*db, *b, want_b);
    int variants = 0;
    for (ops::SparseVariant v :
         {ops::SparseVariant::Plain, ops::SparseVariant::Copies, ops::SparseVariant::Split, ops::SparseVariant::Gather}) {
      auto k = ops::make_sparse_conv_with_shortcut(g, *a, *b, v);
      if (!k) continue;
      ++variants;
      tried.insert(v);
      std::vector<std::vector<float>> got{std::vector<float>(na, NAN), std::vector<float>(nb, NAN)};
      run(*k, *a, got);
      double worst_a = 0, worst_b = 0;
      for (size_t i = 0; i < na; ++i) worst_a = std::max(worst_a, std::fabs(double(got[0][i]) - want_a[0][i]));
      for (size_t i = 0; i < nb; ++i) worst_b = std::max(worst_b, std::fabs(double(got[1][i]) - want_b[0][i]));
      EXPECT_LT(worst_a, 1e-4) << k->name();
      EXPECT_LT(worst_b, 1e-4) << k->name();
      EXPECT_NE(k->name().find("with the 1x1 '" + b->name + "' fused"), std::string::npos) << k->name();
    }
    EXPECT_GE(variants, 1);
  }
  // Every variant that this build has.
  EXPECT_EQ(tried.size(), ops::sparse_split_available() ? 4u : 3u);
}
}  // namespace
}  // namespace sluice::testing
