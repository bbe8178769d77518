// The gated conv's per-input weights: the (k_out x k_in x kh x kw) block of the active output
// and input channels (design.md §4: cost k_out * k_in * kh * kw, small next to the conv),
// gathered from the model's OIHW tensor straight into the layout the compact oneDNN primitive
// runs on: one pass, no plain intermediate and no reorder over it.
#pragma once

#include <cstdint>

#include "ops/common/onednn.h"

namespace sluice::ops::gated {

// dst: the primitive's weights buffer (layout: blocked_offsets of its weights_desc, dims
// [k_out, k_in, kh, kw] padded by its blocks); padding elements are written as zeros.
// w: [M, C, kh, kw]; out_ch / in_ch: the model channels of compact channels 0..k-1.
void gather_weights(const float* w, int64_t c, int64_t kh, int64_t kw, const int32_t* out_ch, int64_t ko,
                    const int32_t* in_ch, int64_t ki, const onednn::BlockedOffsets& layout, float* dst);

}  // namespace sluice::ops::gated
