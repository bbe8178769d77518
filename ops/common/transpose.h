// 8 x 8 float transpose in AVX registers, shared by the planar pack/unpack (ops/conv/planar.cpp)
// and the NCHW <-> NHWC reorder (ops/layout/reorder.cpp).
#pragma once

#ifdef __AVX2__
#include <immintrin.h>

namespace sluice::ops::simd {

// r[0..8): 8 rows of 8 floats -> in place, its transpose.
inline void transpose8(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // u[c] (rows 0..3) and u[4 + c] (rows 4..7), 128-bit half h: column c + 4 h.
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[c + 4] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

}  // namespace sluice::ops::simd
#endif
