// LRN (local response normalisation, AlexNet and GoogLeNet as converted from Caffe): each value
// divided by (bias + alpha / size * the sum of squares over a window of `size` channels around
// its own) ^ beta; the window is channels max(0, c - floor((size-1)/2)) .. min(C-1, c +
// ceil((size-1)/2)), as ONNX defines it.
#include <algorithm>
#include <cmath>

#include "ops/util.h"

namespace sluice::ops {

void infer_LRN(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input", x.dtype));
  if (x.shape.size() < 2) ctx.fail("input must be [N, C, spatial...], got " + shape_str(x.shape));
  ctx.set_output(0, DType::Float32, x.shape);
}

void reference_LRN(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::LrnParams>();
  const Shape& s = in[0].shape;
  const int64_t n = s[0], c = s[1], size = c && n ? in[0].numel() / (n * c) : 0;
  const int64_t before = (p.size - 1) / 2, after = p.size - 1 - before;  // floor and ceil of (size-1)/2
  const float* X = in[0].as<const float>();
  float* Y = out[0].as<float>();
  const double scale = static_cast<double>(p.alpha) / static_cast<double>(p.size);
#pragma omp parallel for collapse(2) if (n * c * size > 65536)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t lo = std::max<int64_t>(0, ch - before), hi = std::min(c - 1, ch + after);
      const float* xb = X + b * c * size;
      float* y = Y + (b * c + ch) * size;
      for (int64_t i = 0; i < size; ++i) {
        double sq = 0;
        for (int64_t k = lo; k <= hi; ++k) sq += static_cast<double>(xb[k * size + i]) * xb[k * size + i];
        y[i] = static_cast<float>(xb[ch * size + i] / std::pow(p.bias + scale * sq, static_cast<double>(p.beta)));
      }
    }
}

}  // namespace sluice::ops
