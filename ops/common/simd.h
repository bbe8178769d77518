// The native float vector of the build's ISA, for the kernels Sluice writes itself with GCC's
// vector extensions: 16 lanes with AVX-512, 8 with AVX, 4 otherwise. A vector_size wider
// than the ISA's registers is lowered by GCC piece by piece, often element by element: the
// 16-lane direct conv compiled for AVX2 ran 100x slower (1.7 GMAC/s). Register blocking
// depends on kRegs (32 vector registers with AVX-512, 16 without).
#pragma once

#include <cstdint>

namespace sluice::ops::simd {

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16, kRegs = 32;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8, kRegs = 16;
#else
constexpr int64_t kLanes = 4, kRegs = 16;
#endif

// kLanes floats; aligned(4) so loads and stores from any float address are allowed.
typedef float vf __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));

}  // namespace sluice::ops::simd
