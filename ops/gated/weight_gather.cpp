#include "ops/gated/weight_gather.h"

#include <algorithm>
#include <vector>

namespace sluice::ops::gated {

void gather_weights(const float* w, int64_t c, int64_t kh, int64_t kw, const int32_t* out_ch, int64_t ko,
                    const int32_t* in_ch, int64_t ki, const onednn::BlockedOffsets& layout, float* dst) {
  const auto& A = layout.along;
  const auto kop = static_cast<int64_t>(A[0].size()), kip = static_cast<int64_t>(A[1].size());
  const int64_t taps = kh * kw;
  std::vector<int64_t> tap(static_cast<size_t>(taps));
  for (int64_t a = 0; a < kh; ++a)
    for (int64_t b = 0; b < kw; ++b)
      tap[static_cast<size_t>(a * kw + b)] = layout.offset0 + A[2][static_cast<size_t>(a)] + A[3][static_cast<size_t>(b)];
  // Output channels in groups of 16, innermost: blocked weight formats keep 16 consecutive
  // output channels together, so each (input, tap) writes one contiguous run, while the 16
  // source rows' current lines stay in L1 across the taps.
  constexpr int64_t kGroup = 16;
  const int64_t groups = (kop + kGroup - 1) / kGroup;
#pragma omp parallel for schedule(static) if (kop * kip * taps > 65536)
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t o0 = gi * kGroup, n = std::min(kGroup, kop - o0);
    const float* src[kGroup];
    int64_t fo[kGroup];
    for (int64_t r = 0; r < n; ++r) {
      src[r] = o0 + r < ko ? w + static_cast<int64_t>(out_ch[o0 + r]) * c * taps : nullptr;
      fo[r] = A[0][static_cast<size_t>(o0 + r)];
    }
    for (int64_t ji = 0; ji < kip; ++ji) {
      const int64_t fi = A[1][static_cast<size_t>(ji)];
      if (ji >= ki) {  // the primitive's padding channels
        for (int64_t t = 0; t < taps; ++t)
          for (int64_t r = 0; r < n; ++r) dst[tap[static_cast<size_t>(t)] + fi + fo[r]] = 0.f;
        continue;
      }
      const int64_t ic = static_cast<int64_t>(in_ch[ji]) * taps;
      for (int64_t t = 0; t < taps; ++t) {
        float* d = dst + tap[static_cast<size_t>(t)] + fi;
        for (int64_t r = 0; r < n; ++r) d[fo[r]] = src[r] ? src[r][ic + t] : 0.f;
      }
    }
  }
}

}  // namespace sluice::ops::gated
