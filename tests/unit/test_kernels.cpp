// Optimised kernels (oneDNN conv/gemm, NHWC pooling, fused epilogues, layout
// reorders) against the reference kernels, on seeded random data and odd shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <random>

#include "ops/common/vmath.h"
#include "ops/layout/reorder.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {
namespace {

// Runs the model optimised and with reference kernels; returns the normalised error.
double optimised_vs_reference(const Model& m, const std::map<std::string, Tensor>& in, int threads = 2) {
  Session fast(m, {threads, true}), ref(m, {1, false});
  auto a = fast.run(in), b = ref.run(in);
  double worst = 0;
  for (const auto& [name, t] : b) {
    EXPECT_EQ(a.at(name).shape(), t.shape()) << name;
    worst = std::max(worst, normalized_error(a.at(name), t));
  }
  return worst;
}

struct ConvCase {
  int64_t n, c, h, w, m, k, stride, pad, group, dilation;
};
// Readable, stable test names (gtest otherwise prints the struct's bytes, padding included).
void PrintTo(const ConvCase& p, std::ostream* os) {
  *os << "n" << p.n << "_c" << p.c << "_" << p.h << "x" << p.w << "_m" << p.m << "_k" << p.k << "_s" << p.stride << "_p"
      << p.pad << "_g" << p.group << "_d" << p.dilation;
}

class ConvVsReference : public ::testing::TestWithParam<ConvCase> {};

// The reference MaxPool (the plan inputs with inf or NaN run on) starts from the lowest float,
// as ONNX Runtime: a window of NaN only (skipped) or of -inf only gives -FLT_MAX, one with a
// NaN and a number gives the number.
TEST(ReferenceMaxPool, NanOrMinusInfWindowsGiveLowestAsOnnxRuntime) {
  OnnxBuilder b;
  b.input("x", {1, 1, 2, 6});
  auto& pool = b.node("MaxPool", {"x"}, {"y"});
  OnnxBuilder::attr_ints(pool, "kernel_shape", {2, 2});
  OnnxBuilder::attr_ints(pool, "strides", {2, 2});
  b.output("y");
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  Tensor x(DType::Float32, {1, 1, 2, 6});
  const float v[] = {nan, nan, -inf, -inf, nan, 2.f, nan, nan, -inf, -inf, -3.f, nan};
  std::copy(std::begin(v), std::end(v), x.data<float>());
  const Tensor y = Session(b.load(), {1, false}).run({{"x", x}})["y"];
  EXPECT_EQ(y.data<float>()[0], std::numeric_limits<float>::lowest());
  EXPECT_EQ(y.data<float>()[1], std::numeric_limits<float>::lowest());
  EXPECT_EQ(y.data<float>()[2], 2.f);
}

TEST_P(ConvVsReference, MatchesWithBiasAndRelu) {
  const ConvCase p = GetParam();
  OnnxBuilder b;
  b.input("x", {p.n, p.c, p.h, p.w}).init_random("w", {p.m, p.c / p.group, p.k, p.k}, 0.3f).init_random("b", {p.m});
  auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
  OnnxBuilder::attr_ints(conv, "strides", {p.stride, p.stride});
  OnnxBuilder::attr_ints(conv, "pads", {p.pad, p.pad, p.pad + (p.k > 1 ? 1 : 0), p.pad});  // asymmetric
  OnnxBuilder::attr_ints(conv, "dilations", {p.dilation, p.dilation});
  OnnxBuilder::attr_int(conv, "group", p.group);
  b.node("Relu", {"y"}, {"z"});
  b.output("z");
  Model m = b.load();
  Session s(m);
  std::string plan = s.inspect();
  // oneDNN, or for channel counts off its 16-channel blocks possibly the direct kernel (measured).
  const bool fast = plan.find("onednn:") != std::string::npos || plan.find("direct:planar") != std::string::npos;
  EXPECT_TRUE(fast) << plan;
  EXPECT_EQ(plan.find("Relu"), std::string::npos) << "Relu should be fused into the conv:\n" << plan;
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({p.n, p.c, p.h, p.w})}}), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvVsReference,
    ::testing::Values(ConvCase{1, 3, 17, 17, 8, 3, 2, 1, 1, 1},     // first layer, stride 2, odd size
                      ConvCase{1, 1, 5, 7, 1, 1, 1, 0, 1, 1},       // single channel, 1x1
                      ConvCase{2, 13, 11, 9, 7, 3, 1, 1, 1, 1},     // prime channels, batch 2
                      ConvCase{1, 16, 14, 14, 16, 3, 1, 1, 16, 1},  // depthwise
                      ConvCase{1, 12, 10, 10, 24, 3, 2, 1, 4, 1},   // grouped, stride 2
                      ConvCase{1, 8, 15, 15, 8, 3, 1, 2, 1, 2},     // dilated
                      ConvCase{1, 64, 28, 28, 64, 3, 1, 1, 1, 1},   // ResNet-like
                      ConvCase{1, 32, 7, 7, 96, 1, 1, 0, 1, 1},     // pointwise expand
                      ConvCase{3, 5, 8, 8, 4, 5, 3, 2, 1, 1}));     // 5x5 stride 3

