// BatchNormalization (inference form): y = scale * (x - mean) / sqrt(var + eps) + bias.
#include <cmath>

#include "ops/util.h"

namespace sluice::ops {

void infer_BatchNormalization(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input X", x.dtype));
  if (x.shape.size() < 2) ctx.fail("input X must be [N, C, ...], got " + shape_str(x.shape));
  for (size_t i = 1; i <= 4; ++i) {
    ctx.expect_input(i, DType::Float32, 1);
    if (ctx.in(i).shape[0] != x.shape[1])
      ctx.fail("input " + std::to_string(i) + " ('" + ctx.in(i).name + "') has " + std::to_string(ctx.in(i).shape[0]) +
               " elements, expected one per channel (" + std::to_string(x.shape[1]) + ")");
  }
  if (ctx.num_outputs() > 1)
    for (size_t i = 1; i < ctx.num_outputs(); ++i)
      if (ctx.node().outputs[i] != graph::kNoValue) ctx.fail("training-mode outputs (running mean/var) are not supported");
  Shape y = x.shape;
  const auto& sel = ctx.node().p<graph::BatchNormParams>().channels;
  if (!sel.empty()) {
    for (int32_t c : sel)
      if (c < 0 || c >= x.shape[1]) ctx.fail("internal error: selected channel " + std::to_string(c) + " out of range");
    y[1] = static_cast<int64_t>(sel.size());
  }
  ctx.set_output(0, DType::Float32, y);
}

void reference_BatchNormalization(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::BatchNormParams>();
  const int64_t n = in[0].shape[0], c = in[0].shape[1], co = out[0].shape[1];
  const int64_t size = (n * c) != 0 ? in[0].numel() / (n * c) : 0;
  const float *X = in[0].as<const float>(), *S = in[1].as<const float>(), *B = in[2].as<const float>();
  const float *M = in[3].as<const float>(), *V = in[4].as<const float>();
  float* Y = out[0].as<float>();
  for (int64_t j = 0; j < co; ++j) {
    const int64_t ch = p.channels.empty() ? j : p.channels[static_cast<size_t>(j)];
    const float a = S[ch] / std::sqrt(V[ch] + p.epsilon), b = B[ch] - a * M[ch];
    for (int64_t i = 0; i < n; ++i) {
      const float* x = X + (i * c + ch) * size;
      float* y = Y + (i * co + j) * size;
      for (int64_t k = 0; k < size; ++k) y[k] = a * x[k] + b;
    }
  }
}

}  // namespace sluice::ops
