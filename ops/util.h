// Small helpers shared by shape inference and reference kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops/op_registry.h"

namespace sluice::ops {

// Normalises a possibly negative axis into [0, rank); fails on out-of-range.
int64_t normalize_axis(InferContext& ctx, int64_t axis, int64_t rank);
int64_t normalize_axis(int64_t axis, int64_t rank);  // unchecked (after inference)

// Numpy-style broadcast of two shapes; fails naming the node when incompatible.
Shape broadcast_shapes(InferContext& ctx, const Shape& a, const Shape& b);

// Element count with overflow/size checks (limit: 2^40 elements).
int64_t checked_numel(InferContext& ctx, const Shape& s);

// Row-major strides of `shape`, and strides of `in` broadcast to `out` (0 where
// the dimension is broadcast). `in` is right-aligned against `out`.
std::vector<int64_t> strides_of(const Shape& shape);
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);

// An attribute's or an input's integer values as "[a, b, c]", negatives as they are (shape_str
// prints a negative dimension as "?", the notation of a dynamic one: wrong for pads, axes,
// perms or a Reshape target's -1).
std::string ints_str(const std::vector<int64_t>& v);

// Softmax, LogSoftmax and Hardmax over `len` entries `inner` apart, in `outer` blocks: one axis
// (opset 13+), or the flattened block from the axis on (legacy_2d, opset < 13).
struct SoftmaxBlocks {
  int64_t outer = 1, len = 1, inner = 1;
};
inline SoftmaxBlocks softmax_blocks(const graph::SoftmaxParams& p, const Shape& s) {
  SoftmaxBlocks b;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < p.axis) b.outer *= s[i];
    else if (i == p.axis || p.legacy_2d) b.len *= s[i];
    else b.inner *= s[i];
  }
  return b;
}

// Reads an integer tensor (int64 or int32) into int64 values.
std::vector<int64_t> to_int64_vector(const Tensor& t);
std::vector<int64_t> to_int64_vector(const TensorView& t);

// Calls f(out_index, a_index, b_index) for every element of a broadcast binary op.
template <class F>
void for_each_broadcast(const Shape& out, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, F&& f) {
  const size_t rank = out.size();
  int64_t total = 1;
  for (int64_t d : out) total *= d;
  if (total == 0) return;
  std::vector<int64_t> idx(rank, 0);
  int64_t ia = 0, ib = 0;
  for (int64_t o = 0; o < total; ++o) {
    f(o, ia, ib);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < out[d]) {
        ia += sa[d];
        ib += sb[d];
        break;
      }
      ia -= sa[d] * (out[d] - 1);
      ib -= sb[d] * (out[d] - 1);
      idx[d] = 0;
    }
  }
}

// Dispatches a generic lambda on the C++ type of a dtype: f(T{}) .
template <class F>
void dispatch_numeric(DType t, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); break;
    case DType::Float64: f(double{}); break;
    case DType::Int64: f(int64_t{}); break;
    case DType::Int32: f(int32_t{}); break;
    case DType::Int8: f(int8_t{}); break;
    case DType::UInt8: f(uint8_t{}); break;
    case DType::Bool: f(bool{}); break;
    default: throw Error(std::string("unsupported dtype ") + dtype_name(t));
  }
}

}  // namespace sluice::ops
