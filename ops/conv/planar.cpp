#include "ops/conv/planar.h"

#include <algorithm>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

#include "ops/common/transpose.h"
#define SLUICE_PLANAR_TILES 1
// GCC 12 flags the _mm512_undefined_ps() inside its own shuffle intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace sluice::ops::planar {

void tap_offsets(const Geometry& g, int64_t k, int64_t* off, int64_t shifts) {
  const int64_t st = g.stride, gw = g.grid_w(), phase_size = k * g.plane();
  for (int64_t a = 0; a < g.kh; ++a)
    for (int64_t b = 0; b < g.kw; ++b) {
      const int64_t shift = b / st;
      off[a * g.kw + b] = ((a % st) * st + b % st) * phase_size + (a / st) * gw +
                          (shifts > 1 ? shift * g.planes_size(k) : shift);
    }
}

namespace {

#ifdef SLUICE_PLANAR_TILES
// Square tiles of T x T floats moved through registers: T = 16 (AVX-512) or 8 (AVX2). Loads and
// stores take a count n <= T of leading lanes (masked).
#ifdef __AVX512F__
using Vec = __m512;
constexpr int64_t T = 16;
inline __mmask16 lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }
// Whole vectors without a mask: a masked store ran at a fraction of a plain one's rate on
// Zen 5 (perf: 25% of store_block's time on the instruction after one).
inline Vec load_n(const float* p, int64_t n) { return n == T ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(n), p); }
inline void store_n(float* p, Vec v, int64_t n) {
  if (n == T)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, lanes(n), v);
}
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
// A Relu fused into a conv maps NaN to 0, as oneDNN's relu post-op (and ORT's fused Conv+Relu) do, so
// the answer does not depend on which kernel the timing picked.
inline Vec relu(Vec a) { return _mm512_max_ps(a, _mm512_setzero_ps()); }
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }  // b where either is NaN
inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec vdiv(Vec a, Vec b) { return _mm512_div_ps(a, b); }
// a >= 0 ? a : b (NaN: b)
inline Vec select_nonneg(Vec a, Vec b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GE_OQ), b, a);
}
// v's even lanes (0, 2, ...) and odd lanes (1, 3, ...), moved to the leading lanes.
inline Vec even_lanes(Vec v) {
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0), v);
}
inline Vec odd_lanes(Vec v) {
  return _mm512_permutexvar_ps(_mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0), v);
}

// r[0..16): 16 rows of 16 floats -> in place, its transpose.
inline void transpose(Vec* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // r[4 i + c], 128-bit lane l: column c + 4 l of rows 4 i .. 4 i + 3.
  for (int c = 0; c < 4; ++c) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
    const __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    t[c + 8] = _mm512_shuffle_f32x4(u0, u2, 0xdd);
    t[c + 4] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    t[c + 12] = _mm512_shuffle_f32x4(u1, u3, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#else
using Vec = __m256;
constexpr int64_t T = 8;
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec load_n(const float* p, int64_t n) { return n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(n)); }
// (A masked store is slow on AMD's cores: the 4-lane halves of a stride-2 pack take a plain
// 128-bit store.)
inline void store_n(float* p, Vec v, int64_t n) {
  if (n == 8)
    _mm256_storeu_ps(p, v);
  else if (n == 4)
    _mm_storeu_ps(p, _mm256_castps256_ps128(v));
  else
    _mm256_maskstore_ps(p, lanes(n), v);
}
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec relu(Vec a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }  // NaN -> 0, as oneDNN's post-op
inline Vec set1(float x) { return _mm256_set1_ps(x); }
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b where either is NaN
inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec vdiv(Vec a, Vec b) { return _mm256_div_ps(a, b); }
// a >= 0 ? a : b (NaN: b)
inline Vec select_nonneg(Vec a, Vec b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GE_OQ)); }
inline Vec even_lanes(Vec v) { return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)); }
inline Vec odd_lanes(Vec v) { return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0)); }

inline void transpose(Vec* r) { simd::transpose8(r); }
#endif
#endif

