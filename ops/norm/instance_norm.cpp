// InstanceNormalization: each (sample, channel) plane of X [N, C, spatial...] normalised by its
// own mean and variance, then y = scale[c] * (x - mean) / sqrt(var + epsilon) + bias[c].
#include <cmath>

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

}  // namespace sluice::ops
