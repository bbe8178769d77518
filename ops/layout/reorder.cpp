// SluiceReorder: converts a 4-D tensor between NCHW and NHWC memory layouts.
// The logical (ONNX) shape stays [N, C, H, W]; only the memory order changes.
#include <cstring>

#include "ops/layout/reorder.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_SluiceReorder(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.shape.size() != 4) ctx.fail("reorder needs a 4-D tensor, got " + shape_str(x.shape));
  ctx.set_output(0, x.dtype, x.shape);
}

void reorder_nchw_nhwc(const float* src, float* dst, const Shape& s, bool to_nhwc) {
  const int64_t n = s[0], c = s[1], hw = s[2] * s[3];
#pragma omp parallel for collapse(2) if (n * c * hw > 65536)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < hw; ++i) {
        const int64_t nchw = (b * c + ch) * hw + i, nhwc = (b * hw + i) * c + ch;
        if (to_nhwc)
          dst[nhwc] = src[nchw];
        else
          dst[nchw] = src[nhwc];
      }
}

void reference_SluiceReorder(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ReorderParams>();
  if (in[0].dtype != DType::Float32) throw Error("reorder supports float32 only");
  if (p.from == p.to) {
    std::memcpy(out[0].data, in[0].data, static_cast<size_t>(in[0].numel()) * 4);
    return;
  }
  reorder_nchw_nhwc(in[0].as<const float>(), out[0].as<float>(), in[0].shape, p.to == graph::Layout::NHWC);
}

}  // namespace sluice::ops