#ifdef SLUICE_PLANAR_TILES
// graph::apply_activation on a vector, for the kinds it has a vector form of (false: the
// caller takes the scalar path). Same results, NaN included: Relu and Clip map NaN to 0 and to
// their min (max returns its second operand on NaN), LeakyRelu and HardSwish keep it.
inline bool vector_activation(const graph::FusedActivation& a) {
  using graph::Activation;
  return a.kind == Activation::None || a.kind == Activation::Relu || a.kind == Activation::Clip ||
         a.kind == Activation::LeakyRelu || a.kind == Activation::HardSwish;
}
inline Vec activate(Vec v, const graph::FusedActivation& a) {
  using graph::Activation;
  switch (a.kind) {
    case Activation::Relu: return relu(v);
    case Activation::Clip: return vmin(vmax(v, set1(a.alpha)), set1(a.beta));
    case Activation::LeakyRelu: return select_nonneg(v, vmul(v, set1(a.alpha)));
    case Activation::HardSwish:
      // x / 6 + 0.5 as the scalar form computes it (a multiply by 1/6 in an FMA differs in the last bit)
      return vmul(v, vmin(vmax(add(vdiv(v, set1(6.f)), set1(0.5f)), zero()), set1(1.f)));
    default: return v;
  }
}
#endif

}  // namespace

