// Output-size arithmetic shared by convolution and pooling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops/op_registry.h"

namespace sluice::ops {

// Resolves auto_pad into explicit pads ([top, left, bottom, right]) and returns the
// output spatial dims. Fails naming the node when the window does not fit.
std::vector<int64_t> window_output_dims(InferContext& ctx, const Shape& in_spatial, const std::vector<int64_t>& kernel,
                                        std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                                        std::vector<int64_t>& pads, const std::string& auto_pad, bool ceil_mode);

}  // namespace sluice::ops
