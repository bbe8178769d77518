#include "ops/gated/direct_conv.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <omp.h>

#include "ops/common/simd.h"
#include "ops/conv/planar.h"

namespace sluice::ops::gated {

namespace {

using simd::vf;
constexpr int64_t kVec = simd::kLanes, kBlock = planar::kBlock;  // 64 flat pixels per block
// A block runs in passes of kPassVecs vectors: 1 pass of 4 x 16 lanes with AVX-512, 2 of 4 x 8
// with AVX2. Output channels per block: kRows x kPassVecs accumulators, kPassVecs loaded input
// vectors and kRows broadcast weights must fit in the vector registers.
constexpr int64_t kPassVecs = 4;
constexpr int kRows = simd::kRegs == 32 ? 6 : 2;

// acc[r][v] += x[tap] * w[r][tap] over the active input channels and the taps, for R output
// channels x V vectors of flat output pixels starting at qp (one pass).
template <int R, int V>
void pass(const float* planes, int64_t plane_size, const int64_t* tap_off, int64_t taps, int64_t ki,
          const int32_t* in_ch, const float* const* wrow, float* out, int64_t out_stride, int64_t qp) {
  vf acc[R][V] = {};
  for (int64_t j = 0; j < ki; ++j) {
    const float* xp = planes + j * plane_size + qp;
    const int64_t wo = static_cast<int64_t>(in_ch[j]) * taps;
    for (int64_t t = 0; t < taps; ++t) {
      const float* xt = xp + tap_off[t];
      vf x[V];
      for (int v = 0; v < V; ++v) x[v] = *reinterpret_cast<const vf*>(xt + v * kVec);
      for (int r = 0; r < R; ++r) {
        const float w = wrow[r][wo + t];
        for (int v = 0; v < V; ++v) acc[r][v] += x[v] * w;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) *reinterpret_cast<vf*>(out + r * out_stride + qp + v * kVec) = acc[r][v];
}

using PassFn = void (*)(const float*, int64_t, const int64_t*, int64_t, int64_t, const int32_t*, const float* const*,
                        float*, int64_t, int64_t);
template <int R, size_t... V>
constexpr std::array<PassFn, kPassVecs> pass_row(std::index_sequence<V...>) {
  return {&pass<R, static_cast<int>(V) + 1>...};
}
template <size_t... R>
constexpr std::array<std::array<PassFn, kPassVecs>, kRows> pass_table(std::index_sequence<R...>) {
  return {pass_row<static_cast<int>(R) + 1>(std::make_index_sequence<kPassVecs>())...};
}
constexpr auto kPassFns = pass_table(std::make_index_sequence<kRows>());  // [rows - 1][vectors - 1]

}  // namespace

bool direct_conv_supported(const int64_t* strides, const int64_t* dilations) {
  return strides[0] == strides[1] && strides[0] >= 1 && strides[0] <= 2 && dilations[0] == 1 && dilations[1] == 1;
}

size_t direct_conv_scratch(const DirectConvShape& s) {
  const planar::Geometry g = s.geometry();
  return static_cast<size_t>(g.planes_size(s.c) + s.m * g.flat_out() + s.m) * sizeof(float) + 128;
}

void direct_conv(const DirectConvShape& s, const float* x, int64_t x_stride, const int32_t* in_pos,
                 const int32_t* in_ch, int64_t ki, const float* weights, const float* bias, const int32_t* out_ch,
                 int64_t ko, float* y, void* scratch, const DirectEpilogue& epilogue) {
  if (ko <= 0) return;  // no output channel (the gated conv handles that case before calling)
  const planar::Geometry geo = s.geometry();
  const int64_t ps = geo.plane(), q = geo.flat_out(), taps = s.kh * s.kw;
  auto* planes = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  float* outp = planes + geo.planes_size(ki);
  planar::pack(geo, x, x_stride, in_pos, ki, planes);
  int64_t tap_off[64];
  planar::tap_offsets(geo, ki, tap_off);
  // Blocks of up to kRows output channels x 64 flat output pixels (the 2 pad columns per row
  // are computed and dropped: they keep every tap a contiguous read). The channels split into
  // groups as equal as possible: 19 as 5+5+5+4, not 6+6+6+1, whose 1-channel block would do 4
  // FMAs per 5 loads.
  const int64_t groups = (ko + kRows - 1) / kRows, qblocks = q / kBlock, used = s.oh * geo.grid_w();
  const int64_t work = ko * ki * taps * s.oh * s.ow;
  float* bias_c = outp + ko * q;
  for (int64_t j = 0; j < ko; ++j) bias_c[j] = bias[out_ch[j]];
  auto block = [&](int64_t g, int64_t qb) {
    const int64_t j0 = ko * g / groups, rows = ko * (g + 1) / groups - j0;
    const float* wrow[kRows];
    for (int64_t r = 0; r < kRows; ++r)
      wrow[r] = weights + static_cast<int64_t>(out_ch[std::min(j0 + r, ko - 1)]) * s.c * taps;
    float* out = outp + j0 * q;
    // The last block stops at the last vector that holds output pixels (on a 14x14 map the
    // 224 grid pixels end half-way through the fourth block).
    const int64_t vecs = std::min(kBlock, used - qb * kBlock + kVec - 1) / kVec;
    for (int64_t v0 = 0; v0 < vecs; v0 += kPassVecs)
      kPassFns[rows - 1][std::min(kPassVecs, vecs - v0) - 1](planes, ps, tap_off, taps, ki, in_ch, wrow, out, q,
                                                              qb * kBlock + v0 * kVec);
  };
  // Large maps: tiles of blocks, every group of a tile, then the tile straight back to NHWC
  // while its results are in cache. A tile's input window stays in cache across the groups,
  // and each group's weights across the tile's blocks. Group by group over the whole map, a
  // 64-channel 224x224 input (13 MB of planes) came from L3 once per group, and a second pass
  // read back a planar result of the same size: that layer took ~4x as long.
  const int64_t tile = std::clamp<int64_t>(16384 / (ko * kBlock), 1, 16), tiles = (qblocks + tile - 1) / tile;
  if (tiles >= 8) {
#pragma omp parallel for schedule(static) if (work > 200000)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t qb0 = t * tile, qb1 = std::min(qblocks, qb0 + tile);
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t qb = qb0; qb < qb1; ++qb) block(g, qb);
      planar::store_block(geo, outp + qb0 * kBlock, q, qb0 * kBlock, (qb1 - qb0) * kBlock, ko, y, ko, bias_c,
                          epilogue.sum, epilogue.sum_stride, epilogue.act);
    }
    return;
  }
  // Small maps: then planar -> compact NHWC, with the bias (and the epilogue). With at least
  // two blocks per thread, each thread takes a contiguous range of blocks, group by group: it
  // then reads the rows of the planes that it packed itself (pack splits the rows the same
  // way). Every (group, block) pair shared out over the threads instead had each thread read
  // the whole input from both cores' caches: a 20-channel 3x3 conv at 56x56 on 2 threads took
  // a median 197 us against 109 (and blocks outermost on 1 thread, 20 output streams at a
  // time, cost 10-20%). Fewer blocks (7x7 maps): every pair a task, so both threads have work.
  const int64_t nt = omp_get_max_threads();
  if (qblocks >= 2 * nt) {
#pragma omp parallel for schedule(static) if (work > 200000)
    for (int64_t t = 0; t < nt; ++t)
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t qb = qblocks * t / nt; qb < qblocks * (t + 1) / nt; ++qb) block(g, qb);
  } else {
#pragma omp parallel for collapse(2) schedule(static) if (work > 200000)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t qb = 0; qb < qblocks; ++qb) block(g, qb);
  }
  planar::unpack(geo, outp, ko, y, ko, bias_c, epilogue.sum, epilogue.sum_stride, epilogue.act);
}

}  // namespace sluice::ops::gated