void pack(const Geometry& g, const float* x, int64_t x_stride, const int32_t* pos, int64_t k, float* planes,
          int64_t shifts, Source from) {
  const bool x_resident = from == Source::Resident || from == Source::ResidentWide, wide = from == Source::ResidentWide;
  // Where channel c of pixel p is, NHWC or NCHW: x[c * ch_step + p * px_step].
  const int64_t ch_step = from == Source::Nchw ? g.h * g.w : 1, px_step = from == Source::Nchw ? 1 : x_stride;
  const int64_t x_plane = x_resident ? resident(g.h, g.w, wide).plane() : ch_step;
  const int64_t st = g.stride, gw = g.grid_w(), ps = g.plane(), phase_size = k * ps, copy = g.planes_size(k);
#ifdef __AVX512F__
  // Stride 2 from resident planes, for a conv padded by their own border (pad 1 at the top and
  // left, its padded map within the bordered one): padded row py is resident row py, borders
  // included; its even and odd floats are grid row py / 2 of column phases 0 and 1 of row phase
  // py % 2. Every grid row a padded row lands in is written whole, so only the rest of each
  // plane is zeroed, not all of the copy first. (ResNet-18's 56x56 x 64 input at stride 2: 86
  // us through the general path, against 60 from NHWC, on 1 thread.)
  if (x_resident && shifts == 1 && st == 2 && g.pad_top == 1 && g.pad_left == 1 && g.kh >= 2 && g.kw >= 2 &&
      g.padded_w() <= g.w + 2 && g.padded_h() <= g.h + 2 && g.narrow_w == 0) {
    const int64_t rw = resident(g.h, g.w, wide).grid_w(), ph = g.padded_h();
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
                  odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#pragma omp parallel for schedule(static) if (k * ph * gw > 16384)
    for (int64_t j = 0; j < k; ++j) {
      const float* src = x + pos[j] * x_plane;
      for (int64_t py = 0; py < ph; ++py) {
        const float* s = src + py * rw;
        float* de = planes + (py & 1) * 2 * phase_size + j * ps + (py >> 1) * gw;
        float* dd = de + phase_size;
        for (int64_t i0 = 0; i0 < gw; i0 += T) {
          const int64_t n = std::min<int64_t>(T, gw - i0), m = 2 * n;  // floats out per phase, in
          const Vec lo = _mm512_maskz_loadu_ps(lanes(std::min<int64_t>(m, T)), s + 2 * i0);
          const Vec hi = m > T ? _mm512_maskz_loadu_ps(lanes(m - T), s + 2 * i0 + T) : zero();
          store_n(de + i0, _mm512_permutex2var_ps(lo, even, hi), n);
          store_n(dd + i0, _mm512_permutex2var_ps(lo, odd, hi), n);
        }
      }
      // The rest of each of the channel's four planes: rows no padded row lands in, and slack.
      for (int64_t a = 0; a < 2; ++a) {
        const int64_t rows = (ph - a + 1) / 2;
        for (int64_t b = 0; b < 2; ++b)
          std::fill(planes + (a * 2 + b) * phase_size + j * ps + rows * gw, planes + (a * 2 + b) * phase_size + (j + 1) * ps,
                    0.f);
      }
    }
    return;
  }
#endif
  // Zeroed in parallel chunks: serially, the 1.7 MB of a 128-channel 28x28 input's aligned
  // copies kept the other thread waiting (libgomp's spin was 20% of a 2-thread sparse ResNet-18).
  // Only the phases a tap reads (a 1x1 stride-2 conv reads 1 of 4), which pack writes.
  const int64_t chunk = 16384, per_phase = (phase_size + chunk - 1) / chunk, regions = shifts * st * st;
#pragma omp parallel for collapse(2) schedule(static) if (shifts * copy > 4 * chunk)
  for (int64_t r = 0; r < regions; ++r)
    for (int64_t j = 0; j < per_phase; ++j) {
      const int64_t phase = r % (st * st);
      if (phase / st >= g.kh || phase % st >= g.kw) continue;
      std::memset(planes + (r / (st * st)) * copy + phase * phase_size + j * chunk, 0,
                  static_cast<size_t>(std::min(chunk, phase_size - j * chunk)) * sizeof(float));
    }
  const int64_t work = g.h * g.w * k;
  // Column range [x_lo, x_hi) of the input that lands inside the padded width.
  const int64_t x_lo = std::max<int64_t>(0, -g.pad_left), x_hi = std::min<int64_t>(g.w, g.padded_w() - g.pad_left);
#pragma omp parallel for if (work > 16384)
  for (int64_t yy = 0; yy < g.h; ++yy) {
    const int64_t py = yy + g.pad_top;
    // A phase no tap reads (a 1x1 stride-2 conv reads only phase (0, 0)) is not written.
    if (py < 0 || py >= g.padded_h() || py % st >= g.kh) continue;
    int64_t j0 = 0;
#ifdef SLUICE_PLANAR_TILES
    // Runs of T consecutive channels (all of them for a compact or full input): transposed T
    // pixels x T channels at a time. (A row whose first pixel a shifted copy would put before
    // its start takes the scalar path.) Stride 2 (one copy): the pixels' even and odd lanes go
    // to their two column phases (the scalar path took 2.5x as long on a 56x56x64 input).
    if (from == Source::Nhwc && ((st == 1 && py * gw + x_lo + g.pad_left >= shifts - 1) || (st == 2 && shifts == 1)))
      for (; j0 + T <= k && pos[j0 + T - 1] - pos[j0] == T - 1; j0 += T) {
        bool run = true;
        for (int64_t i = 1; i < T - 1; ++i) run = run && pos[j0 + i] == pos[j0] + i;
        if (!run) break;
        for (int64_t x0 = x_lo; x0 < x_hi; x0 += T) {
          const int64_t n = std::min<int64_t>(T, x_hi - x0);
          Vec r[T];
          for (int64_t i = 0; i < T; ++i) r[i] = i < n ? load_n(x + (yy * g.w + x0 + i) * x_stride + pos[j0], T) : zero();
          transpose(r);
          if (st == 2) {
            // Lane i is padded column px0 + i: even lanes land in phase px0 % 2 from column
            // px0 / 2, odd lanes in the other phase from column (px0 + 1) / 2.
            const int64_t px0 = x0 + g.pad_left, p0 = px0 & 1;
            float* row = planes + (py & 1) * 2 * phase_size + (py >> 1) * gw + j0 * ps;
            float* de = row + p0 * phase_size + (px0 >> 1);
            float* dd = row + (1 - p0) * phase_size + ((px0 + 1) >> 1);
            const bool even = p0 < g.kw, odd = n > 1 && 1 - p0 < g.kw;  // phases a tap reads
            for (int64_t jj = 0; jj < T; ++jj) {
              if (even) store_n(de + jj * ps, even_lanes(r[jj]), (n + 1) / 2);
              if (odd) store_n(dd + jj * ps, odd_lanes(r[jj]), n / 2);
            }
            continue;
          }
          float* d = planes + j0 * ps + py * gw + x0 + g.pad_left;
          for (int64_t jj = 0; jj < T; ++jj)
            for (int64_t c = 0; c < shifts; ++c) store_n(d + jj * ps + c * copy - c, r[jj], n);
        }
      }
#endif
    float* row = planes + (py % st) * st * phase_size + (py / st) * gw;
    if (shifts == 1 || from != Source::Nhwc) {
      // The channels left (all of them on a 3-channel stem), one channel and column phase at
      // a time: a strided read into a contiguous run. (Pixel by pixel over the channels, the
      // copy took 29% of a 3 -> 20-channel 7x7 stride-2 stem.)
      // Per column phase a, its first padded column px and pixel count n (the same for every
      // channel: divisions once per row, not per channel).
      int64_t first[2], count[2];
      const int64_t phases = std::min<int64_t>(st, g.kw), px0 = x_lo + g.pad_left;
      for (int64_t a = 0; a < phases; ++a) {
        first[a] = px0 + ((a - px0 % st) % st + st) % st;
        count[a] = first[a] < x_hi + g.pad_left ? (x_hi + g.pad_left - first[a] + st - 1) / st : 0;
      }
      const int64_t step = x_resident ? st : st * px_step;
      for (int64_t j = j0; j < k; ++j)
        for (int64_t a = 0; a < phases; ++a) {
          const int64_t px = first[a], n = count[a];
          // From resident planes or NCHW: the channel's row, pixels consecutive.
          const float* s = x_resident ? x + pos[j] * x_plane + resident_index(g.w, yy, px - g.pad_left, wide)
                                      : x + (yy * g.w + px - g.pad_left) * px_step + pos[j] * ch_step;
          float* d0 = row + a * phase_size + j * ps + px / st;
          // Copy c (shifts > 1) c floats to the left: what would land before the buffer is not written.
          for (int64_t c = 0; c < shifts; ++c) {
            float* d = d0 + c * copy - c;
            const int64_t i0 = std::max<int64_t>(0, c - (d0 - planes));
            // Constant steps, which the compiler vectorises (from resident planes at stride 2, a
            // run-time step made the pack slower than from NHWC).
            if (step == 1)
              std::copy(s + i0, s + std::max(i0, n), d + i0);
            else if (step == 2)
              for (int64_t i = i0; i < n; ++i) d[i] = s[2 * i];
            else
              for (int64_t i = i0; i < n; ++i) d[i] = s[i * step];
          }
        }
      continue;
    }
    // Padded column px = xx + pad_left lands in phase px % st at column px / st; both kept
    // incrementally (a division per pixel cost more than the copy on a 3-channel stem).
    int64_t phase = (x_lo + g.pad_left) % st, col = (x_lo + g.pad_left) / st;
    for (int64_t xx = x_lo; xx < x_hi; ++xx) {
      const float* src = x + (yy * g.w + xx) * px_step;
      if (phase >= g.kw) {  // a column phase no tap reads
        if (++phase == st) phase = 0, ++col;
        continue;
      }
      float* dst = row + phase * phase_size + col;
      const int64_t at = dst - planes;
      for (int64_t c = 0; c < shifts; ++c)
        for (int64_t j = j0; j < k; ++j)
          if (at + j * ps >= c) dst[j * ps + c * copy - c] = src[pos[j] * ch_step];
      if (++phase == st) phase = 0, ++col;
    }
  }
}

