// SluiceShift (design.md §8): a zero-FLOP memory operation. out[c][y][x] = in[src[c]][y+dy[c]][x+dx[c]],
// zero outside. The NHWC kernel copies, per output pixel, runs of output channels that share
// a shift and read consecutive input channels (a shift net has ~9 such runs), and zero-fills
// the runs that fall outside.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "ops/kernel.h"
#include "ops/shift/shift.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_SluiceShift(InferContext& ctx) {
  const auto& p = ctx.node().p<graph::ShiftParams>();
  const auto& x = ctx.in(0);
  if (x.shape.size() != 4 || x.dtype != DType::Float32) ctx.fail("shift needs a 4-D float32 input");
  for (int32_t c : p.src)
    if (c < 0 || c >= x.shape[1]) ctx.fail("shift reads channel " + std::to_string(c) + " of " + std::to_string(x.shape[1]));
  if (p.sy < 1 || p.sx < 1 || p.out_h < 0 || p.out_w < 0) ctx.fail("shift strides must be >= 1");
  ctx.set_output(0, x.dtype, {x.shape[0], static_cast<int64_t>(p.src.size()), p.out_h ? p.out_h : x.shape[2], p.out_w ? p.out_w : x.shape[3]});
}

void reference_SluiceShift(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ShiftParams>();
  const Shape& s = in[0].shape;
  const int64_t n = s[0], c = s[1], h = s[2], w = s[3], m = static_cast<int64_t>(p.src.size());
  const int64_t oh = out[0].shape[2], ow = out[0].shape[3];
  const float* X = in[0].as<const float>();
  float* Y = out[0].as<float>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < m; ++o)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x) {
          const int64_t sy = y * p.sy + p.dy[static_cast<size_t>(o)], sx = x * p.sx + p.dx[static_cast<size_t>(o)];
          Y[((b * m + o) * oh + y) * ow + x] = sy >= 0 && sy < h && sx >= 0 && sx < w
                                                 ? X[((b * c + p.src[static_cast<size_t>(o)]) * h + sy) * w + sx]
                                                 : 0.f;
        }
}

namespace shift {

std::vector<Run> runs_of(const graph::ShiftParams& p) {
  std::vector<Run> runs;
  for (size_t o = 0; o < p.src.size(); ++o) {
    if (!runs.empty()) {
      Run& r = runs.back();
      if (r.dy == p.dy[o] && r.dx == p.dx[o] && r.src0 + r.len == p.src[o]) {
        ++r.len;
        continue;
      }
    }
    runs.push_back({static_cast<int32_t>(o), p.src[o], 1, p.dy[o], p.dx[o]});
  }
  return runs;
}

// Rows [y0, y1) of one NHWC sample: x [h, w, c] -> y [rows, w, m].
namespace {

// n floats from s to d (n small: a run of channels), as masked 16-float vectors.
inline void copy_run(float* d, const float* s, int64_t n) {
#ifdef __AVX512F__
  for (; n >= 16; n -= 16, d += 16, s += 16) _mm512_storeu_ps(d, _mm512_loadu_ps(s));
  if (n > 0) {
    const __mmask16 k = static_cast<__mmask16>((1u << n) - 1);
    _mm512_mask_storeu_ps(d, k, _mm512_maskz_loadu_ps(k, s));
  }
#else
  for (int64_t i = 0; i < n; ++i) d[i] = s[i];
#endif
}

inline void zero_run(float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = 0.f;
}

}  // namespace

void shift_rows(const std::vector<Run>& runs, const float* x, int64_t h, int64_t w, int64_t c, int64_t m, int64_t y0,
                int64_t y1, float* y) {
  // Run by run, row by row: the in-range pixels of a row are one strided copy, the rest zeros.
  for (int64_t yy = y0; yy < y1; ++yy) {
    float* row = y + (yy - y0) * w * m;
    for (const Run& r : runs) {
      const int64_t sy = yy + r.dy;
      const int64_t x0 = std::clamp<int64_t>(-r.dx, 0, w), x1 = std::clamp<int64_t>(w - r.dx, 0, w);
      if (sy < 0 || sy >= h || x0 >= x1) {
        for (int64_t xx = 0; xx < w; ++xx) zero_run(row + xx * m + r.out0, r.len);
        continue;
      }
      for (int64_t xx = 0; xx < x0; ++xx) zero_run(row + xx * m + r.out0, r.len);
      const float* src = x + (sy * w + r.dx) * c + r.src0;
      for (int64_t xx = x0; xx < x1; ++xx) copy_run(row + xx * m + r.out0, src + xx * c, r.len);
      for (int64_t xx = x1; xx < w; ++xx) zero_run(row + xx * m + r.out0, r.len);
    }
  }
}

}  // namespace shift

