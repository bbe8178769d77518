// MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, GlobalLpPool: shape inference and
// reference kernels (NCHW; windowed pools 2-D, 1-D ones lifted to 2-D by graph/passes/lift_1d.cpp).
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/conv/window.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {
void infer_pool(InferContext& ctx) {
  auto& p = ctx.node().p<graph::PoolParams>();
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input", x.dtype));
  if (x.shape.size() != 4) ctx.fail("only 2-D pooling is supported: input must be [N, C, H, W], got " + shape_str(x.shape));
  Shape out = {x.shape[0], x.shape[1]};
  const bool explicit_pads = p.auto_pad.empty() || p.auto_pad == "NOTSET";
  for (int64_t d : window_output_dims(ctx, {x.shape[2], x.shape[3]}, p.kernel_shape, p.strides, p.dilations, p.pads,
                                      p.auto_pad, p.ceil_mode))
    out.push_back(d);
  // A pad as large as the kernel puts whole windows in the padding, whose pool has no answer
  // (ONNX Runtime and PyTorch refuse it too).
  const size_t r = p.kernel_shape.size();
  for (size_t i = 0; explicit_pads && i < r && p.pads.size() == 2 * r; ++i)
    if (p.pads[i] >= p.kernel_shape[i] || p.pads[i + r] >= p.kernel_shape[i])
      ctx.fail("pads " + ints_str(p.pads) + " are not all smaller than kernel_shape " + ints_str(p.kernel_shape) +
               ": some windows would lie wholly in the padding (pad each side by less than the kernel)");
  p.auto_pad = "NOTSET";
  ctx.set_output(0, DType::Float32, out);
}

enum class Kind { Max, Average, Lp };

// Lp: (sum over the window's taps inside the map of |x|^p)^(1/p); padding adds nothing.
template <Kind kKind>
void pool(const graph::PoolParams& p, const TensorView& x, const TensorView& y) {
  constexpr bool kMax = kKind == Kind::Max;
  const double order = static_cast<double>(p.p);
  const int64_t planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3], oh = y.shape[2], ow = y.shape[3];
  const float* X = x.as<const float>();
  float* Y = y.as<float>();
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        // Max from the lowest float: a window of -inf gives -FLT_MAX, as ONNX Runtime, and one of NaN
        // (skipped) too, where ONNX Runtime gives NaN (README, "MaxPool skips NaN taps").
        float acc = kMax ? std::numeric_limits<float>::lowest() : 0.f;
        double lp = 0;
        int64_t count = 0, padded_count = 0;
        for (int64_t ky = 0; ky < p.kernel_shape[0]; ++ky) {
          const int64_t iy = oy * p.strides[0] - p.pads[0] + ky * p.dilations[0];
          for (int64_t kx = 0; kx < p.kernel_shape[1]; ++kx) {
            const int64_t ix = ox * p.strides[1] - p.pads[1] + kx * p.dilations[1];
            // Positions inside input + explicit pads count for count_include_pad;
            // the ceil_mode overhang beyond the pads never does.
            if (iy < h + p.pads[2] && ix < w + p.pads[3]) ++padded_count;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            const float v = X[(pl * h + iy) * w + ix];
            if constexpr (kKind == Kind::Lp)
              lp += std::pow(std::fabs(static_cast<double>(v)), order);
            else
              acc = kMax ? std::max(acc, v) : acc + v;
            ++count;
          }
        }
        if (kKind == Kind::Average)
          acc = acc / static_cast<float>(p.count_include_pad ? padded_count : std::max<int64_t>(count, 1));
        if (kKind == Kind::Lp) acc = static_cast<float>(std::pow(lp, 1.0 / order));
        Y[(pl * oh + oy) * ow + ox] = acc;
      }
}
}  // namespace

void infer_MaxPool(InferContext& ctx) { infer_pool(ctx); }
void infer_AveragePool(InferContext& ctx) { infer_pool(ctx); }
void infer_LpPool(InferContext& ctx) { infer_pool(ctx); }

void reference_MaxPool(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  pool<Kind::Max>(node.p<graph::PoolParams>(), in[0], out[0]);
}
void reference_AveragePool(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  pool<Kind::Average>(node.p<graph::PoolParams>(), in[0], out[0]);
}
void reference_LpPool(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  pool<Kind::Lp>(node.p<graph::PoolParams>(), in[0], out[0]);
}

void infer_GlobalAveragePool(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input", x.dtype));
  if (x.shape.size() < 3) ctx.fail("input must be [N, C, spatial...], got " + shape_str(x.shape));
  Shape out = x.shape;
  std::fill(out.begin() + 2, out.end(), 1);
  ctx.set_output(0, DType::Float32, out);
}

void infer_GlobalMaxPool(InferContext& ctx) { infer_GlobalAveragePool(ctx); }
void infer_GlobalLpPool(InferContext& ctx) { infer_GlobalAveragePool(ctx); }

namespace {
// Y[plane] = reduce(the plane's values, their count), for each (sample, channel) plane of X.
template <class Reduce>
void per_plane(std::span<const TensorView> in, std::span<TensorView> out, Reduce reduce) {
  const int64_t planes = in[0].shape[0] * in[0].shape[1];
  const int64_t size = in[0].numel() / std::max<int64_t>(planes, 1);
  const float* X = in[0].as<const float>();
  float* Y = out[0].as<float>();
  for (int64_t pl = 0; pl < planes; ++pl) Y[pl] = reduce(X + pl * size, size);
}
}  // namespace

// (sum of |x|^p over each plane)^(1/p).
void reference_GlobalLpPool(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const double order = static_cast<double>(node.p<graph::PoolParams>().p);
  per_plane(in, out, [&](const float* x, int64_t size) {
    double acc = 0;
    for (int64_t i = 0; i < size; ++i) acc += std::pow(std::fabs(static_cast<double>(x[i])), order);
    return static_cast<float>(std::pow(acc, 1.0 / order));
  });
}

// The largest value of each plane; NaNs are passed over, as in ONNX Runtime.
void reference_GlobalMaxPool(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  per_plane(in, out, [](const float* x, int64_t size) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < size; ++i) m = std::max(m, x[i]);  // max(m, NaN) is m
    return m;
  });
}

void reference_GlobalAveragePool(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  per_plane(in, out, [](const float* x, int64_t size) {
    double acc = 0;
    for (int64_t i = 0; i < size; ++i) acc += x[i];
    return static_cast<float>(acc / static_cast<double>(size));
  });
}

}  // namespace sluice::ops