void store_block(const Geometry& g, const float* src, int64_t src_stride, int64_t q0, int64_t npx, int64_t k, float* y,
                 int64_t y_stride, const float* bias, const float* sum, int64_t sum_stride,
                 const graph::FusedActivation& act) {
  const int64_t gw = g.grid_w();
  // Flat position q0 + i is output pixel (oy, ox); ox >= ow (the grid's extra columns) and
  // oy >= oh (the last block's slack) are dropped. Kept incrementally across the block.
  int64_t oy = q0 / gw, ox = q0 - oy * gw;
  auto next = [&] {
    if (++ox == gw) ox = 0, ++oy;
  };
#ifdef SLUICE_PLANAR_TILES
  if (vector_activation(act)) {
    for (int64_t i0 = 0; i0 < npx; i0 += T) {
      const int64_t n = std::min<int64_t>(T, npx - i0);
      const int64_t ty = oy, tx = ox;
      // The tile's pixels in one output row (the common case): consecutive, no per-pixel checks.
      const bool in_row = tx + n <= g.ow && ty < g.oh;
      for (int64_t j0 = 0; j0 < k; j0 += T) {
        int64_t jn = std::min<int64_t>(T, k - j0);
        // A last, partial group of channels (k = 19: channels 16..18) as a whole one that
        // overlaps the group before (3..18): whole-vector stores of the same values, unless
        // the residual sum is read from the output itself (in place), where the overlap would
        // add it twice.
        if (jn < T && k >= T && sum != y) j0 = k - T, jn = T;
        Vec r[T];
        for (int64_t jj = 0; jj < T; ++jj) r[jj] = jj < jn ? load_n(src + (j0 + jj) * src_stride + i0, n) : zero();
        transpose(r);
        const Vec b = bias ? load_n(bias + j0, jn) : set1(-0.f);  // (-0: x + -0 is x, also for x = -0)
        auto put = [&](int64_t i, int64_t p) {
          Vec v = add(r[i], b);
          if (sum) v = add(v, load_n(sum + p * sum_stride + j0, jn));
          store_n(y + p * y_stride + j0, activate(v, act), jn);
        };
        if (in_row) {
          for (int64_t i = 0, p = ty * g.ow + tx; i < n; ++i, ++p) put(i, p);
          continue;
        }
        oy = ty, ox = tx;
        for (int64_t i = 0; i < n; ++i, next())
          if (ox < g.ow && oy < g.oh) put(i, oy * g.ow + ox);
      }
      oy = ty, ox = tx + n;  // past the tile
      for (; ox >= gw; ox -= gw) ++oy;
    }
    return;
  }
#endif
  for (int64_t i = 0; i < npx; ++i, next()) {
    if (ox >= g.ow || oy >= g.oh) continue;
    const int64_t p = oy * g.ow + ox;
    for (int64_t j = 0; j < k; ++j) {
      float v = src[j * src_stride + i] + (bias ? bias[j] : -0.f);
      if (sum) v += sum[p * sum_stride + j];
      y[p * y_stride + j] = act.kind == graph::Activation::None ? v : graph::apply_activation(act, v);
    }
  }
}

