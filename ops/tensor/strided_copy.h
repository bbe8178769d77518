// Copies elements of any dtype from a strided source into a dense destination:
// the one loop behind Transpose, Slice, Expand and Pad.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::ops {

// dst[i] = src[offset + sum(idx_d * src_strides_d)] for every index of `shape`.
inline void strided_copy(const std::byte* src, int64_t offset, const std::vector<int64_t>& src_strides, std::byte* dst,
                         const std::vector<int64_t>& shape, size_t elem) {
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  if (total == 0) return;
  const size_t rank = shape.size();
  std::vector<int64_t> idx(rank, 0);
  int64_t at = offset;
  for (int64_t o = 0; o < total; ++o) {
    std::copy_n(src + at * static_cast<int64_t>(elem), elem, dst + o * static_cast<int64_t>(elem));
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < shape[d]) {
        at += src_strides[d];
        break;
      }
      at -= src_strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

}  // namespace sluice::ops
