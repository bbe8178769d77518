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
// A dense conv's weights packed at load (pack_direct_weights), AVX-512: blocks of up to
// kWideRows output channels x kWideVecs vectors (20 accumulators), the kWideRows weights of
// one (input channel, tap) side by side. A block then reads its input vectors, which split
// cache lines (most taps read unaligned), for 10 output channels where the block above reads
// them for 6, and its broadcasts come off one pointer. Slimmed layers on resident planes
// (sluice_bench_conv, 1 thread, Intel Xeon): ResNet-18's 20-channel stem 0.58 -> 0.52-0.55 ms
// and 56x56 layer 0.162 -> 0.131-0.145 ms; VGG-16's 19-channel 224x224 layer 2.48 -> 2.07-2.17
// ms. (13 rows, 26 accumulators, had GCC spill them.)
constexpr int64_t kWideVecs = 2;
constexpr int kWideRows = 10;

// Each pass prefetches, per input channel, the lines that its last tap will read 1 KB further
// on: the input of a large map comes from memory, not the caches, in the model (between two
// runs other tenants' work evicts it from L3; a conv timed alone reads it from L3), and the
// hardware prefetcher does not follow one stream per input channel. Slimmed VGG-16 in the model
// (`sluice bench -t 1 --profile`): its 20-channel 224x224 conv 4.40-4.59 -> 3.63-3.69 ms, the
// 39-channel 112x112 one 3.51-3.67 -> 3.31-3.41; prefetching the output lines for writing too
// changed nothing. Maps that fit in L2 (the slimmed ResNet-18's) run as before.
constexpr int64_t kPrefetchIn = 256;  // floats ahead
typedef int32_t vi __attribute__((vector_size(kVec * sizeof(int32_t)), aligned(4)));

// Where a pass puts its results when they go straight into resident planes of the output
// (a 3x3, stride-1 conv: flat position q is output pixel (q / gw, q % gw), which sits at q + gw +
// 1 in the output's plane, and the grid's extra columns fall on the plane's border, which must
// stay zero). Per output channel r of the pass: y = act(acc + bias[r] + sum[r]), zero where
// col_mask[q % gw] is 0 or q >= used. Only the activations written here: none, Relu, Clip.
struct ResidentStore {
  const float* bias;     // of the pass's first channel
  const float* sum;      // resident residual at the pass's first channel, or null
  const int32_t* col_mask;  // [gw + kVec]: -1 for real columns, 0 for extra ones, period gw
  int64_t gw, used;
  graph::Activation act;
  float lo, hi;          // Clip's bounds
};

inline bool resident_store_activation(const graph::FusedActivation& a) {
  return a.kind == graph::Activation::None || a.kind == graph::Activation::Relu || a.kind == graph::Activation::Clip;
}