void unpack(const Geometry& g, const float* planes, int64_t k, float* y, int64_t y_stride, const float* bias,
            const float* sum, int64_t sum_stride, const graph::FusedActivation& act) {
  const int64_t q = g.flat_out(), gw = g.grid_w();
#pragma omp parallel for schedule(static) if (g.oh * g.ow * k > 16384)
  for (int64_t oy = 0; oy < g.oh; ++oy)
    store_block(g, planes + oy * gw, q, oy * gw, g.ow, k, y, y_stride, bias, sum, sum_stride, act);
}

namespace {
// Calls f(oy, x0, x1) for each output row oy that flat positions [q0, q0 + npx) reach, with
// the row's output columns [x0, x1) among them (the grid's extra columns and the slack after
// the last row are left out).
template <class F>
void for_row_segments(const Geometry& g, int64_t q0, int64_t npx, F&& f) {
  const int64_t gw = g.grid_w(), q1 = q0 + npx;
  for (int64_t oy = q0 / gw; oy < g.oh && oy * gw < q1; ++oy) {
    const int64_t x0 = std::max<int64_t>(0, q0 - oy * gw), x1 = std::min(g.ow, q1 - oy * gw);
    if (x0 < x1) f(oy, x0, x1);
  }
}
}  // namespace

void clear_resident_borders(int64_t h, int64_t w, int64_t k, float* planes) {
  const int64_t ps = resident(h, w).plane(), bottom = (h + 1) * (w + 2);
  for (int64_t j = 0; j < k; ++j) {
    float* p = planes + j * ps;
    std::memset(p, 0, static_cast<size_t>(w + 2) * sizeof(float));
    std::memset(p + bottom, 0, static_cast<size_t>(ps - bottom) * sizeof(float));
  }
}

