#pragma once

#include "sluice/sluice.h"

namespace sluice::ops {
// Copies a float [N, C, H, W] tensor from NCHW to NHWC memory order (or back).
void reorder_nchw_nhwc(const float* src, float* dst, const Shape& logical_nchw, bool to_nhwc);
}  // namespace sluice::ops