// The vector exp, sigmoid and erf against libm over [-20, 20] in steps of 2^-10 and at edges:
// exp within 3e-7 relative where e^x is normal, sigmoid within 3e-7 relative, erf within 3e-7
// absolute (and 1e-6 relative below |x| = 0.5, the series' range); NaN stays NaN, +-inf saturate.
TEST(VectorMath, ExpSigmoidTanhErfSoftplusAgainstLibm) {
  namespace simd = ops::simd;
  using simd::vf;
  constexpr int64_t L = simd::kLanes;
  std::vector<float> xs;
  for (int i = -20 * 1024; i <= 20 * 1024; ++i) xs.push_back(static_cast<float>(i) / 1024.f);
  for (float v : {0.f, -0.f, 1e-20f, -1e-20f, 1e-6f, 0.4999f, 0.5f, 0.5001f, 3.999f, 4.f, 87.f, -87.f, 88.f, -86.9f})
    xs.push_back(v);
  while (xs.size() % L) xs.push_back(0.f);
  for (float v : {0.6249f, 0.625f, -0.625f, 0.6251f, 1e-4f, -3e-3f, 9.f, -9.5f, 20.f})  // tanh's seams and tail
    xs.push_back(v);
  for (float v : {88.3f, 88.5f, 88.7f, 88.7228f, -87.3f, -87.33f, -87.336f})  // exp's ends (found by a review)
    xs.push_back(v);
  while (xs.size() % L) xs.push_back(0.f);
  double e_exp = 0, e_sig = 0, e_erf = 0, e_erf_small = 0, e_tanh = 0, e_softplus = 0;
  for (size_t i = 0; i < xs.size(); i += L) {
    vf x;
    __builtin_memcpy(&x, xs.data() + i, sizeof x);
    const vf ex = simd::exp(x), sg = simd::sigmoid(x), ef = simd::erf(x), th = simd::tanh(x), eo = simd::exp_op(x);
    for (int64_t l = 0; l < L; ++l) {
      const double v = xs[i + static_cast<size_t>(l)];
      // (e^x normal: from ln(FLT_MIN) = -87.3365 to ln(FLT_MAX) = 88.7228)
      if (v > -87.3365 && v < 88.7228) e_exp = std::max(e_exp, std::fabs(ex[l] - std::exp(v)) / std::exp(v));
      if (v > -87.3365 && v < 88.7228) e_exp = std::max(e_exp, std::fabs(eo[l] - std::exp(v)) / std::exp(v));
      if (v != 0) e_tanh = std::max(e_tanh, std::fabs(th[l] - std::tanh(v)) / std::fabs(std::tanh(v)));
      const double sp = v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));  // (the reference's)
      if (sp > 1e-30) e_softplus = std::max(e_softplus, std::fabs(simd::softplus(x)[l] - sp) / sp);
      const double s = 1.0 / (1.0 + std::exp(-v));
      e_sig = std::max(e_sig, std::fabs(sg[l] - s) / s);
      e_erf = std::max(e_erf, std::fabs(ef[l] - std::erf(v)));
      if (v != 0 && std::fabs(v) < 0.5) e_erf_small = std::max(e_erf_small, std::fabs(ef[l] - std::erf(v)) / std::fabs(std::erf(v)));
    }
  }
  EXPECT_LT(e_exp, 3e-7);
  EXPECT_LT(e_sig, 3e-7);
  EXPECT_LT(e_erf, 3e-7);
  EXPECT_LT(e_erf_small, 1e-6);
  EXPECT_LT(e_tanh, 3e-7);
  EXPECT_LT(e_softplus, 3e-7);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  vf special{};
  special[0] = nan, special[1] = inf, special[2] = -inf, special[3] = -100.f;
  const vf sg = simd::sigmoid(special), ef = simd::erf(special), ex = simd::exp(special);
  const vf th = simd::tanh(special), eo = simd::exp_op(special);
  EXPECT_TRUE(std::isnan(sg[0]) && std::isnan(ef[0]) && std::isnan(ex[0]) && std::isnan(th[0]) && std::isnan(eo[0]));
  EXPECT_EQ(th[1], 1.f);
  vf zeros{};
  zeros[0] = -0.f;
  EXPECT_TRUE(std::signbit(simd::tanh(zeros)[0])) << "tanh(-0) is -0";
  EXPECT_FALSE(std::signbit(simd::tanh(zeros)[1]));
  EXPECT_EQ(th[2], -1.f);
  EXPECT_EQ(th[3], -1.f);
  const vf sp = simd::softplus(special);
  EXPECT_TRUE(std::isnan(sp[0]));
  EXPECT_EQ(sp[1], inf);
  EXPECT_GE(sp[2], 0.f);
  EXPECT_LT(sp[2], 1e-37f);
  EXPECT_EQ(eo[1], inf);  // the Exp op overflows as libm does, and underflows to 0
  EXPECT_EQ(eo[2], 0.f);
  EXPECT_EQ(eo[3], 0.f);
  EXPECT_EQ(sg[1], 1.f);
  EXPECT_LT(sg[2], 1e-37f);
  EXPECT_GE(sg[2], 0.f);
  EXPECT_EQ(ef[1], 1.f);
  EXPECT_EQ(ef[2], -1.f);
  EXPECT_LT(sg[3], 1e-37f);
}