#ifdef __AVX512F__
namespace {
// store_block_resident on AVX-512. What a block writes of a channel's plane is one contiguous
// range: from its first pixel (or that row's left border, when the block has the row's start)
// to its last pixel (or that row's right border), border floats between rows included. That
// range is written in aligned vectors, masked only at its two ends; each vector takes its lanes
// from up to 4 rows of the results (a row of at least 4 pixels: 6 floats with its borders), and
// zeros at the borders. The vectors' masks and source offsets are the same for every channel
// (planes are whole vectors apart), worked out once per block and run of vectors. (Row by row,
// every row's unaligned vectors split cache lines, the borders were stores of their own and
// the row's tail was masked: a sparse conv writing planes at 56x56 x 64 spent more there than
// on its NHWC store.)
struct Chunk {
  int64_t at;                 // the vector's first float in the plane
  __mmask16 store, inside;    // lanes in the range; lanes of pixels
  int rows;                   // source rows with lanes in it
  __mmask16 m[4];             // their lanes
  int64_t off[4];             // where each row's results are, relative to the vector (src - q0)
};
constexpr int kChunks = 64;

void store_resident_chunks(const Geometry& g, const float* src, int64_t src_stride, int64_t q0, int64_t lo, int64_t hi,
                           int64_t k, float* y, const float* bias, const float* sum, const graph::FusedActivation& act,
                           bool wide) {
  const Geometry out = resident(g.oh, g.ow, wide);
  const int64_t gw = g.grid_w(), ps = out.plane(), rw = out.grid_w();
  Chunk ch[kChunks];
  int64_t row = lo / rw;  // the plane row of the next vector's first float in the range
  for (int64_t c = lo / T * T; c < hi;) {
    int n = 0;
    for (; n < kChunks && c < hi; ++n, c += T) {
      Chunk& u = ch[n];
      const int64_t c0 = std::max(c, lo), c1 = std::min(c + T, hi);
      u.at = c;
      u.store = static_cast<__mmask16>(lanes(c1 - c) & ~lanes(c0 - c));
      u.inside = 0;
      u.rows = 0;
      while ((row + 1) * rw <= c0) ++row;
      for (int64_t r = row; r * rw < c1 && r <= g.oh; ++r) {
        if (r == 0) continue;  // the top border row
        const int64_t first = r * rw + 1, a0 = std::max(std::max(first, c), c0), a1 = std::min(first + g.ow, c1);
        if (a0 >= a1) continue;
        u.m[u.rows] = static_cast<__mmask16>(lanes(a1 - c) & ~lanes(a0 - c));
        u.off[u.rows] = (r - 1) * gw + (c - first) - q0;
        u.inside |= u.m[u.rows++];
      }
    }
    for (int64_t j = 0; j < k; ++j) {
      const float* s = src + j * src_stride;
      float* d = y + j * ps;
      const float* r = sum ? sum + j * ps : nullptr;
      const Vec b = set1(bias ? bias[j] : -0.f);
      for (int i = 0; i < n; ++i) {
        const Chunk& u = ch[i];
        Vec v = zero();
        for (int t = 0; t < u.rows; ++t) v = _mm512_mask_loadu_ps(v, u.m[t], s + u.off[t]);
        v = add(v, b);
        if (r) v = add(v, _mm512_maskz_loadu_ps(u.inside, r + u.at));
        v = _mm512_maskz_mov_ps(u.inside, activate(v, act));
        if (u.store == 0xffff)
          _mm512_storeu_ps(d + u.at, v);
        else
          _mm512_mask_storeu_ps(d + u.at, u.store, v);
      }
    }
  }
}
}  // namespace
#endif