namespace {

class NhwcShift final : public Kernel {
 public:
  explicit NhwcShift(const graph::Graph& g, const graph::Node& n) : runs_(shift::runs_of(n.p<graph::ShiftParams>())) {
    const auto& p = n.p<graph::ShiftParams>();
    const Shape& s = g.value(n.inputs[0]).shape;
    n_ = s[0];
    c_ = s[1];
    h_ = s[2];
    w_ = s[3];
    m_ = g.value(n.outputs[0]).shape[1];
    oh_ = g.value(n.outputs[0]).shape[2];
    ow_ = g.value(n.outputs[0]).shape[3];
    sy_ = p.sy;
    sx_ = p.sx;
    same_ = p.same_size();
#ifdef __AVX512F__
    // Runs of 4 channels or fewer on average (shifts that change channel by channel): per
    // pixel, the channels 16 at a time gathered at their offsets from the pixel, where every
    // shift reads inside the map. Run by run, 96 runs of one channel at 56x56 took 0.53 ms,
    // 4x oneDNN's depthwise conv that the shift replaced.
    if (static_cast<int64_t>(runs_.size()) * 4 > m_ && m_ > 0) {
      dy_lo_ = *std::min_element(p.dy.begin(), p.dy.end()), dy_hi_ = *std::max_element(p.dy.begin(), p.dy.end());
      dx_lo_ = *std::min_element(p.dx.begin(), p.dx.end()), dx_hi_ = *std::max_element(p.dx.begin(), p.dx.end());
      bool fits = true;
      off_.assign(static_cast<size_t>((m_ + 15) / 16 * 16), 0);
      for (int64_t o = 0; o < m_; ++o) {
        const int64_t v = (static_cast<int64_t>(p.dy[o]) * w_ + p.dx[o]) * c_ + p.src[o];
        fits = fits && v >= INT32_MIN / 2 && v <= INT32_MAX / 2;
        off_[static_cast<size_t>(o)] = static_cast<int32_t>(v);
      }
      if (!fits) off_.clear();
      dy_ = p.dy, dx_ = p.dx, src_ = p.src;
    }
#endif
  }
  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
#ifdef __AVX512F__
    if (!off_.empty()) {
#pragma omp parallel for collapse(2) if (n_ * oh_ * ow_ * m_ > 65536)
      for (int64_t b = 0; b < n_; ++b)
        for (int64_t y = 0; y < oh_; ++y)
          for (int64_t x = 0; x < ow_; ++x) gather_pixel(X + b * h_ * w_ * c_, y, x, Y + ((b * oh_ + y) * ow_ + x) * m_);
      return;
    }
#endif
    if (!same_) {  // strided or cropped: pixel by pixel, each run a copy or zeros
#pragma omp parallel for collapse(2) if (n_ * oh_ * ow_ * m_ > 65536)
      for (int64_t b = 0; b < n_; ++b)
        for (int64_t y = 0; y < oh_; ++y)
          for (int64_t x = 0; x < ow_; ++x) {
            float* dst = Y + ((b * oh_ + y) * ow_ + x) * m_;
            for (const shift::Run& r : runs_) {
              const int64_t sy = y * sy_ + r.dy, sx = x * sx_ + r.dx;
              if (sy < 0 || sy >= h_ || sx < 0 || sx >= w_) std::fill_n(dst + r.out0, r.len, 0.f);
              else std::copy_n(X + ((b * h_ + sy) * w_ + sx) * c_ + r.src0, r.len, dst + r.out0);
            }
          }
      return;
    }
#pragma omp parallel for collapse(2) if (n_ * h_ * w_ * m_ > 65536)
    for (int64_t b = 0; b < n_; ++b)
      for (int64_t y = 0; y < h_; ++y)
        shift::shift_rows(runs_, X + b * h_ * w_ * c_, h_, w_, c_, m_, y, y + 1, Y + (b * h_ + y) * w_ * m_);
  }
  std::string name() const override {
    return "shift:nhwc(" + std::to_string(runs_.size()) + " runs" + (off_.empty() ? "" : ", gathered") +
           (same_ ? "" : ", stride " + std::to_string(sy_) + "x" + std::to_string(sx_)) + ")";
  }

