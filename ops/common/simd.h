// The native float vector of the build's ISA, for the kernels Sluice writes itself with GCC's
// vector extensions: 16 lanes with AVX-512, 8 with AVX, 4 otherwise. A vector_size wider
// than the ISA's registers is lowered by GCC piece by piece, often element by element: the
// 16-lane direct conv compiled for AVX2 ran 100x slower (1.7 GMAC/s). Register blocking
// depends on kRegs (32 vector registers with AVX-512, 16 without).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

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

// Allocator for buffers a kernel reads in whole vectors: 64-byte aligned, so no vector load
// at a multiple of kLanes floats from the start crosses a cache line (std::vector's default
// allocation is only 16-byte aligned: half the 32-byte loads of an AVX2 kernel split lines).
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <class U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};
using AlignedFloats = std::vector<float, Aligned64<float>>;

}  // namespace sluice::ops::simd