void store_block_resident(const Geometry& g, const float* src, int64_t src_stride, int64_t q0, int64_t npx, int64_t k,
                          float* y, const float* bias, const float* sum, const graph::FusedActivation& act,
                          bool wide) {
  const int64_t gw = g.grid_w(), ps = resident(g.oh, g.ow, wide).plane();
#ifdef __AVX512F__
  if (vector_activation(act) && g.ow >= 4) {
    // The range: from the first segment's first pixel (its border too at a row's start, and
    // the top border row at the map's) to the last one's last (its border too at a row's end,
    // and the rest of the plane at the map's).
    int64_t lo = -1, hi = -1;
    for_row_segments(g, q0, npx, [&](int64_t oy, int64_t x0, int64_t x1) {
      if (lo < 0) lo = oy == 0 && x0 == 0 ? 0 : resident_index(g.ow, oy, x0, wide) - (x0 == 0);
      // (Wide rows: the zeros after a row's right border too.)
      hi = oy == g.oh - 1 && x1 == g.ow ? ps
           : x1 == g.ow              ? resident_index(g.ow, oy + 1, -1, wide)
                                     : resident_index(g.ow, oy, x1, wide);
    });
    if (lo >= 0) store_resident_chunks(g, src, src_stride, q0, lo, hi, k, y, bias, sum, act, wide);
    return;
  }
#endif
  const int64_t rw = resident(g.oh, g.ow, wide).grid_w();
  for_row_segments(g, q0, npx, [&](int64_t oy, int64_t x0, int64_t x1) {
    const int64_t at = resident_index(g.ow, oy, x0, wide);
    for (int64_t j = 0; j < k; ++j) {
      const float* s = src + j * src_stride + (oy * gw + x0 - q0);
      float* d = y + j * ps + at;
      const float* r = sum ? sum + j * ps + at : nullptr;
      const float b = bias ? bias[j] : -0.f;
      const int64_t n = x1 - x0;
      int64_t i = 0;
#ifdef SLUICE_PLANAR_TILES
      if (vector_activation(act))
        for (; i < n; i += T) {
          const int64_t m = std::min<int64_t>(T, n - i);
          Vec v = add(load_n(s + i, m), set1(b));
          if (r) v = add(v, load_n(r + i, m));
          store_n(d + i, activate(v, act), m);
        }
#endif
      for (; i < n; ++i) {
        const float v = s[i] + b + (r ? r[i] : 0.f);
        d[i] = act.kind == graph::Activation::None ? v : graph::apply_activation(act, v);
      }
      if (x0 == 0) d[-1] = 0.f;  // the row's left border
      if (x1 == g.ow) std::fill(d + n, y + j * ps + (oy + 2) * rw, 0.f);  // and its right one (wide: to the row's end)
    }
    // The top border row with the map's first pixel, the rest of the plane with its last.
    const int64_t bottom = (g.oh + 1) * rw;
    for (int64_t j = 0; j < k; ++j) {
      if (oy == 0 && x0 == 0) std::fill(y + j * ps, y + j * ps + rw, 0.f);
      if (oy == g.oh - 1 && x1 == g.ow) std::fill(y + j * ps + bottom, y + (j + 1) * ps, 0.f);
    }
  });
}

void nhwc_rows_to_resident(const float* x, int64_t x_stride, int64_t k, int64_t h, int64_t w, int64_t oy0, int64_t oy1,
                           float* planes, bool wide, float* tmp) {
  // Each row transposed into tmp (channel j's pixels at tmp + j * tw), then stored as a sparse
  // conv stores its results: in aligned vectors with the borders (store_block_resident). (Stored
  // straight from the transposed tiles, the unaligned 16-float runs into 64 planes took as long
  // as the pool: 0.06 ms on ResNet-18's 56x56 x 64 map on 2 threads.)
  const int64_t tw = (w + 15) / 16 * 16;
  const Geometry row_geo{h, w, 1, 1, h, w, 0, 0, 1};  // flat position oy * w + ox
  const graph::FusedActivation none{};
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const float* row = x + (oy - oy0) * w * x_stride;
    int64_t j0 = 0;
#ifdef SLUICE_PLANAR_TILES
    for (; j0 + T <= k; j0 += T)
      for (int64_t x0 = 0; x0 < w; x0 += T) {
        const int64_t n = std::min<int64_t>(T, w - x0);
        Vec v[T];
        for (int64_t i = 0; i < T; ++i) v[i] = i < n ? load_n(row + (x0 + i) * x_stride + j0, T) : zero();
        transpose(v);
        for (int64_t jj = 0; jj < T; ++jj) store_n(tmp + (j0 + jj) * tw + x0, v[jj], n);
      }
#endif
    for (int64_t j = j0; j < k; ++j)
      for (int64_t xx = 0; xx < w; ++xx) tmp[j * tw + xx] = row[xx * x_stride + j];
    store_block_resident(row_geo, tmp, tw, oy * w, w, k, planes, nullptr, nullptr, none, wide);
  }
}

