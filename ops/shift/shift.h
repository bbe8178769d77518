// Shift runs shared by the shift kernel and the fused shift + 1x1 conv kernel.
#pragma once

#include <memory>
#include <vector>

#include "graph/params.h"
#include "ops/kernel.h"

namespace sluice::ops::shift {

// Output channels [out0, out0 + len) read input channels [src0, src0 + len) moved by (dy, dx).
struct Run {
  int32_t out0, src0, len, dy, dx;
};
std::vector<Run> runs_of(const graph::ShiftParams& p);

// Rows [y0, y1) of one NHWC sample x [h, w, c] shifted into y [(y1 - y0), w, m].
void shift_rows(const std::vector<Run>& runs, const float* x, int64_t h, int64_t w, int64_t c, int64_t m, int64_t y0,
                int64_t y1, float* y);

}  // namespace sluice::ops::shift

namespace sluice::ops {

// The two kernels for a 1x1 conv with a fused pre_shift (nullptr where one does not apply:
// the offset-read kernel needs AVX-512 or AVX2); make_shift_conv (ops/kernel.h) times both and keeps
// the faster.
std::unique_ptr<Kernel> make_shift_conv_offset(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_shift_conv_tiled(const graph::Graph& g, const graph::Node& n);

}  // namespace sluice::ops