TEST(FusedResidual, ConvBnAddReluMatchesReference) {
  // x -> conv -> BN -> (+ x) -> relu, with non-trivial BN statistics.
  OnnxBuilder b;
  b.input("x", {2, 16, 9, 9}).init_random("w", {16, 16, 3, 3}, 0.2f);
  b.init_random("scale", {16}, 0.5f, 1.f).init_random("bias", {16}).init_random("mean", {16});
  b.init_random("var", {16}, 0.2f, 1.5f);
  auto& conv = b.node("Conv", {"x", "w"}, {"c"});
  OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"bn"});
  b.node("Add", {"bn", "x"}, {"sum"});
  b.node("Relu", {"sum"}, {"y"});
  b.output("y");
  Model m = b.load();
  Session s(m);
  std::string plan = s.inspect();
  EXPECT_EQ(plan.find("BatchNormalization"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("Add"), std::string::npos) << plan;
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({2, 16, 9, 9})}}), 1e-4);
}

struct PoolCase {
  const char* op;
  int64_t h, k, stride, pad;
  bool ceil, include_pad;
  int64_t c = 6;  // channels: below a vector, and (13, 20, 37) a partial last vector, 4-vector groups
};
void PrintTo(const PoolCase& p, std::ostream* os) {
  *os << p.op << "_h" << p.h << "_k" << p.k << "_s" << p.stride << "_p" << p.pad << (p.ceil ? "_ceil" : "")
      << (p.include_pad ? "_incl" : "") << "_c" << p.c;
}

class PoolVsReference : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolVsReference, NhwcMatchesReference) {
  const PoolCase p = GetParam();
  OnnxBuilder b;
  // A conv first so the pool runs on NHWC data.
  b.input("x", {2, 5, p.h, p.h}).init_random("w", {p.c, 5, 1, 1});
  b.node("Conv", {"x", "w"}, {"c"});
  auto& pool = b.node(p.op, {"c"}, {"y"});
  OnnxBuilder::attr_ints(pool, "kernel_shape", {p.k, p.k});
  OnnxBuilder::attr_ints(pool, "strides", {p.stride, p.stride});
  OnnxBuilder::attr_ints(pool, "pads", {p.pad, p.pad, p.pad, p.pad});
  OnnxBuilder::attr_int(pool, "ceil_mode", p.ceil);
  if (std::string(p.op) == "AveragePool") OnnxBuilder::attr_int(pool, "count_include_pad", p.include_pad);
  b.output("y");
  Model m = b.load();
  Session s(m);
  EXPECT_NE(s.inspect().find("[nhwc,"), std::string::npos) << s.inspect();
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({2, 5, p.h, p.h})}}), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PoolVsReference,
                         ::testing::Values(PoolCase{"MaxPool", 112, 3, 2, 1, false, false},
                                           PoolCase{"MaxPool", 13, 3, 2, 0, true, false},
                                           PoolCase{"AveragePool", 9, 3, 2, 1, true, true},
                                           PoolCase{"AveragePool", 9, 3, 2, 1, true, false},
                                           PoolCase{"AveragePool", 8, 2, 2, 0, false, false},
                                           PoolCase{"MaxPool", 15, 3, 2, 1, false, false, 13},
                                           PoolCase{"MaxPool", 15, 3, 2, 1, false, false, 37},
                                           PoolCase{"MaxPool", 9, 3, 1, 1, true, false, 20},
                                           PoolCase{"AveragePool", 9, 3, 2, 1, true, true, 37},
                                           PoolCase{"AveragePool", 9, 3, 2, 1, false, false, 13}));

// Gemm + Relu, B stored either way, with a few rows (the inner product) and with 12 (also as a
// 1x1 conv, measured): both forms, bias and Relu included, against the reference kernel.
TEST(GemmVsReference, TransBAndPlainB) {
  for (int64_t rows : {3, 12})
    for (int trans_b : {0, 1}) {
      OnnxBuilder b;
      b.input("x", {rows, 37});
      b.init_random("w", trans_b ? Shape{11, 37} : Shape{37, 11}).init_random("c", {11});
      auto& g = b.node("Gemm", {"x", "w", "c"}, {"y"});
      OnnxBuilder::attr_int(g, "transB", trans_b);
      b.node("Relu", {"y"}, {"z"});
      b.output("z");
      Model m = b.load();
      Session s(m);
      EXPECT_NE(s.inspect().find("onednn:"), std::string::npos) << s.inspect();
      EXPECT_EQ(s.inspect().find("1x1 conv") != std::string::npos, rows >= 8) << s.inspect();  // both timed
      EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({rows, 37})}}), 1e-5) << "transB=" << trans_b;
      runtime::Plan plan(*m.graph(), {}, {1, true});
      const graph::Node* gemm = last_node(plan.graph(), graph::OpType::Gemm);
      ASSERT_NE(gemm, nullptr);
      ASSERT_EQ(gemm->p<graph::GemmParams>().activation.kind, graph::Activation::Relu) << "the Relu should fuse";
      const auto id = static_cast<graph::NodeId>(gemm - plan.graph().nodes.data());
      auto ref = ops::make_kernel(plan.graph(), id, {false}), conv = ops::make_onednn_1x1(plan.graph(), *gemm);
      ASSERT_NE(conv, nullptr);
      EXPECT_LT(max_kernel_diff(*conv, *ref, plan.graph(), *gemm, 3), 1e-4) << "transB=" << trans_b;
    }
}

