// LayerNormalization (opset 17): over the axes [axis, rank) of X,
//   Y = (X - mean) / sqrt(var + epsilon) * Scale + B,
// with the optional outputs Mean and InvStdDev (X's shape with those axes set to 1). Scale
// and B broadcast to X.shape[axis:] (ConvNeXt's and other CNNs' channel-last LayerNorm).
#include <cmath>

#include "ops/util.h"

namespace sluice::ops {

namespace {

int64_t norm_axis(const graph::Node& n, size_t rank) {
  const int64_t a = n.p<graph::LayerNormParams>().axis;
  return a < 0 ? a + static_cast<int64_t>(rank) : a;
}

}  // namespace

void infer_LayerNormalization(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input X", x.dtype));
  const int64_t axis = norm_axis(ctx.node(), x.shape.size());
  if (axis < 0 || axis >= static_cast<int64_t>(x.shape.size()))
    ctx.fail("axis " + std::to_string(ctx.node().p<graph::LayerNormParams>().axis) + " is out of range for X of shape " +
             shape_str(x.shape));
  const Shape inner(x.shape.begin() + axis, x.shape.end());
  for (size_t i = 1; i <= 2; ++i) {
    if (!ctx.has_input(i)) {
      if (i == 1) ctx.fail("input Scale is required");
      continue;
    }
    ctx.expect_input(i, DType::Float32);
    // Unidirectional broadcast to X.shape[axis:].
    const Shape& s = ctx.in(i).shape;
    bool ok = s.size() <= inner.size();
    for (size_t d = 0; ok && d < s.size(); ++d) {
      const int64_t want = inner[inner.size() - s.size() + d];
      ok = s[d] == want || s[d] == 1;
    }
    if (!ok)
      ctx.fail("input " + std::to_string(i) + " ('" + ctx.in(i).name + "') of shape " + shape_str(s) +
               " does not broadcast to the normalised shape " + shape_str(inner));
  }
  ctx.set_output(0, DType::Float32, x.shape);
  Shape stat = x.shape;
  for (size_t d = static_cast<size_t>(axis); d < stat.size(); ++d) stat[d] = 1;
  for (size_t i = 1; i < ctx.num_outputs(); ++i)
    if (ctx.node().outputs[i] != graph::kNoValue) ctx.set_output(i, DType::Float32, stat);
}

void reference_LayerNormalization(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const float eps = node.p<graph::LayerNormParams>().epsilon;
  const TensorView& x = in[0];
  const size_t axis = static_cast<size_t>(norm_axis(node, x.shape.size()));
  const Shape inner_shape(x.shape.begin() + static_cast<int64_t>(axis), x.shape.end());
  int64_t inner = 1;
  for (int64_t d : inner_shape) inner *= d;
  const int64_t outer = inner ? x.numel() / inner : 0;
  // Scale / B expanded to the normalised shape once.
  auto expand = [&](size_t i, float fill) {
    std::vector<float> v(static_cast<size_t>(inner), fill);
    if (i >= in.size() || in[i].data == nullptr) return v;
    auto st = broadcast_strides(in[i].shape, inner_shape);
    const float* p = in[i].as<const float>();
    if (inner_shape.empty()) v[0] = p[0];
    else for_each_broadcast(inner_shape, st, st, [&](int64_t o, int64_t ia, int64_t) { v[static_cast<size_t>(o)] = p[ia]; });
    return v;
  };
  const std::vector<float> scale = expand(1, 1.f), bias = expand(2, 0.f);
  const float* X = x.as<const float>();
  float* Y = out[0].as<float>();
  float* mean_out = out.size() > 1 && out[1].data ? out[1].as<float>() : nullptr;
  float* inv_out = out.size() > 2 && out[2].data ? out[2].as<float>() : nullptr;
  for (int64_t r = 0; r < outer; ++r) {
    const float* xr = X + r * inner;
    float* yr = Y + r * inner;
    double sum = 0, sq = 0;
    for (int64_t j = 0; j < inner; ++j) sum += xr[j];
    const double mean = sum / static_cast<double>(inner);
    for (int64_t j = 0; j < inner; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(inner) + eps);
    for (int64_t j = 0; j < inner; ++j)
      yr[j] = static_cast<float>((xr[j] - mean) * inv) * scale[static_cast<size_t>(j)] + bias[static_cast<size_t>(j)];
    if (mean_out) mean_out[r] = static_cast<float>(mean);
    if (inv_out) inv_out[r] = static_cast<float>(inv);
  }
}

}  // namespace sluice::ops