// acc[r][v] += x[tap] * w[r][tap] over the active input channels and the taps, for R output
// channels x V vectors of flat output pixels starting at qp (one pass). The results go to
// out + r * out_stride + qp as they are, or (rs) into resident planes as ResidentStore says.
// Packed (PK = kWideRows): wrow[0] is the block's packed weights, [ki][taps][PK]; else (PK =
// 0) wrow[r] is output channel r's OIHW filter, read at in_ch[j].
template <int R, int V, int T, int PK = 0>
void pass(const float* planes, int64_t plane_size, const int64_t* tap_off, int64_t taps_dyn, int64_t ki,
          const int32_t* in_ch, const float* const* wrow, float* out, int64_t out_stride, int64_t qp,
          const ResidentStore* rs) {
  const int64_t taps = T > 0 ? T : taps_dyn;
  vf acc[R][V];  // zeroed in registers (`= {}` had GCC memset a stack copy on every pass)
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = vf{};
  for (int64_t j = 0; j < ki; ++j) {
    const float* xp = planes + j * plane_size + qp;
    for (int v = 0; v < V; ++v) __builtin_prefetch(xp + tap_off[taps - 1] + kPrefetchIn + v * kVec);
    const int64_t wo = PK ? j * taps * PK : static_cast<int64_t>(in_ch[j]) * taps;
    auto tap = [&](int64_t t) __attribute__((always_inline)) {
      const float* xt = xp + tap_off[t];
      vf x[V];
      for (int v = 0; v < V; ++v) x[v] = *reinterpret_cast<const vf*>(xt + v * kVec);
      for (int r = 0; r < R; ++r) {
        const float w = PK ? wrow[0][wo + t * PK + r] : wrow[r][wo + t];
        for (int v = 0; v < V; ++v) acc[r][v] += x[v] * w;
      }
    };
    if constexpr (T > 0) {
#pragma GCC unroll 64
      for (int64_t t = 0; t < T; ++t) tap(t);
    } else {
      for (int64_t t = 0; t < taps; ++t) tap(t);
    }
  }
  if (!rs) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) *reinterpret_cast<vf*>(out + r * out_stride + qp + v * kVec) = acc[r][v];
    return;
  }
  vi lane;
  for (int i = 0; i < kVec; ++i) lane[i] = i;
  const int64_t shift = rs->gw + 1;
  for (int v = 0; v < V; ++v) {
    const int64_t q = qp + v * kVec;
    const vi keep = *reinterpret_cast<const vi*>(rs->col_mask + q % rs->gw) & (lane + static_cast<int32_t>(q) <
                                                                              static_cast<int32_t>(rs->used));
    for (int r = 0; r < R; ++r) {
      vf y = acc[r][v] + rs->bias[r];
      if (rs->sum) y += *reinterpret_cast<const vf*>(rs->sum + r * out_stride + q + shift);
      if (rs->act == graph::Activation::Relu) {
        y = y > 0 ? y : 0;  // NaN -> 0, as the other kernels' Relu
      } else if (rs->act == graph::Activation::Clip) {
        y = y >= rs->lo ? y : rs->lo;  // NaN -> lo, as max(NaN, lo) in the other kernels
        y = y <= rs->hi ? y : rs->hi;
      }
      *reinterpret_cast<vf*>(out + r * out_stride + q + shift) = reinterpret_cast<vf>(reinterpret_cast<vi>(y) & keep);
    }
  }
}

using PassFn = void (*)(const float*, int64_t, const int64_t*, int64_t, int64_t, const int32_t*, const float* const*,
                        float*, int64_t, int64_t, const ResidentStore*);
template <int T, int R, size_t... V>
constexpr std::array<PassFn, kPassVecs> pass_row(std::index_sequence<V...>) {
  return {&pass<R, static_cast<int>(V) + 1, T>...};
}
template <int T, size_t... R>
constexpr std::array<std::array<PassFn, kPassVecs>, kRows> pass_table(std::index_sequence<R...>) {
  return {pass_row<T, static_cast<int>(R) + 1>(std::make_index_sequence<kPassVecs>())...};
}
// [rows - 1][vectors - 1]: any kernel size, and 3x3 with the taps unrolled. The loop over 9 taps
// cost its exit once per input channel: the 20 -> 20 3x3 conv at 56x56 on resident planes took
// 119-125 us against 111-119 unrolled (alternating, 1 thread). Unrolling the stem's 49 taps
// was slower (0.42-0.43 ms against 0.39-0.42).
constexpr auto kPassFns = pass_table<0>(std::make_index_sequence<kRows>());
constexpr auto kPassFns3x3 = pass_table<9>(std::make_index_sequence<kRows>());
#ifdef __AVX512F__
template <int T, int R, size_t... V>
constexpr std::array<PassFn, kWideVecs> wide_row(std::index_sequence<V...>) {
  return {&pass<R, static_cast<int>(V) + 1, T, kWideRows>...};
}
template <int T, size_t... R>
constexpr std::array<std::array<PassFn, kWideVecs>, kWideRows> wide_table(std::index_sequence<R...>) {
  return {wide_row<T, static_cast<int>(R) + 1>(std::make_index_sequence<kWideVecs>())...};
}
constexpr auto kWideFns = wide_table<0>(std::make_index_sequence<kWideRows>());
constexpr auto kWideFns3x3 = wide_table<9>(std::make_index_sequence<kWideRows>());
#endif

}  // namespace

