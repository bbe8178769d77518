// Pooling on NHWC data: the inner loop runs over contiguous channels. A max or average pool
// may write resident planes (ops/conv/planar.h) for the sparse convs that read its output
// (passes::keep_planes_resident): each output row is pooled into a row of its own (in L1) and
// transposed into the planes.
#include <algorithm>
#include <limits>
#include <vector>

#include <omp.h>

#include "ops/common/simd.h"
#include "ops/conv/planar.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

class NhwcPool final : public Kernel {
 public:
  NhwcPool(const graph::Graph& g, const graph::Node& n) : op_(n.op) {
    if (!global()) p_ = n.p<graph::PoolParams>();
    const graph::Value& y = g.value(n.outputs[0]);
    planes_ = y.layout == graph::Layout::Planar, wide_ = y.wide_rows;
    if (planes_) {
      if (global() || y.shape.size() != 4)
        throw Error("internal error: '" + n.name + "' cannot write resident planes");
      // An output row NHWC, then channel by channel (rows rounded up to 16 floats).
      row_floats_ = y.shape[1] * (y.shape[3] + (y.shape[3] + 15) / 16 * 16);
      threads_ = std::max(1, omp_get_max_threads());
    }
  }
  size_t scratch_bytes() const override { return static_cast<size_t>(threads_ * row_floats_) * sizeof(float); }

  void run(const KernelArgs& a) const override {
    if (op_ == graph::OpType::GlobalAveragePool)
      global_average(a.in[0], a.out[0]);
    else if (op_ == graph::OpType::GlobalMaxPool)
      global_max(a.in[0], a.out[0]);
    else if (op_ == graph::OpType::MaxPool)
      window<true>(a.in[0], a.out[0], a.scratch);
    else
      window<false>(a.in[0], a.out[0], a.scratch);
  }
  std::string name() const override {
    return planes_ ? std::string("nhwc, resident planes out") + (wide_ ? " (rows padded to 16 floats)" : "") : "nhwc";
  }

 private:
  static void global_average(const TensorView& x, const TensorView& y) {
    const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
    const float* X = x.as<const float>();
    float* Y = y.as<float>();
    const float inv = 1.f / static_cast<float>(hw);
#pragma omp parallel for if (n > 1)
    for (int64_t b = 0; b < n; ++b) {
      float* yb = Y + b * c;
      std::fill(yb, yb + c, 0.f);
      for (int64_t i = 0; i < hw; ++i) {
        const float* xi = X + (b * hw + i) * c;
        for (int64_t ch = 0; ch < c; ++ch) yb[ch] += xi[ch];
      }
      for (int64_t ch = 0; ch < c; ++ch) yb[ch] *= inv;
    }
  }