// Gemm and MatMul in float64 (torch exports a Linear behind a double tensor with double
// weights): the reference kernel, in double, also in the optimised plan (no oneDNN form, no
// fused Relu, which would run in float), against the sums computed here.
TEST(GemmVsReference, Float64GemmAndMatMulRunInDouble) {
  const int64_t rows = 3, k = 5, n = 4;
  std::mt19937 rng(3);
  std::normal_distribution<double> dist(0.0, 1.0);
  auto values = [&](int64_t count) {
    std::vector<double> v(static_cast<size_t>(count));
    for (double& x : v) x = dist(rng) * (1.0 + 1e-9);  // (bits a float cannot hold)
    return v;
  };
  const std::vector<double> a = values(rows * k), w = values(n * k), c = values(n);
  OnnxBuilder b;
  b.input("a", {rows, k}, onnx::TensorProto::DOUBLE).init_f64("w", {n, k}, w).init_f64("c", {n}, c);
  std::vector<double> wt(static_cast<size_t>(k * n));  // w transposed, for the MatMul
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < k; ++t) wt[static_cast<size_t>(t * n + i)] = w[static_cast<size_t>(i * k + t)];
  b.init_f64("wt", {k, n}, wt);
  auto& g = b.node("Gemm", {"a", "w", "c"}, {"y0"});
  OnnxBuilder::attr_int(g, "transB", 1);
  OnnxBuilder::attr_float(g, "alpha", 0.5f);
  OnnxBuilder::attr_float(g, "beta", 2.f);
  b.node("Relu", {"y0"}, {"y"});
  b.node("MatMul", {"a", "wt"}, {"z"});
  b.output("y", {}, onnx::TensorProto::DOUBLE).output("z", {}, onnx::TensorProto::DOUBLE);
  Model m = b.load();
  const Tensor x = Tensor::copy_of(DType::Float64, {rows, k}, a.data());
  for (bool optimize : {true, false}) {
    auto out = Session(m, {1, optimize}).run({{"a", x}});
    ASSERT_EQ(out["y"].dtype(), DType::Float64);
    ASSERT_EQ(out["z"].dtype(), DType::Float64);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t t = 0; t < k; ++t) dot += a[static_cast<size_t>(i * k + t)] * w[static_cast<size_t>(j * k + t)];
        const double y = std::max(0.0, 0.5 * dot + 2.0 * c[static_cast<size_t>(j)]);
        EXPECT_NEAR(out["y"].data<double>()[i * n + j], y, 1e-12) << i << "," << j << " optimize " << optimize;
        EXPECT_NEAR(out["z"].data<double>()[i * n + j], dot, 1e-12) << i << "," << j << " optimize " << optimize;
      }
  }
}

// Resize of H and W on the fast kernel, NHWC (between a conv and a Relu) and NCHW (a model
// input to a model output: separable rows), against the reference kernel: every mode, the
// coordinate modes, nearest roundings, up and down, sizes that are not multiples, two threads.
TEST(ResizeVsReference, EveryModeOnBothLayouts) {
  struct Case {
    const char *mode, *coords, *nearest;
    float sh, sw;
    bool exclude = false;
  };
  const Case cases[] = {{"nearest", "asymmetric", "floor", 2.f, 2.f},
                        {"nearest", "half_pixel", "round_prefer_floor", 2.5f, 1.6f},
                        {"nearest", "align_corners", "round_prefer_ceil", 0.6f, 0.45f},
                        {"nearest", "tf_half_pixel_for_nn", "ceil", 3.f, 0.5f},
                        {"linear", "half_pixel", "floor", 2.f, 2.f},
                        {"linear", "align_corners", "floor", 2.5f, 1.6f},
                        {"linear", "pytorch_half_pixel", "floor", 0.6f, 0.45f},
                        {"linear", "asymmetric", "floor", 1.f, 3.f},
                        {"cubic", "half_pixel", "floor", 2.f, 0.5f},
                        {"cubic", "align_corners", "floor", 1.6f, 2.5f, true}};
  for (const Case& c : cases)
    for (bool nhwc : {true, false}) {
      OnnxBuilder b;
      b.input("x", {2, 5, 6, 7});
      b.init("roi", {0}, {}).init("scales", {4}, {1.f, 1.f, c.sh, c.sw});
      std::string in = "x";
      if (nhwc) {  // a conv first: its NHWC output is the Resize's input
        b.init_random("w", {5, 5, 1, 1});
        b.node("Conv", {"x", "w"}, {"cx"});
        in = "cx";
      }
      auto& rs = b.node("Resize", {in, "roi", "scales"}, {nhwc ? "r" : "y"}, "up");
      OnnxBuilder::attr_str(rs, "mode", c.mode);
      OnnxBuilder::attr_str(rs, "coordinate_transformation_mode", c.coords);
      OnnxBuilder::attr_str(rs, "nearest_mode", c.nearest);
      if (c.exclude) OnnxBuilder::attr_int(rs, "exclude_outside", 1);
      if (nhwc) b.node("Relu", {"r"}, {"y"});
      b.output("y");
      Model m = b.load();
      const std::string text = Session(m, {2, true}).inspect();
      EXPECT_NE(text.find(nhwc ? "resize:nhwc" : "resize:planes"), std::string::npos) << text;
      EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({2, 5, 6, 7})}}), 1e-6)
          << c.mode << " " << c.coords << " " << c.sh << "x" << c.sw << (nhwc ? " nhwc" : " nchw");
    }
  // NCHW keeps h x ow rows per thread: 8192 rows down to one, and 4 columns up to 4096, would
  // want 128 MB of them for a 16 KB output: the reference kernel takes it.
  OnnxBuilder b;
  b.input("x", {1, 1, 8192, 4});
  b.init("roi", {0}, {}).init_i64("sizes", {4}, {1, 1, 1, 4096});
  OnnxBuilder::attr_str(b.node("Resize", {"x", "roi", "", "sizes"}, {"y"}), "mode", "linear");
  b.output("y");
  Model m = b.load();
  const std::string text = Session(m, {1, true}).inspect();
  EXPECT_EQ(text.find("resize:"), std::string::npos) << text;
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({1, 1, 8192, 4})}}), 1e-6);
}

