// Zero-padded, phase-split planar copies of NHWC activations, for the direct convolution
// kernels that Sluice writes itself (the gated conv's small-map kernel, the sparse conv).
//
// Each channel becomes a plane of the padded input with its rows flattened; a stride s is
// handled by splitting it into s x s phase planes (phase (a, b) holds padded[s*y + a][s*x + b]),
// so that tap (i, j) reads phase (i % s, j % s) at offset (i / s) * grid_w + j / s: for every
// tap, the output pixels q = oy * grid_w + ox of a row block read one contiguous run of floats.
// The grid_w - ow extra columns per row are computed and dropped.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/params.h"

namespace sluice::ops::planar {

constexpr int64_t kBlock = 64;  // flat output pixels per register block (4 vectors of 16)

struct Geometry {
  int64_t h, w, kh, kw, oh, ow;
  int64_t pad_top, pad_left;  // bottom/right follow from oh, ow
  int64_t stride = 1;         // equal on both axes
  int64_t row_align = 1;      // grid_w rounded up to a multiple of this (16: aligned tap rows)
  // A grid narrower than the padded width (narrow_grid says when that is exact), or 0.
  int64_t narrow_w = 0;

  int64_t padded_w() const { return (ow - 1) * stride + kw; }
  int64_t padded_h() const { return (oh - 1) * stride + kh; }
  int64_t grid_w() const {
    return narrow_w > 0 ? narrow_w
                        : ((padded_w() + stride - 1) / stride + row_align - 1) / row_align * row_align;
  }
  int64_t grid_h() const { return (padded_h() + stride - 1) / stride; }
  // Output pixels on the flat grid, rounded up to whole blocks.
  int64_t flat_out() const { return (oh * grid_w() + kBlock - 1) / kBlock * kBlock; }
  // One channel's phase plane, with slack so the last block's reads stay inside it.
  int64_t plane() const { return (grid_h() * grid_w() + kBlock + grid_w() + kw + 15) / 16 * 16; }
  int64_t phases() const { return stride * stride; }
  // Floats of a planar copy of k channels.
  int64_t planes_size(int64_t k) const { return phases() * k * plane(); }
};

// Whether g's grid may be `to` columns wide instead of grid_w() (fewer), with row_align 1: the
// input's columns still all fit, and a tap that runs past a row's end for a real output pixel
// reads the next row's first columns, which are left padding (zeros), as the columns it
// should have read (right padding) are. Outputs at grid columns >= ow read anything. A 7x7
// stride-2 pad-3 stem (grid 115, ow + 2 = 114) and 5x5 stride-1 pad-2 convs qualify.
inline bool narrow_grid(const Geometry& g, int64_t to) {
  if (g.row_align != 1 || g.narrow_w != 0 || to <= 0 || to > g.grid_w()) return false;
  const int64_t st = g.stride;
  if (g.pad_left + g.w > to * st) return false;  // a real column would not fit
  const int64_t wrap = g.ow - 1 + (g.kw - 1) / st - to;  // the last wrapped column, if >= 0
  return wrap < 0 || wrap * st + st - 1 < g.pad_left;
}

// Copies channels pos[0..k) of the NHWC sample x (x_stride floats per pixel) into `planes`
// (planes_size(k) floats), zero padding included. With shifts > 1 it writes that many
// copies, planes_size(k) floats apart, copy j shifted left by j floats (copy_j[i] =
// copy_0[i + j]: aligned reads for horizontal taps). Stride 1 with runs of 16 consecutive
// channels goes through register transposes of 16 x 16 (AVX-512) or 8 x 8 (AVX2) tiles.
// What pack reads: an NHWC sample (x_stride floats per pixel), resident planes of the input
// map (below), wide or not, or an NCHW sample (channel planes of h x w; x_stride unused).
enum class Source { Nhwc, Resident, ResidentWide, Nchw };
void pack(const Geometry& g, const float* x, int64_t x_stride, const int32_t* pos, int64_t k, float* planes,
          int64_t shifts = 1, Source from = Source::Nhwc);

// off[i * kw + j]: where tap (i, j) of channel 0 starts, relative to the output pixel, in a
// planar copy of k channels (channel c adds c * plane()). kh * kw <= 64. With shifts > 1 (the
// copies pack(..., shifts) writes), the tap's horizontal shift j / stride picks the copy
// instead of moving the read: with row_align 16 every tap then reads aligned vectors.
void tap_offsets(const Geometry& g, int64_t k, int64_t* off, int64_t shifts = 1);

// The copies aligned reads need: one per horizontal tap shift.
inline int64_t aligned_shifts(const Geometry& g) { return (g.kw - 1) / g.stride + 1; }

// The planar results of k output channels (channel j at planes + j * flat_out(), flat grid
// positions) back to NHWC, with the epilogue:
//   y[p * y_stride + j] = act(planes[j][flat(p)] + bias[j] + sum[p * sum_stride + j])
// for every output pixel p; bias and sum may be null. Tiles of 16 x 16 (AVX-512) or 8 x 8
// (AVX2) are transposed in registers, with the bias, sum and Relu on the vectors.
void unpack(const Geometry& g, const float* planes, int64_t k, float* y, int64_t y_stride, const float* bias,
            const float* sum, int64_t sum_stride, const graph::FusedActivation& act);

// The same epilogue for flat positions q0 .. q0 + npx only, read from src[j * src_stride + i]
// (flat position q0 + i of channel j): a kernel that holds a block of results in cache writes
// it out directly. Flat positions outside the output (the grid's extra columns, the last
// block's slack) are skipped.
void store_block(const Geometry& g, const float* src, int64_t src_stride, int64_t q0, int64_t npx, int64_t k, float* y,
                 int64_t y_stride, const float* bias, const float* sum, int64_t sum_stride,
                 const graph::FusedActivation& act);

// Resident planes: an activation kept in planar form between the convs that read it
// (graph::Layout::Planar), so that it is never written as NHWC and packed again. Per sample,
// channel c is plane c of resident(h, w).plane() floats: exactly what pack writes for a 3x3,
// stride-1, pad-1 conv on the same map (rows of w + 2 floats with a zero border of one pixel,
// zero slack after the bottom border row). Such a conv reads it as it is.
// Wide resident planes (graph::Value::wide_rows): the same with rows rounded up to a multiple of
// 16 floats (zeros after the right border), as the sparse convs' aligned variants pack their
// input: between sparse convs, where those rows cost at most 15% (wide_rows_pay), so that such
// a reader takes them as they are.
inline Geometry resident(int64_t h, int64_t w, bool wide = false) {
  return {h, w, 3, 3, h, w, 1, 1, 1, wide ? 16 : 1};
}
inline bool wide_rows_pay(int64_t w) {
  const int64_t rw = w + 2, wide = (rw + 15) / 16 * 16;
  return wide != rw && wide * 100 <= rw * 115;
}
// Floats after the last plane of a resident activation: a sparse conv that reads the planes
// as they are (ops/sparse) may read up to two blocks and a vector past them, into results
// it drops.
constexpr int64_t kResidentSlack = 2 * kBlock + 16;
// Floats of a 4-D [N, C, H, W] activation in resident planes.
inline int64_t resident_floats(const std::vector<int64_t>& nchw, bool wide = false) {
  return nchw[0] * nchw[1] * resident(nchw[2], nchw[3], wide).plane() + kResidentSlack;
}
// Where pixel (y, x) of a w-wide map sits in its resident plane.
inline int64_t resident_index(int64_t w, int64_t y, int64_t x, bool wide = false) {
  return (y + 1) * (wide ? (w + 2 + 15) / 16 * 16 : w + 2) + x + 1;
}
// Zeroes the part of k resident h x w planes that no output row covers: the top border row, and
// from the bottom border row to the end of the plane. (store_block_resident writes each row's
// left and right border.)
void clear_resident_borders(int64_t h, int64_t w, int64_t k, float* planes);
// store_block, writing resident planes of the output map (channel j at y + j *
// resident(oh, ow, wide).plane()) instead of NHWC; `sum`, if any, is in the same form. Each row's
// border zeros are written with the row's first and last pixel, the top border row with the
// map's first pixel, and the bottom border row and the slack after it with its last: a
// producer that stores every pixel once leaves whole planes (clear_resident_borders not needed).
void store_block_resident(const Geometry& g, const float* src, int64_t src_stride, int64_t q0, int64_t npx, int64_t k,
                          float* y, const float* bias, const float* sum, const graph::FusedActivation& act,
                          bool wide = false);
// Adds a residual in resident planes of the output map to flat positions q0 .. q0 + npx of k
// planar results (dst[j * dst_stride + i] is flat position q0 + i of channel j), for an NHWC
// output that store_block then writes without a sum.
void add_resident_sum(const Geometry& g, float* dst, int64_t dst_stride, int64_t q0, int64_t npx, int64_t k,
                      const float* sum, bool wide = false);
// Adds an NHWC residual (pixel p's channel j at sum[p * sum_stride + j]) to flat positions q0 ..
// q0 + npx of k planar results, for resident output that store_block_resident then writes
// without a sum.
void add_nhwc_sum(const Geometry& g, float* dst, int64_t dst_stride, int64_t q0, int64_t npx, int64_t k,
                  const float* sum, int64_t sum_stride);
// Rows oy0 .. oy1 of an h x w NHWC map of k channels (x: pixel (oy0, 0); x_stride floats per
// pixel) into its resident planes (wide or not), each row's borders included, the top border
// row with row 0 and the bottom one and the slack with row h - 1. tmp: k x (w rounded up to
// 16) floats.
void nhwc_rows_to_resident(const float* x, int64_t x_stride, int64_t k, int64_t h, int64_t w, int64_t oy0, int64_t oy1,
                           float* planes, bool wide, float* tmp);
// unpack's counterpart: the whole output, borders included, into resident planes.
void unpack_resident(const Geometry& g, const float* planes, int64_t k, float* y, const float* bias, const float* sum,
                     const graph::FusedActivation& act);

}  // namespace sluice::ops::planar