 private:
#ifdef __AVX512F__
  // Output pixel (y, x) of the sample whose input is xb: gathered where every shift reads
  // inside the map, else channel by channel (zero outside).
  void gather_pixel(const float* xb, int64_t y, int64_t x, float* dst) const {
    const int64_t by = y * sy_, bx = x * sx_;
    if (by + dy_lo_ >= 0 && by + dy_hi_ < h_ && bx + dx_lo_ >= 0 && bx + dx_hi_ < w_) {
      const float* base = xb + (by * w_ + bx) * c_;
      int64_t o = 0;
      for (; o + 16 <= m_; o += 16) {
        const __m512i idx = _mm512_loadu_si512(off_.data() + o);
        // (the masked form with every lane set: the plain one has GCC 12 warn of an undefined source)
        _mm512_storeu_ps(dst + o, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff, idx, base, 4));
      }
      if (o < m_) {
        const __mmask16 k = static_cast<__mmask16>((1u << (m_ - o)) - 1);
        const __m512i idx = _mm512_loadu_si512(off_.data() + o);  // (padded to whole vectors)
        _mm512_mask_storeu_ps(dst + o, k, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, base, 4));
      }
      return;
    }
    for (int64_t o = 0; o < m_; ++o) {
      const int64_t sy = by + dy_[static_cast<size_t>(o)], sx = bx + dx_[static_cast<size_t>(o)];
      dst[o] = sy >= 0 && sy < h_ && sx >= 0 && sx < w_ ? xb[(sy * w_ + sx) * c_ + src_[static_cast<size_t>(o)]] : 0.f;
    }
  }
#endif
  std::vector<int32_t> off_;  // per output channel: its read's offset from the pixel, in floats; empty: run by run
  std::vector<int32_t> dy_, dx_, src_;
  int64_t dy_lo_ = 0, dy_hi_ = 0, dx_lo_ = 0, dx_hi_ = 0;
  std::vector<shift::Run> runs_;
  int64_t n_, c_, h_, w_, m_, oh_, ow_, sy_, sx_;
  bool same_;
};

}  // namespace

namespace {
// A shift in NCHW (one that reads a model input as it is, before any conv): per output channel
// and row, one copy of the source row's in-range stretch (a strided one element by element)
// and zeros either side. (It ran on the reference kernel, element by element.)
class NchwShift final : public Kernel {
 public:
  NchwShift(const graph::Graph& g, const graph::Node& n) : p_(n.p<graph::ShiftParams>()) {
    const Shape& s = g.value(n.inputs[0]).shape;
    const Shape& o = g.value(n.outputs[0]).shape;
    n_ = s[0], c_ = s[1], h_ = s[2], w_ = s[3], m_ = o[1], oh_ = o[2], ow_ = o[3];
  }
  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
#pragma omp parallel for collapse(2) if (n_ * m_ * oh_ * ow_ > 65536)
    for (int64_t b = 0; b < n_; ++b)
      for (int64_t o = 0; o < m_; ++o) {
        const int64_t dy = p_.dy[static_cast<size_t>(o)], dx = p_.dx[static_cast<size_t>(o)], sx = p_.sx;
        const float* plane = X + (b * c_ + p_.src[static_cast<size_t>(o)]) * h_ * w_;
        // Output columns [x0, x1) read inside the row: 0 <= x * sx + dx < w.
        const int64_t x0 = std::clamp<int64_t>(dx < 0 ? (-dx + sx - 1) / sx : 0, 0, ow_);
        const int64_t x1 = std::clamp<int64_t>(w_ - dx <= 0 ? 0 : (w_ - dx + sx - 1) / sx, x0, ow_);
        for (int64_t y = 0; y < oh_; ++y) {
          float* row = Y + ((b * m_ + o) * oh_ + y) * ow_;
          const int64_t iy = y * p_.sy + dy;
          if (iy < 0 || iy >= h_ || x0 >= x1) {
            std::fill_n(row, ow_, 0.f);
            continue;
          }
          std::fill_n(row, x0, 0.f);
          const float* in = plane + iy * w_;  // input column x * sx + dx for output column x
          if (sx == 1)
            std::copy(in + x0 + dx, in + x1 + dx, row + x0);
          else
            for (int64_t x = x0; x < x1; ++x) row[x] = in[x * sx + dx];
          std::fill(row + x1, row + ow_, 0.f);
        }
      }
  }
  std::string name() const override { return "shift:nchw"; }

 private:
  graph::ShiftParams p_;
  int64_t n_, c_, h_, w_, m_, oh_, ow_;
};
}  // namespace

std::unique_ptr<Kernel> make_nhwc_shift(const graph::Graph& g, const graph::Node& n) {
  if (n.layout == graph::Layout::NCHW) return std::make_unique<NchwShift>(g, n);
  if (n.layout != graph::Layout::NHWC) return nullptr;
  return std::make_unique<NhwcShift>(g, n);
}

}  // namespace sluice::ops