  // The largest value per channel, NaN passed over (acc < x ? x : acc, from -inf), as the
  // reference kernel and ONNX Runtime: over the pixels, a vector of channels at a time.
  static void global_max(const TensorView& x, const TensorView& y) {
    const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
    const float* X = x.as<const float>();
    float* Y = y.as<float>();
    constexpr int64_t L = simd::kLanes;
#pragma omp parallel for if (n > 1)
    for (int64_t b = 0; b < n; ++b) {
      float* yb = Y + b * c;
      int64_t ch = 0;
      for (; ch + L <= c; ch += L) {
        simd::vf acc = -std::numeric_limits<float>::infinity() - simd::vf{};
        for (int64_t i = 0; i < hw; ++i) {
          const simd::vf v = *reinterpret_cast<const simd::vf*>(X + (b * hw + i) * c + ch);  // vf: aligned(4)
          acc = acc < v ? v : acc;
        }
        *reinterpret_cast<simd::vf*>(yb + ch) = acc;
      }
      for (; ch < c; ++ch) {
        float acc = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < hw; ++i) {
          const float v = X[(b * hw + i) * c + ch];
          acc = acc < v ? v : acc;
        }
        yb[ch] = acc;
      }
    }
  }
  bool global() const { return op_ == graph::OpType::GlobalAveragePool || op_ == graph::OpType::GlobalMaxPool; }

  // Per output pixel the in-image taps' offsets, then per vector of channels the taps folded
  // in registers and one store (the old loop loaded, combined and stored the output per tap:
  // a 3x3 max pool over 64 channels took ~500 cycles a pixel). Same order of operations, so
  // the same results: max as (acc < x ? x : acc), NaN taps skipped; averages summed in tap order.
  template <bool kMax>
  void window(const TensorView& x, const TensorView& y, void* scratch) const {
    const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
    const int64_t oh = y.shape[2], ow = y.shape[3], taps = p_.kernel_shape[0] * p_.kernel_shape[1];
    const float* X = x.as<const float>();
    float* Y = y.as<float>();
    const int64_t y_plane = planes_ ? c * planar::resident(oh, ow, wide_).plane() : 0;
    const int threads = threads_;
    constexpr int64_t L = simd::kLanes;
    const float init = kMax ? -std::numeric_limits<float>::infinity() : 0.f;
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oy = 0; oy < oh; ++oy) {
        std::vector<const float*> at(static_cast<size_t>(taps));
        // Planes out: the row pooled into this thread's row of the scratch first.
        const int t = omp_get_thread_num();
        float* row = planes_ && t < threads ? static_cast<float*>(scratch) + t * row_floats_ : nullptr;
        std::vector<float> own(planes_ && !row ? static_cast<size_t>(row_floats_) : 0);  // (more threads than planned)
        if (planes_ && !row) row = own.data();
        for (int64_t ox = 0; ox < ow; ++ox) {
          float* yo = planes_ ? row + ox * c : Y + ((b * oh + oy) * ow + ox) * c;
          int64_t count = 0, padded = 0;
          for (int64_t ky = 0; ky < p_.kernel_shape[0]; ++ky) {
            const int64_t iy = oy * p_.strides[0] - p_.pads[0] + ky * p_.dilations[0];
            for (int64_t kx = 0; kx < p_.kernel_shape[1]; ++kx) {
              const int64_t ix = ox * p_.strides[1] - p_.pads[1] + kx * p_.dilations[1];
              if (iy < h + p_.pads[2] && ix < w + p_.pads[3]) ++padded;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              at[static_cast<size_t>(count++)] = X + ((b * h + iy) * w + ix) * c;
            }
          }
          const float inv = kMax ? 1.f : 1.f / static_cast<float>(p_.count_include_pad ? padded : std::max<int64_t>(count, 1));
          // Vectors at channel starts 0, L, 2L, ... and, for a partial last one, c - L (it
          // recomputes some channels, with the same operations): four independent chains at a
          // time (max and add have a 3-4 cycle latency).
          int64_t ch = 0;
          while (ch + L <= c || (ch < c && c >= L)) {
            int64_t start[4], nk = 0;
            for (; nk < 4 && (ch + L <= c || (ch < c && c >= L)); ++nk) {
              start[nk] = std::min(ch, c - L);
              ch = start[nk] + L;
            }
            simd::vf acc[4];
            for (int64_t k = 0; k < nk; ++k) acc[k] = init - simd::vf{};
            for (int64_t t = 0; t < count; ++t)
              for (int64_t k = 0; k < nk; ++k) {
                const simd::vf v = *reinterpret_cast<const simd::vf*>(at[static_cast<size_t>(t)] + start[k]);  // vf: aligned(4)
                if constexpr (kMax) acc[k] = acc[k] < v ? v : acc[k];
                else acc[k] += v;
              }
            for (int64_t k = 0; k < nk; ++k) {
              if constexpr (!kMax) acc[k] *= inv;
              *reinterpret_cast<simd::vf*>(yo + start[k]) = acc[k];
            }
          }
          for (; ch < c; ++ch) {
            float acc = init;
            for (int64_t t = 0; t < count; ++t) {
              const float v = at[static_cast<size_t>(t)][ch];
              acc = kMax ? (acc < v ? v : acc) : acc + v;
            }
            yo[ch] = kMax ? acc : acc * inv;
          }
        }
        if (planes_) planar::nhwc_rows_to_resident(row, c, c, oh, ow, oy, oy + 1, Y + b * y_plane, wide_, row + ow * c);
      }
  }

  graph::OpType op_;
  graph::PoolParams p_;
  bool planes_ = false, wide_ = false;  // output in resident planes (wide rows)
  int64_t row_floats_ = 0;              // an output row, NHWC and planar
  int threads_ = 0;                     // rows in the scratch
};

}  // namespace

std::unique_ptr<Kernel> make_nhwc_pool(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NHWC || g.value(n.inputs[0]).shape.size() != 4) return nullptr;
  return std::make_unique<NhwcPool>(g, n);
}

}  // namespace sluice::ops