// InstanceNormalization on the vectorised kernel against the reference (in double): planes
// whose size is not a multiple of the vectors, of one value (variance 0), 3-D, and values far
// from 0 (a mean of 1000 around a spread of 1: the float two-pass sums keep it).
TEST(InstanceNormVsReference, PlanesOfAnySizeAndOffset) {
  for (const Shape& xs : {Shape{2, 3, 9, 13}, Shape{1, 4, 1, 1}, Shape{2, 5, 300}, Shape{1, 2, 64, 65}})
    for (float offset : {0.f, 1000.f}) {
      OnnxBuilder b;
      b.input("x", xs).init_random("scale", {xs[1]}).init_random("bias", {xs[1]});
      b.init("off", {}, {offset});
      b.node("Add", {"x", "off"}, {"xo"});
      OnnxBuilder::attr_float(b.node("InstanceNormalization", {"xo", "scale", "bias"}, {"y"}), "epsilon", 1e-5f);
      b.output("y");
      Model m = b.load();
      EXPECT_NE(Session(m, {2, true}).inspect().find("instancenorm:planes"), std::string::npos);
      EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor(xs)}}), offset > 0 ? 2e-4 : 1e-5)
          << shape_str(xs) << " offset " << offset;
    }
}

// Softmax on the vector exp against the reference: along the last axis (rows of any length),
// over channels of a map (the vectors along the pixels, the last block partial), the legacy
// 2-D form (opset 11), and a masked entry (-inf: exactly 0, as the reference gives).
TEST(SoftmaxVsReference, RowsChannelsAndLegacy) {
  struct Case {
    Shape xs;
    int64_t axis;
    int opset;
  };
  for (const Case& c : {Case{{3, 1000}, -1, 13}, Case{{2, 7}, 1, 13}, Case{{2, 21, 9, 13}, 1, 13},
                        Case{{1, 5, 33, 17}, 1, 13}, Case{{2, 3, 4, 5}, 1, 11}, Case{{2, 6, 37}, 2, 13}}) {
    OnnxBuilder b(c.opset);
    b.input("x", c.xs);
    // A mask added inside the graph (an input holding -inf would run on the reference kernels).
    int64_t numel = 1;
    for (int64_t d : c.xs) numel *= d;
    std::vector<float> mask(static_cast<size_t>(numel), 0.f);
    mask[1] = -std::numeric_limits<float>::infinity();
    b.init("mask", c.xs, mask);
    b.node("Add", {"x", "mask"}, {"xm"});
    OnnxBuilder::attr_int(b.node("Softmax", {"xm"}, {"y"}), "axis", c.axis);
    b.output("y");
    Model m = b.load();
    const std::string text = Session(m, {2, true}).inspect();
    EXPECT_NE(text.find("softmax:"), std::string::npos) << text;
    Tensor x = random_tensor(c.xs, 5);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] *= 4.f;
    EXPECT_LT(optimised_vs_reference(m, {{"x", x}}), 1e-6) << shape_str(c.xs);
    const Tensor y = Session(m, {1, true}).run({{"x", x}})["y"];
    EXPECT_EQ(y.data<float>()[1], 0.f) << shape_str(c.xs);
  }
}

// ConvTranspose with stride = kernel as a 1x1 conv whose values go to their own pixels, against
// the reference kernel: square and not, bias or none, several blocks of input rows and a
// partial last one (200 rows of 50 pixels: blocks of 81), a map of one row.
TEST(DeconvVsReference, StrideEqualsKernelAsA1x1Conv) {
  struct Case {
    Shape xs;
    int64_t m, kh, kw;
    bool bias;
  };
  for (const Case& c : {Case{{2, 5, 100, 50}, 3, 2, 2, true}, Case{{1, 7, 3, 4}, 6, 2, 3, false},
                        Case{{3, 2, 1, 9}, 4, 3, 1, true}}) {
    OnnxBuilder b;
    b.input("x", c.xs).init_random("w", {c.xs[1], c.m, c.kh, c.kw}).init_random("b", {c.m});
    auto& ct = b.node("ConvTranspose", c.bias ? std::vector<std::string>{"x", "w", "b"} : std::vector<std::string>{"x", "w"},
                      {"y"});
    OnnxBuilder::attr_ints(ct, "strides", {c.kh, c.kw});
    b.output("y");
    Model m = b.load();
    const std::string text = Session(m, {2, true}).inspect();
    EXPECT_NE(text.find("deconv as onednn:"), std::string::npos) << text;
    EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor(c.xs)}}), 1e-5) << shape_str(c.xs);
    // No generic NHWC fallback for it: the adapter around the reference kernel would read the
    // weights in the wrong order (it gave 4-6 off here).
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Node* node = last_node(plan.graph(), graph::OpType::ConvTranspose);
    ASSERT_NE(node, nullptr);
    ASSERT_EQ(node->layout, graph::Layout::NHWC);
    EXPECT_EQ(ops::make_nhwc_adapter(plan.graph(), *node), nullptr);
  }
  // No input channels: the output is the bias at every pixel (the reference kernel's, NCHW); on
  // the NHWC path it was garbage (found by a probe).
  OnnxBuilder b;
  b.input("x", {1, 0, 5, 6}).init("w", {0, 4, 2, 2}, {}).init("b", {4}, {1.f, 2.f, 3.f, 4.f});
  OnnxBuilder::attr_ints(b.node("ConvTranspose", {"x", "w", "b"}, {"y"}), "strides", {2, 2});
  b.output("y");
  const Tensor y = Session(b.load(), {1, true}).run({{"x", Tensor(DType::Float32, {1, 0, 5, 6})}})["y"];
  ASSERT_EQ(y.shape(), (Shape{1, 4, 10, 12}));
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data<float>()[i], static_cast<float>(1 + i / 120)) << i;
}

