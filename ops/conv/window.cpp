#include "ops/conv/window.h"

#include "ops/util.h"

namespace sluice::ops {

std::vector<int64_t> window_output_dims(InferContext& ctx, const Shape& in_spatial, const std::vector<int64_t>& kernel,
                                        std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                                        std::vector<int64_t>& pads, const std::string& auto_pad, bool ceil_mode) {
  const size_t r = in_spatial.size();
  if (kernel.size() != r || strides.size() != r || dilations.size() != r || pads.size() != 2 * r)
    ctx.fail("kernel_shape/strides/dilations/pads do not match the " + std::to_string(r) + " spatial dims of the input");
  std::vector<int64_t> out(r);
  for (size_t i = 0; i < r; ++i) {
    if (kernel[i] <= 0) ctx.fail("kernel_shape " + ints_str(kernel) + " has a size that is not positive");
    if (strides[i] <= 0 || dilations[i] <= 0) ctx.fail("strides and dilations must be positive");
    if (pads[i] < 0 || pads[i + r] < 0) ctx.fail("negative pads are not allowed: " + ints_str(pads));
    // Beyond 2^40 no window or padded input fits in memory: refused here, before the sums below overflow.
    constexpr int64_t kHuge = int64_t{1} << 40;
    if (kernel[i] > kHuge || dilations[i] > kHuge / kernel[i] || pads[i] > kHuge || pads[i + r] > kHuge)
      ctx.fail("kernel_shape " + ints_str(kernel) + ", dilations " + ints_str(dilations) + " or pads " + ints_str(pads) +
               " are too large (the window or the padded input would span more than 2^40 elements)");
    const int64_t in = in_spatial[i], k = (kernel[i] - 1) * dilations[i] + 1, s = strides[i];
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      int64_t o = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (o - 1) * s + k - in);
      int64_t small = total / 2, big = total - small;
      pads[i] = auto_pad == "SAME_UPPER" ? small : big;
      pads[i + r] = auto_pad == "SAME_UPPER" ? big : small;
    } else if (auto_pad == "VALID") {
      pads[i] = pads[i + r] = 0;
    }
    const int64_t span = in + pads[i] + pads[i + r] - k;
    // ceil_mode: one window that hangs over the end of a smaller padded input is still an
    // output (ONNX's ceil((in + pads - k) / s + 1) = 1, as ONNX Runtime and PyTorch compute it).
    if (span < 0 && !(ceil_mode && span > -s))
      ctx.fail("the window (kernel " + std::to_string(kernel[i]) + ", dilation " + std::to_string(dilations[i]) +
               ") is larger than the padded input (" + std::to_string(in + pads[i] + pads[i + r]) + ") in spatial dim " +
               std::to_string(i));
    int64_t o = span < 0 ? 1 : (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    // With ceil_mode the last window must start inside the input or its begin padding.
    if (ceil_mode && (o - 1) * s >= in + pads[i]) --o;
    // One window: the stride is never applied. A huge one (2^31) would overflow oneDNN's int
    // descriptors; the smallest stride that still gives one window (floor and ceil mode) is exact.
    if (o == 1) strides[i] = std::min(s, std::max(span + 1, in + pads[i]));
    out[i] = o;
  }
  return out;
}

}  // namespace sluice::ops
