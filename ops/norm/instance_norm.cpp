// InstanceNormalization: each (sample, channel) plane of X [N, C, spatial...] normalised by its
// own mean and variance, then y = scale[c] * (x - mean) / sqrt(var + epsilon) + bias[c].
#include <cmath>

#include "ops/common/simd.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_InstanceNormalization(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input", x.dtype));
  if (x.shape.size() < 3) ctx.fail("input must be [N, C, spatial...], got " + shape_str(x.shape));
  for (size_t i = 1; i <= 2; ++i) {
    ctx.expect_input(i, DType::Float32, 1);
    if (ctx.in(i).shape[0] != x.shape[1])
      ctx.fail("input " + std::to_string(i) + " ('" + ctx.in(i).name + "') has " + std::to_string(ctx.in(i).shape[0]) +
               " entries for " + std::to_string(x.shape[1]) + " channels");
  }
  ctx.set_output(0, DType::Float32, x.shape);
}

void reference_InstanceNormalization(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const double eps = node.p<graph::BatchNormParams>().epsilon;
  const Shape& s = in[0].shape;
  const int64_t n = s[0], c = s[1], size = c && n ? in[0].numel() / (n * c) : 0;
  const float* X = in[0].as<const float>();
  const float* scale = in[1].as<const float>();
  const float* bias = in[2].as<const float>();
  float* Y = out[0].as<float>();
  for (int64_t pl = 0; pl < n * c; ++pl) {
    const float* x = X + pl * size;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < size; ++i) mean += x[i];
    mean /= static_cast<double>(std::max<int64_t>(size, 1));
    for (int64_t i = 0; i < size; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= static_cast<double>(std::max<int64_t>(size, 1));
    const double k = scale[pl % c] / std::sqrt(var + eps);
    for (int64_t i = 0; i < size; ++i) Y[pl * size + i] = static_cast<float>((x[i] - mean) * k + bias[pl % c]);
  }
}

namespace {
// The same on float vectors, planes in parallel: each plane's sum and then its sum of squared
// deviations in float vector partial sums (added up in double), then (x - mean) * k + bias. The
// reference, in double and on one thread, took 2.3 ms for a 64 x 128 x 128 map where ONNX
// Runtime takes 0.44 (a probe; GroupNorm exports as this op).
class FastInstanceNorm final : public Kernel {
 public:
  explicit FastInstanceNorm(double eps) : eps_(eps) {}
  void run(const KernelArgs& a) const override {
    using simd::vf;
    constexpr int64_t L = simd::kLanes;
    const Shape& s = a.in[0].shape;
    const int64_t n = s[0], c = s[1], size = c && n ? a.in[0].numel() / (n * c) : 0;
    const float* X = a.in[0].as<const float>();
    const float* scale = a.in[1].as<const float>();
    const float* bias = a.in[2].as<const float>();
    float* Y = a.out[0].as<float>();
    auto sum = [&](const float* x, auto term) {  // sum over the plane of term(v), in a fixed order
      vf acc[4] = {};
      int64_t i = 0;
      for (; i + 4 * L <= size; i += 4 * L)
        for (int u = 0; u < 4; ++u) acc[u] += term(*reinterpret_cast<const vf*>(x + i + u * L));
      double total = 0;
      for (int u = 0; u < 4; ++u)
        for (int64_t l = 0; l < L; ++l) total += acc[u][l];
      for (; i < size; ++i) {
        vf v{};
        v[0] = x[i];
        total += term(v)[0];
      }
      return total;
    };
#pragma omp parallel for schedule(static) if (n * c * size >= 65536)
    for (int64_t pl = 0; pl < n * c; ++pl) {
      const float* x = X + pl * size;
      const double mean = sum(x, [](vf v) { return v; }) / static_cast<double>(std::max<int64_t>(size, 1));
      const float m = static_cast<float>(mean);
      const double var = sum(x, [m](vf v) { return (v - m) * (v - m); }) / static_cast<double>(std::max<int64_t>(size, 1));
      const float k = static_cast<float>(scale[pl % c] / std::sqrt(var + eps_)), b = bias[pl % c];
      float* y = Y + pl * size;
      for (int64_t i = 0; i < size; ++i) y[i] = (x[i] - m) * k + b;
    }
  }
  std::string name() const override { return "instancenorm:planes"; }

 private:
  double eps_;
};
}  // namespace

std::unique_ptr<Kernel> make_fast_instance_norm(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NCHW || g.value(n.inputs[0]).dtype != DType::Float32) return nullptr;
  return std::make_unique<FastInstanceNorm>(n.p<graph::BatchNormParams>().epsilon);
}

}  // namespace sluice::ops