// Other strided ConvTransposes split into one conv per output phase, against the reference
// kernel: DCGAN's 4x4 stride 2 pad 1, 3x3 stride 2 pad 1 with output_padding, a kernel smaller
// than the stride (phases no tap reaches: the bias), strides 3 and 2 with uneven pads, batch 2,
// no bias; and forms that stay on oneDNN's deconvolution (groups, dilation, an output_padding
// beyond every tap).
TEST(DeconvVsReference, StridedSplitByOutputPhase) {
  struct Case {
    Shape xs;
    int64_t m, kh, kw, sh, sw;
    std::vector<int64_t> pads, output_padding;
    bool bias;
    int64_t group = 1, dilation = 1;
    bool phases = true;
  };
  const Case cases[] = {{{1, 6, 9, 7}, 5, 4, 4, 2, 2, {1, 1, 1, 1}, {0, 0}, true},
                        {{2, 3, 5, 6}, 4, 3, 3, 2, 2, {1, 1, 1, 1}, {1, 1}, true},
                        {{1, 4, 4, 5}, 3, 1, 1, 2, 2, {0, 0, 0, 0}, {1, 1}, false},
                        {{2, 5, 6, 4}, 3, 5, 4, 3, 2, {2, 1, 1, 0}, {0, 0}, true},
                        // (output_padding past the last tap: a phase's conv would pad by its whole kernel)
                        {{2, 5, 6, 4}, 3, 5, 4, 3, 2, {2, 1, 1, 0}, {0, 1}, true, 1, 1, false},
                        {{1, 4, 5, 5}, 4, 3, 3, 2, 2, {1, 1, 1, 1}, {0, 0}, true, 2, 1, false},
                        {{1, 4, 5, 5}, 4, 3, 3, 2, 2, {2, 2, 2, 2}, {0, 0}, true, 1, 2, false}};
  for (const Case& c : cases) {
    OnnxBuilder b;
    b.input("x", c.xs).init_random("w", {c.xs[1], c.m / c.group, c.kh, c.kw}).init_random("b", {c.m});
    auto& ct = b.node("ConvTranspose", c.bias ? std::vector<std::string>{"x", "w", "b"} : std::vector<std::string>{"x", "w"},
                      {"y"});
    OnnxBuilder::attr_ints(ct, "strides", {c.sh, c.sw});
    OnnxBuilder::attr_ints(ct, "pads", c.pads);
    OnnxBuilder::attr_ints(ct, "output_padding", c.output_padding);
    if (c.group != 1) OnnxBuilder::attr_int(ct, "group", c.group);
    if (c.dilation != 1) OnnxBuilder::attr_ints(ct, "dilations", {c.dilation, c.dilation});
    b.output("y");
    Model m = b.load();
    const std::string text = Session(m, {2, true}).inspect();
    EXPECT_EQ(text.find("deconv by phases:") != std::string::npos, c.phases) << text;
    EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor(c.xs)}}), 1e-5) << shape_str(c.xs) << " k" << c.kh;
  }
}

// DepthToSpace between convs (PixelShuffle) on NHWC, both modes, against the reference kernel.
TEST(DepthToSpaceVsReference, NhwcBothModes) {
  for (bool crd : {false, true})
    for (int64_t bs : {2, 3}) {
      const int64_t c = 5 * bs * bs;
      OnnxBuilder b;
      b.input("x", {2, 4, 7, 6}).init_random("w", {c, 4, 3, 3});
      OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"cx"}), "pads", {1, 1, 1, 1});
      auto& d = b.node("DepthToSpace", {"cx"}, {"d"});
      OnnxBuilder::attr_int(d, "blocksize", bs);
      if (crd) OnnxBuilder::attr_str(d, "mode", "CRD");
      b.node("Relu", {"d"}, {"y"});
      b.output("y");
      Model m = b.load();
      const std::string text = Session(m, {2, true}).inspect();
      EXPECT_NE(text.find("depth_to_space:nhwc"), std::string::npos) << text;
      EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({2, 4, 7, 6})}}), 1e-5) << (crd ? "CRD" : "DCR") << bs;
    }
}

