#include "ops/conv/planar.h"

#include <cstring>

namespace sluice::ops::planar {

void pack(const Geometry& g, const float* x, int64_t x_stride, const int32_t* pos, int64_t k, float* planes) {
  const int64_t st = g.stride, gw = g.grid_w(), ps = g.plane(), phase_size = k * ps;
  std::memset(planes, 0, static_cast<size_t>(g.planes_size(k)) * sizeof(float));
  const int64_t work = g.h * g.w * k;
#pragma omp parallel for if (work > 65536)
  for (int64_t yy = 0; yy < g.h; ++yy) {
    const int64_t py = yy + g.pad_top;
    if (py < 0 || py >= g.padded_h()) continue;
    for (int64_t xx = 0; xx < g.w; ++xx) {
      const int64_t px = xx + g.pad_left;
      if (px < 0 || px >= g.padded_w()) continue;
      const float* src = x + (yy * g.w + xx) * x_stride;
      float* dst = planes + ((py % st) * st + px % st) * phase_size + (py / st) * gw + px / st;
      for (int64_t j = 0; j < k; ++j) dst[j * ps] = src[pos[j]];
    }
  }
}

void tap_offsets(const Geometry& g, int64_t k, int64_t* off) {
  const int64_t st = g.stride, gw = g.grid_w(), phase_size = k * g.plane();
  for (int64_t a = 0; a < g.kh; ++a)
    for (int64_t b = 0; b < g.kw; ++b) off[a * g.kw + b] = ((a % st) * st + b % st) * phase_size + (a / st) * gw + b / st;
}

}  // namespace sluice::ops::planar