std::vector<float> pack_direct_weights(const DirectConvShape& s, const float* weights) {
  std::vector<float> p;
#ifdef __AVX512F__
  const int64_t taps = s.kh * s.kw, groups = (s.m + kWideRows - 1) / kWideRows;
  p.assign(static_cast<size_t>(groups * s.c * taps * kWideRows), 0.f);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t j0 = s.m * g / groups, rows = s.m * (g + 1) / groups - j0;  // as direct_conv splits them
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < s.c; ++c)
        for (int64_t t = 0; t < taps; ++t)
          p[static_cast<size_t>(((g * s.c + c) * taps + t) * kWideRows + r)] = weights[((j0 + r) * s.c + c) * taps + t];
  }
#else
  (void)s, (void)weights;
#endif
  return p;
}

bool direct_conv_supported(const int64_t* strides, const int64_t* dilations) {
  return strides[0] == strides[1] && strides[0] >= 1 && strides[0] <= 2 && dilations[0] == 1 && dilations[1] == 1;
}

namespace {
// The grid of a direct conv: the padded input's, or ow + 2 columns when that is narrower and
// exact (planar::narrow_grid), so that a conv writing resident planes can store its results
// in place (each output pixel at a fixed offset from its grid position).
planar::Geometry grid_of(const DirectConvShape& s) {
  planar::Geometry g = s.geometry();
  if (g.grid_w() != s.ow + 2 && planar::narrow_grid(g, s.ow + 2)) g.narrow_w = s.ow + 2;
  return g;
}
}  // namespace

size_t direct_conv_scratch(const DirectConvShape& s) {
  const planar::Geometry g = grid_of(s);
  // planar input, planar output, the biases, ResidentStore::col_mask
  return static_cast<size_t>(g.planes_size(s.c) + s.m * g.flat_out() + s.m + g.grid_w() + kVec) * sizeof(float) + 128;
}