// MatMul with constant 2-D weights (Linear layers exported as MatMul, e.g. ConvNeXt's MLPs over
// [N, H, W, C]): oneDNN's inner product, and with many rows also as a 1x1 conv, measured.
TEST(MatMulVsReference, ConstantWeightsOnEveryLeadingShape) {
  for (const Shape& xs : {Shape{3, 37}, Shape{2, 5, 37}, Shape{1, 6, 7, 37}, Shape{2, 9, 1, 37}}) {
    OnnxBuilder b;
    b.input("x", xs).init_random("w", {37, 19});
    b.node("MatMul", {"x", "w"}, {"y"});
    b.output("y");
    Model m = b.load();
    Session s(m);
    const std::string text = s.inspect();
    EXPECT_NE(text.find("onednn:"), std::string::npos) << text;
    int64_t rows = 1;
    for (size_t d = 0; d + 1 < xs.size(); ++d) rows *= xs[d];
    EXPECT_EQ(text.find("1x1 conv") != std::string::npos, rows >= 8 && xs.size() > 2) << text;  // both timed, note shown
    EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor(xs)}}), 1e-5) << shape_str(xs);
    // Both forms, whichever the timing kept, against the reference kernel on one node. (A 2-D
    // MatMul is a Gemm by then: passes::linear_as_gemm.)
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Node* mm = last_node(plan.graph(), graph::OpType::MatMul);
    if (xs.size() == 2) {
      EXPECT_EQ(mm, nullptr);
      EXPECT_NE(last_node(plan.graph(), graph::OpType::Gemm), nullptr);
      continue;
    }
    ASSERT_NE(mm, nullptr);
    const auto id = static_cast<graph::NodeId>(mm - plan.graph().nodes.data());
    auto ref = ops::make_kernel(plan.graph(), id, {false});
    auto conv = ops::make_onednn_1x1(plan.graph(), *mm), best = ops::make_onednn_matmul(plan.graph(), *mm);
    ASSERT_NE(conv, nullptr);
    EXPECT_LT(max_kernel_diff(*conv, *ref, plan.graph(), *mm, 3), 1e-4) << shape_str(xs);
    EXPECT_LT(max_kernel_diff(*best, *ref, plan.graph(), *mm, 3), 1e-4) << shape_str(xs);
  }
}

// Channels-last permutes (ConvNeXt's) on the tiled layout copy, and unary ops without a
// vectorised kernel on large tensors in parallel chunks, against the reference kernels.
TEST(TransposeAndUnary, LayoutPermutesAndChunkedUnaryMatchReference) {
  const Shape xs{2, 19, 41, 47};  // off every tile edge; > 65536 elements
  OnnxBuilder b;
  b.input("x", xs);
  OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"t"}), "perm", {0, 2, 3, 1});
  b.node("Erf", {"t"}, {"e"});
  b.node("Sin", {"e"}, {"f"});  // (no vectorised kernel: on the reference kernel in parallel chunks)
  // (A Softmax over the last axis, so that the Transposes stay: they move below elementwise ops
  // and would cancel.)
  OnnxBuilder::attr_int(b.node("Softmax", {"f"}, {"sm"}), "axis", -1);
  OnnxBuilder::attr_ints(b.node("Transpose", {"sm"}, {"y"}), "perm", {0, 3, 1, 2});
  b.output("y");
  Model m = b.load();
  Session s(m);
  const std::string text = s.inspect();
  EXPECT_NE(text.find("tiled:0231"), std::string::npos) << text;
  EXPECT_NE(text.find("tiled:0312"), std::string::npos) << text;
  EXPECT_NE(text.find("parallel chunks"), std::string::npos) << text;
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor(xs)}}), 1e-6);
}

TEST(Layout, SqueezeExcitationMulBroadcastsPerChannelOnNhwc) {
  // conv -> GAP -> (scale) -> Mul(conv_out, scale): a [N,C,1,1] operand on NHWC data.
  OnnxBuilder b;
  b.input("x", {2, 6, 7, 7}).init_random("w", {8, 6, 3, 3}).init_random("w2", {8, 8, 1, 1});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"});
  OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
  b.node("GlobalAveragePool", {"c"}, {"g"});
  b.node("Conv", {"g", "w2"}, {"g2"});
  b.node("Sigmoid", {"g2"}, {"s"});
  b.node("Mul", {"c", "s"}, {"y"});
  b.output("y");
  Model m = b.load();
  EXPECT_LT(optimised_vs_reference(m, {{"x", random_tensor({2, 6, 7, 7})}}), 1e-5);
}

// The NCHW <-> NHWC transpose runs in tiles of 16 channels x 64 pixels: shapes on and off the
// tile edges, batch > 1, both directions, every element against its index formula.
TEST(Layout, ReorderNchwNhwcEveryElementOnAndOffTileEdges) {
  // 8 x 8 register transposes with partial channel blocks (5, 17, 13) whose 8-float stores and
  // loads reach into the next pixels, tile ends at 64 pixels, the 3-plane interleave (RGB)
  for (const Shape& s : {Shape{1, 16, 8, 8}, Shape{2, 17, 9, 7}, Shape{3, 5, 1, 65}, Shape{1, 40, 56, 56}, Shape{2, 1, 3, 3},
                         Shape{2, 3, 9, 15}, Shape{1, 3, 224, 224}, Shape{2, 13, 11, 13}, Shape{1, 3, 1, 7}}) {
    const int64_t n = s[0], c = s[1], hw = s[2] * s[3], total = n * c * hw;
    std::vector<float> src(static_cast<size_t>(total)), to(static_cast<size_t>(total), -1.f), back(static_cast<size_t>(total), -1.f);
    for (int64_t i = 0; i < total; ++i) src[static_cast<size_t>(i)] = static_cast<float>(i);
    ops::reorder_nchw_nhwc(src.data(), to.data(), s, true);
    int64_t wrong = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < hw; ++i)
          wrong += to[static_cast<size_t>((b * hw + i) * c + ch)] != src[static_cast<size_t>((b * c + ch) * hw + i)];
    EXPECT_EQ(wrong, 0) << shape_str(s) << " to NHWC";
    ops::reorder_nchw_nhwc(to.data(), back.data(), s, false);
    EXPECT_EQ(back, src) << shape_str(s) << " back to NCHW";
  }
}

}  // namespace
}  // namespace sluice::testing