void add_nhwc_sum(const Geometry& g, float* dst, int64_t dst_stride, int64_t q0, int64_t npx, int64_t k,
                  const float* sum, int64_t sum_stride) {
  const int64_t gw = g.grid_w();
  int64_t oy = q0 / gw, ox = q0 - oy * gw;  // flat position q0 + i's pixel, as in store_block
  auto next = [&] {
    if (++ox == gw) ox = 0, ++oy;
  };
#ifdef SLUICE_PLANAR_TILES
  // store_block's tiles the other way: T pixels' runs of T channels, transposed to T channels'
  // runs of T pixels, added to the results.
  for (int64_t i0 = 0; i0 < npx; i0 += T) {
    const int64_t n = std::min<int64_t>(T, npx - i0), ty = oy, tx = ox;
    const bool in_row = tx + n <= g.ow && ty < g.oh;  // consecutive pixels of one row (the common case)
    for (int64_t j0 = 0; j0 < k; j0 += T) {
      const int64_t jn = std::min<int64_t>(T, k - j0);
      Vec r[T];
      if (in_row) {
        const float* s = sum + (ty * g.ow + tx) * sum_stride + j0;
        for (int64_t i = 0; i < T; ++i) r[i] = i < n ? load_n(s + i * sum_stride, jn) : zero();
      } else {
        oy = ty, ox = tx;
        for (int64_t i = 0; i < T; ++i, next())
          r[i] = i < n && ox < g.ow && oy < g.oh ? load_n(sum + (oy * g.ow + ox) * sum_stride + j0, jn) : zero();
      }
      transpose(r);
      for (int64_t jj = 0; jj < jn; ++jj) {
        float* d = dst + (j0 + jj) * dst_stride + i0;
        store_n(d, add(load_n(d, n), r[jj]), n);
      }
    }
    oy = ty, ox = tx + n;  // past the tile
    for (; ox >= gw; ox -= gw) ++oy;
  }
  return;
#endif
  for (int64_t i = 0; i < npx; ++i, next()) {
    if (ox >= g.ow || oy >= g.oh) continue;
    for (int64_t j = 0; j < k; ++j) dst[j * dst_stride + i] += sum[(oy * g.ow + ox) * sum_stride + j];
  }
}

void add_resident_sum(const Geometry& g, float* dst, int64_t dst_stride, int64_t q0, int64_t npx, int64_t k,
                      const float* sum, bool wide) {
  const int64_t gw = g.grid_w(), ps = resident(g.oh, g.ow, wide).plane();
  for_row_segments(g, q0, npx, [&](int64_t oy, int64_t x0, int64_t x1) {
    for (int64_t j = 0; j < k; ++j) {
      float* d = dst + j * dst_stride + (oy * gw + x0 - q0);
      const float* r = sum + j * ps + resident_index(g.ow, oy, x0, wide);
      for (int64_t i = 0; i < x1 - x0; ++i) d[i] += r[i];
    }
  });
}

void unpack_resident(const Geometry& g, const float* planes, int64_t k, float* y, const float* bias, const float* sum,
                     const graph::FusedActivation& act) {
  const int64_t q = g.flat_out(), gw = g.grid_w();
#pragma omp parallel for schedule(static) if (g.oh * g.ow * k > 16384)
  for (int64_t oy = 0; oy < g.oh; ++oy)
    store_block_resident(g, planes + oy * gw, q, oy * gw, g.ow, k, y, bias, sum, act);
}

}  // namespace sluice::ops::planar
