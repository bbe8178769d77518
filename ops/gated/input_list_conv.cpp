#include "ops/gated/input_list_conv.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "sluice/sluice.h"

namespace sluice::ops::gated {

namespace {

using simd::vf;
constexpr int64_t kL = simd::kLanes;
// A block: kP output pixels x kV vectors of output channels in accumulators, plus kV weight
// vectors and a broadcast input value: 6 x 4 + 5 of AVX-512's 32 registers, 5 x 2 + 3 of AVX2's 16.
constexpr int kV = simd::kRegs == 32 ? 4 : 2;
constexpr int kP = simd::kRegs == 32 ? 6 : 5;
constexpr int64_t kChunk = kV * kL;  // output channels per chunk

// acc[p][v] = sum over the k listed channels j and the taps t of x(pixel p, j, t) * w(ch[j], t, v).
// xb[p]: pixel p's window origin in the padded copy (k floats per pixel); toff[t]: tap t's offset
// from it; wc: this chunk's weights, [C][taps][kChunk]. acc: [kP][kChunk] floats, 64-byte aligned.
template <int P>
void block(const float* const* xb, const int64_t* toff, int64_t taps, int64_t k, const int32_t* ch, const float* wc,
           float* acc) {
  vf a[P][kV] = {};
  for (int64_t j = 0; j < k; ++j) {
    const float* wj = wc + static_cast<int64_t>(ch[j]) * taps * kChunk;
    for (int64_t t = 0; t < taps; ++t) {
      vf w[kV];
      for (int v = 0; v < kV; ++v) w[v] = *reinterpret_cast<const vf*>(wj + t * kChunk + v * kL);
      const int64_t o = toff[t] + j;
      for (int p = 0; p < P; ++p) {
        const float xv = xb[p][o];
        for (int v = 0; v < kV; ++v) a[p][v] += w[v] * xv;
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < kV; ++v) *reinterpret_cast<vf*>(acc + p * kChunk + v * kL) = a[p][v];
}

using BlockFn = void (*)(const float* const*, const int64_t*, int64_t, int64_t, const int32_t*, const float*, float*);
template <size_t... P>
constexpr std::array<BlockFn, kP> block_table(std::index_sequence<P...>) {
  return {&block<static_cast<int>(P) + 1>...};
}
constexpr auto kBlocks = block_table(std::make_index_sequence<kP>());

}  // namespace

InputListConv::InputListConv(const InputListShape& s, const float* weights, const float* bias) : s_(s) {
  if (s.kh * s.kw > kMaxTaps || s.kh < 1 || s.kw < 1)
    throw Error("internal error: the input-list conv takes 1 to " + std::to_string(kMaxTaps) + " taps, not " +
                std::to_string(s.kh * s.kw));
  hp_ = (s.oh - 1) * s.stride_h + (s.kh - 1) * s.dil_h + 1;
  wp_ = (s.ow - 1) * s.stride_w + (s.kw - 1) * s.dil_w + 1;
  chunks_ = (s.m + kChunk - 1) / kChunk;
  const int64_t taps = s.kh * s.kw;
  w_.assign(static_cast<size_t>(chunks_ * s.c * taps * kChunk), 0.f);
  for (int64_t o = 0; o < s.m; ++o)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t t = 0; t < taps; ++t)
        w_[static_cast<size_t>(((o / kChunk * s.c + c) * taps + t) * kChunk + o % kChunk)] = weights[(o * s.c + c) * taps + t];
  bias_.assign(static_cast<size_t>(chunks_ * kChunk), 0.f);
  if (bias) std::copy(bias, bias + s.m, bias_.begin());
}

size_t InputListConv::scratch_bytes() const { return static_cast<size_t>(hp_ * wp_ * s_.c) * sizeof(float) + 64; }

void InputListConv::run(const float* x, int64_t x_stride, const int32_t* pos, const int32_t* ch, int64_t k, float* y,
                        const float* sum, const graph::FusedActivation& act, void* scratch) const {
  const InputListShape& s = s_;
  auto* xp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  // The active channels, zero-padded so that every tap of every output pixel is in range.
  std::memset(xp, 0, static_cast<size_t>(hp_ * wp_ * k) * sizeof(float));
  for (int64_t iy = 0; iy < s.h; ++iy) {
    const int64_t py = iy + s.pad_top;
    if (py < 0 || py >= hp_) continue;
    for (int64_t ix = 0; ix < s.w; ++ix) {
      const int64_t px = ix + s.pad_left;
      if (px < 0 || px >= wp_) continue;
      const float* src = x + (iy * s.w + ix) * x_stride;
      float* d = xp + (py * wp_ + px) * k;
      for (int64_t j = 0; j < k; ++j) d[j] = src[pos[j]];
    }
  }
  const int64_t taps = s.kh * s.kw;
  int64_t toff[kMaxTaps];
  for (int64_t dy = 0; dy < s.kh; ++dy)
    for (int64_t dx = 0; dx < s.kw; ++dx) toff[dy * s.kw + dx] = (dy * s.dil_h * wp_ + dx * s.dil_w) * k;
  const int64_t q = s.oh * s.ow, blocks = (q + kP - 1) / kP;
  const bool relu = act.kind == graph::Activation::Relu;
  const int64_t work = k * taps * q * s.m;
#pragma omp parallel for collapse(2) schedule(static) if (work > 2000000)
  for (int64_t chunk = 0; chunk < chunks_; ++chunk)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t q0 = b * kP;
      const int P = static_cast<int>(std::min<int64_t>(kP, q - q0));
      const float* xb[kP];
      for (int p = 0; p < P; ++p) {
        const int64_t oy = (q0 + p) / s.ow, ox = (q0 + p) % s.ow;
        xb[p] = xp + (oy * s.stride_h * wp_ + ox * s.stride_w) * k;
      }
      alignas(64) float acc[kP * kChunk];
      kBlocks[static_cast<size_t>(P - 1)](xb, toff, taps, k, ch, w_.data() + chunk * s.c * taps * kChunk, acc);
      for (int p = 0; p < P; ++p) {
        float* yr = y + (q0 + p) * s.m;
        const float* sr = sum ? sum + (q0 + p) * s.m : nullptr;
        for (int v = 0; v < kV; ++v) {
          const int64_t m0 = chunk * kChunk + v * kL;
          if (m0 >= s.m) break;
          vf r = *reinterpret_cast<const vf*>(acc + p * kChunk + v * kL) + *reinterpret_cast<const vf*>(bias_.data() + m0);
          if (m0 + kL <= s.m) {
            if (sr) r += *reinterpret_cast<const vf*>(sr + m0);
            if (relu) {
              r = r > 0 ? r : 0;
            } else if (act.kind != graph::Activation::None) {
              for (int64_t l = 0; l < kL; ++l) r[l] = graph::apply_activation(act, r[l]);
            }
            *reinterpret_cast<vf*>(yr + m0) = r;
          } else {  // the last channels of M
            for (int64_t l = 0; m0 + l < s.m; ++l)
              yr[m0 + l] = graph::apply_activation(act, r[l] + (sr ? sr[m0 + l] : 0.f));
          }
        }
      }
    }
}

}  // namespace sluice::ops::gated