namespace sluice::testing {
namespace {

// NaN in, NaN out, as in ONNX Runtime's Relu and Reduce kernels: a standalone Relu must not
// turn it into 0, and ReduceMax/Min must not drop it or turn an all -inf row into -FLT_MAX (a
// fuzzer found all three). (A Relu fused into a conv follows the conv library, as ORT's own
// fused Conv+Relu does: oneDNN and ORT's MLAS both give 0 there.)
TEST(NonFinite, StandaloneReluKeepsNaN) {
  OnnxBuilder b;
  b.input("x", {1, 8, 6, 6});
  b.node("Relu", {"x"}, {"y"});
  b.output("y");
  Model m = b.load();
  Tensor x(DType::Float32, {1, 8, 6, 6});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = i % 3 == 0 ? std::nanf("") : 0.1f * static_cast<float>(i % 7) - 0.3f;
  for (bool optimize : {true, false}) {
    SessionOptions o;
    o.threads = 1, o.optimize = optimize;
    const Tensor y = Session(m, o).run({{"x", x}})["y"];
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.data<float>()[i];
      if (std::isnan(v))
        EXPECT_TRUE(std::isnan(y.data<float>()[i])) << i << " optimize " << optimize;
      else
        EXPECT_EQ(y.data<float>()[i], v < 0.f ? 0.f : v) << i;
    }
  }
}

TEST(NonFinite, ReduceMaxMinKeepNaNAndInfinity) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  for (const char* op : {"ReduceMax", "ReduceMin"}) {
    OnnxBuilder b;
    b.input("x", {3, 4});
    auto& n = b.node(op, {"x"}, {"y"});
    OnnxBuilder::attr_ints(n, "axes", {1});
    OnnxBuilder::attr_int(n, "keepdims", 0);
    b.output("y");
    const Tensor x = Tensor::from_vector<float>({3, 4}, {nan, 1, -1, inf, -inf, -inf, -inf, -inf, inf, inf, inf, inf});
    const Tensor y = Session(b.load()).run({{"x", x}})["y"];
    EXPECT_TRUE(std::isnan(y.data<float>()[0])) << op;
    EXPECT_EQ(y.data<float>()[1], -inf) << op;
    EXPECT_EQ(y.data<float>()[2], inf) << op;
  }
}

// Slice steps near -2^63: ceil((end - start) / step) overflowed and gave 0 elements (fuzzer).
TEST(Slice, StepNearInt64Min) {
  for (int64_t step : {int64_t{-1000}, -(int64_t{1} << 62), INT64_MIN + 1}) {
    OnnxBuilder b;
    b.input("x", {1, 28}).init_i64("s", {1}, {27}).init_i64("e", {1}, {0}).init_i64("a", {1}, {1}).init_i64("st", {1}, {step});
    b.node("Slice", {"x", "s", "e", "a", "st"}, {"y"});
    b.output("y");
    const Tensor x = random_tensor({1, 28});
    const Tensor y = Session(b.load()).run({{"x", x}})["y"];
    ASSERT_EQ(y.shape(), (Shape{1, 1})) << step;
    EXPECT_EQ(y.data<float>()[0], x.data<float>()[27]) << step;
  }
}

// ScatterND on rows (indices [..., 1]) with every reduction, and on elements (indices [..., 2]).
// Expected values worked out by hand: row 1 is written twice, row 3 once.
TEST(ScatterND, RowsWithEachReductionAndElements) {
  const Tensor data = Tensor::from_vector<float>({4, 2}, {1, 5, 2, -1, 0, 0, 7, 3});
  const std::map<std::string, std::vector<float>> expected = {
      {"add", {1, 5, 6, 2, 0, 0, 12, 12}}, {"mul", {1, 5, 0, 18, 0, 0, 35, 27}},
      {"max", {1, 5, 4, 6, 0, 0, 7, 9}},   {"min", {1, 5, 0, -3, 0, 0, 5, 3}}};
  for (const auto& [reduction, want] : expected) {
    OnnxBuilder b(18);
    b.input("x", {4, 2}).init_i64("idx", {3, 1}, {1, -3, 3}).init("u", {3, 2}, {4, -3, 0, 6, 5, 9});
    OnnxBuilder::attr_str(b.node("ScatterND", {"x", "idx", "u"}, {"y"}), "reduction", reduction);
    b.output("y");
    for (bool optimise : {true, false}) {
      const Tensor y = Session(b.load(), {1, optimise}).run({{"x", data}})["y"];
      EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + 8), want) << reduction;
    }
  }
  OnnxBuilder b(13);
  b.input("x", {4, 2}).init_i64("idx", {2, 2}, {0, 1, 2, 0}).init("u", {2}, {10, 20});
  b.node("ScatterND", {"x", "idx", "u"}, {"y"});
  b.output("y");
  const Tensor y = Session(b.load()).run({{"x", data}})["y"];
  EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + 8), (std::vector<float>{1, 10, 2, -1, 20, 0, 7, 3}));
}

}  // namespace
}  // namespace sluice::testing