void direct_conv(const DirectConvShape& s, const float* x, int64_t x_stride, const int32_t* in_pos,
                 const int32_t* in_ch, int64_t ki, const float* weights, const float* bias, const int32_t* out_ch,
                 int64_t ko, float* y, void* scratch, const DirectEpilogue& epilogue, planar::Source x_form,
                 const float* packed) {
  if (ko <= 0) return;  // no output channel (the gated conv handles that case before calling)
  const planar::Geometry geo = grid_of(s);
  const int64_t ps = geo.plane(), q = geo.flat_out(), taps = s.kh * s.kw;
  auto* scratch_planes = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  float* outp = scratch_planes + geo.planes_size(ki);
  const float* planes = scratch_planes;
  const planar::Geometry same = planar::resident(s.h, s.w);
  if (x_form == planar::Source::Resident && s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad_top == 1 && s.pad_left == 1 && s.oh == s.h &&
      s.ow == s.w && geo.plane() == same.plane() && geo.grid_w() == same.grid_w())
    planes = x;  // already this conv's padded input
  else
    planar::pack(geo, x, x_stride, in_pos, ki, scratch_planes, 1, x_form);

  int64_t tap_off[64];
  planar::tap_offsets(geo, ki, tap_off);
  // Blocks of up to kRows output channels x 64 flat output pixels (the 2 pad columns per row
  // are computed and dropped: they keep every tap a contiguous read). The channels split into
  // groups as equal as possible: 19 as 5+5+5+4, not 6+6+6+1, whose 1-channel block would do 4
  // FMAs per 5 loads.
  // Packed weights (a dense conv, AVX-512): blocks of up to kWideRows channels, as packed.
#ifndef __AVX512F__
  packed = nullptr;  // (pack_direct_weights gives none here)
#endif
  if (packed && (ki != s.c || ko != s.m))
    throw Error("internal error: direct_conv's packed weights are for every channel, in order");
  // On a map of few blocks, the wide blocks' fewer groups must not leave a thread idle (a
  // 10-channel 7x7 conv: one group of one block); the in-place weights then.
  const int64_t qblocks = q / kBlock, wide_tasks = (ko + kWideRows - 1) / kWideRows * qblocks;
  if (packed && wide_tasks < omp_get_max_threads() && (ko + kRows - 1) / kRows * qblocks > wide_tasks) packed = nullptr;
  const int64_t rows_max = packed ? kWideRows : kRows;
  const int64_t groups = (ko + rows_max - 1) / rows_max, used = s.oh * geo.grid_w();
  const int64_t work = ko * ki * taps * s.oh * s.ow;
  float* bias_c = outp + ko * q;
  for (int64_t j = 0; j < ko; ++j) bias_c[j] = bias[out_ch[j]];
  // Resident output on a grid ow + 2 wide (a 3x3 stride-1 conv; a 7x7 stride-2 stem, 5x5
  // convs on a narrowed grid): each pass writes its results into the planes itself (no planar
  // results to copy out afterwards; for the slimmed ResNet-18's stem that copy was 10% of it).
  const int64_t gw = geo.grid_w(), ps_out = planar::resident(s.oh, s.ow).plane();
  const bool direct_store = epilogue.resident_out && gw == s.ow + 2 && resident_store_activation(epilogue.act);
  int32_t* col_mask = reinterpret_cast<int32_t*>(bias_c + ko);
  if (direct_store) {
    for (int64_t c = 0; c < gw + kVec; ++c) col_mask[c] = c % gw < s.ow ? -1 : 0;
    // The border before the first output pixel's place (the top row and the next row's left
    // border) and after the last vector that holds output pixels (bottom rows and slack): the
    // passes write the rest.
    const int64_t q_end = std::min(q, (used + kVec - 1) / kVec * kVec);
    for (int64_t j = 0; j < ko; ++j) {
      float* p = y + j * ps_out;
      std::memset(p, 0, static_cast<size_t>(gw + 1) * sizeof(float));
      std::memset(p + q_end + gw + 1, 0, static_cast<size_t>(ps_out - (q_end + gw + 1)) * sizeof(float));
    }
  } else if (epilogue.resident_out) {
    planar::clear_resident_borders(s.oh, s.ow, ko, y);
  }
  auto block = [&](int64_t g, int64_t qb) {
    const int64_t j0 = ko * g / groups, rows = ko * (g + 1) / groups - j0;
    const float* wrow[kRows];
    for (int64_t r = 0; r < kRows; ++r)
      wrow[r] = packed ? packed + g * ki * taps * kWideRows
                       : weights + static_cast<int64_t>(out_ch[std::min(j0 + r, ko - 1)]) * s.c * taps;
    float* out = direct_store ? y + j0 * ps_out : outp + j0 * q;
    const ResidentStore rs{bias_c + j0, epilogue.sum ? epilogue.sum + j0 * ps_out : nullptr, col_mask, gw, used,
                           epilogue.act.kind, epilogue.act.alpha, epilogue.act.beta};
    // The last block stops at the last vector that holds output pixels (on a 14x14 map the
    // 224 grid pixels end half-way through the fourth block; on 28x28, 840 of 896 were computed
    // when the rest of the block was written into resident planes as their bottom border,
    // which the memset above now clears).
    const int64_t vecs = std::min(kBlock, used - qb * kBlock + kVec - 1) / kVec;
#ifdef __AVX512F__
    if (packed) {
      const auto& wide = taps == 9 ? kWideFns3x3 : kWideFns;
      for (int64_t v0 = 0; v0 < vecs; v0 += kWideVecs)
        wide[rows - 1][std::min(kWideVecs, vecs - v0) - 1](planes, ps, tap_off, taps, ki, in_ch, wrow, out,
                                                           direct_store ? ps_out : q, qb * kBlock + v0 * kVec,
                                                           direct_store ? &rs : nullptr);
      return;
    }
#endif
    const auto& fns = taps == 9 ? kPassFns3x3 : kPassFns;
    for (int64_t v0 = 0; v0 < vecs; v0 += kPassVecs)
      fns[rows - 1][std::min(kPassVecs, vecs - v0) - 1](planes, ps, tap_off, taps, ki, in_ch, wrow, out,
                                                              direct_store ? ps_out : q, qb * kBlock + v0 * kVec,
                                                              direct_store ? &rs : nullptr);
  };
  // Large maps: tiles of blocks, every group of a tile, then the tile straight back to NHWC
  // while its results are in cache. A tile's input window stays in cache across the groups,
  // and each group's weights across the tile's blocks. Group by group over the whole map, a
  // 64-channel 224x224 input (13 MB of planes) came from L3 once per group, and a second pass
  // read back a planar result of the same size: that layer took ~4x as long.
  // Each thread takes an equal contiguous share of the blocks, in tiles: whole tiles shared out
  // left one thread a tile more than the other on the slimmed ResNet-18's stem (17 tiles).
  const int64_t tile = std::clamp<int64_t>(16384 / (ko * kBlock), 1, 16), tiles = (qblocks + tile - 1) / tile;
  if (tiles >= 8) {
    const int64_t nt = omp_get_max_threads();
#pragma omp parallel for schedule(static) if (work > 200000)
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t start = qblocks * t / nt, end = qblocks * (t + 1) / nt;
      // Rows whole in this thread's flat positions [start, end) x kBlock, so far.
      const int64_t first_row = std::min(s.oh, (start * kBlock + gw - 1) / gw);
      int64_t rows_end = first_row;
      for (int64_t qb0 = start; qb0 < end; qb0 += tile) {
        const int64_t qb1 = std::min(end, qb0 + tile);
        for (int64_t g = 0; g < groups; ++g)
          for (int64_t qb = qb0; qb < qb1; ++qb) block(g, qb);
        if (!direct_store) {
          if (epilogue.resident_sum && !epilogue.resident_out)
            planar::add_resident_sum(geo, outp + qb0 * kBlock, q, qb0 * kBlock, (qb1 - qb0) * kBlock, ko, epilogue.sum);
          if (epilogue.resident_out)
            planar::store_block_resident(geo, outp + qb0 * kBlock, q, qb0 * kBlock, (qb1 - qb0) * kBlock, ko, y,
                                         bias_c, epilogue.sum, epilogue.act);
          else
            planar::store_block(geo, outp + qb0 * kBlock, q, qb0 * kBlock, (qb1 - qb0) * kBlock, ko, y, ko, bias_c,
                                epilogue.resident_sum ? nullptr : epilogue.sum, epilogue.sum_stride, epilogue.act);
        }
        const int64_t now = std::min(s.oh, qb1 * kBlock / gw);
        if (epilogue.rows_done && now > rows_end) {
          (*epilogue.rows_done)(first_row, rows_end, now);
          rows_end = now;
        }
      }
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
  if (direct_store) return;
  if (epilogue.resident_out) {
    planar::unpack_resident(geo, outp, ko, y, bias_c, epilogue.sum, epilogue.act);
    return;
  }
  if (epilogue.resident_sum)
#pragma omp parallel for schedule(static) if (s.oh * s.ow * ko > 16384)
    for (int64_t oy = 0; oy < s.oh; ++oy)
      planar::add_resident_sum(geo, outp + oy * geo.grid_w(), q, oy * geo.grid_w(), s.ow, ko, epilogue.sum);
  planar::unpack(geo, outp, ko, y, ko, bias_c, epilogue.resident_sum ? nullptr : epilogue.sum, epilogue.sum_stride,
                 epilogue.act);
}

}  // namespace sluice::ops::gated
