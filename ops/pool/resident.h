// A max pool that reads resident planes (ops/conv/planar.h), row by row: the resident pool
// kernel runs it over the whole map, and the direct conv that feeds such a pool (a VGG stage's
// last conv) runs it on the rows it has just written, while they are in cache.
#pragma once

#include <cstdint>
#include <utility>

#include "graph/params.h"
#include "sluice/sluice.h"

namespace sluice::ops {

class ResidentPoolRows {
 public:
  // x, y: the pool's [N, C, H, W] input and output shapes; the output is NHWC or resident planes.
  ResidentPoolRows(const graph::PoolParams& p, const Shape& x, const Shape& y, bool nhwc_out);

  // The input rows [first, end) that output row oy reads (first >= end: none, the window is
  // in the padding).
  std::pair<int64_t, int64_t> window(int64_t oy) const;
  // Output rows [oy0, oy1) of one sample, every channel. x: the sample's resident input planes;
  // y: the sample's output, NHWC or resident planes (their top border with row 0, their bottom
  // border and slack with the last row). tmp: tmp_floats() floats of this thread's own.
  void rows(const float* x, int64_t oy0, int64_t oy1, float* y, float* tmp) const;
  // Row oy of one channel's output into out[0 .. ow), with its border zeros at out[-1] and out[ow].
  void pool_row(const float* x, int64_t oy, float* out) const;
  int64_t tmp_floats() const { return nhwc_out_ ? c_ * (ow_ + 2) : 0; }

  bool nhwc_out() const { return nhwc_out_; }
  int64_t batch() const { return n_; }
  int64_t channels() const { return c_; }
  int64_t in_h() const { return h_; }
  int64_t in_w() const { return w_; }
  int64_t out_h() const { return oh_; }
  int64_t out_w() const { return ow_; }
  // Floats of one sample's input (resident planes) and output.
  int64_t in_floats() const;
  int64_t out_floats() const;

 private:
  template <int KW>
  void row_s2(const float* x, int64_t iy0, int64_t iy1, int64_t pl, float* out) const;
  void wide_row(const float* x, int64_t iy0, int64_t iy1, float* out) const;

  graph::PoolParams p_;
  int64_t n_, c_, h_, w_, oh_, ow_;
  bool nhwc_out_;
};

}  // namespace sluice::ops
