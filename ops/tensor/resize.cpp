// Resize (opsets 10-21) and Upsample (7-9): nearest, linear and cubic, on any axes, with the
// coordinate transformation modes that do not need a region of interest. The output size
// comes from constant scales (floor(input * scale)) or constant sizes; each output coordinate
// maps back to the input as the spec says; linear interpolates between the two nearest
// entries of every resized axis (the coordinate clamped to the input, as ONNX Runtime does),
// cubic over four with the spec's coefficients (edge entries repeated, or with
// exclude_outside given weight 0 and the rest renormalised).
#include <algorithm>
#include <cmath>

#include <omp.h>

#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

const Tensor* float_input(InferContext& ctx, size_t i) {
  if (!ctx.has_input(i)) return nullptr;
  const Tensor& t = ctx.require_const(i, i == 1 && ctx.node().op == graph::OpType::Upsample ? "scales" : "scales or sizes");
  return t.numel() == 0 ? nullptr : &t;
}

void infer_resize(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ResizeParams>();
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input X", x.dtype));
  const auto rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) ctx.fail("input X must have rank >= 1");
  const bool upsample = ctx.node().op == graph::OpType::Upsample;
  // Which inputs hold scales and sizes: Upsample (X, scales) at 9, an attribute at 7; Resize at
  // opset 10 (X, scales); from 11 (X, roi, scales, sizes).
  const int64_t opset = ctx.graph().opset;
  std::vector<double> scales;
  std::vector<int64_t> sizes;
  if (upsample) {
    if (const Tensor* t = float_input(ctx, 1)) {
      if (t->dtype() != DType::Float32) ctx.fail("scales must be float32");
      scales.assign(t->data<float>(), t->data<float>() + t->numel());
    } else {
      scales.assign(p.scales.begin(), p.scales.end());
    }
  } else if (opset < 11) {
    const Tensor* t = float_input(ctx, 1);
    if (!t || t->dtype() != DType::Float32) ctx.fail("scales (input 1) must be a float32 constant");
    scales.assign(t->data<float>(), t->data<float>() + t->numel());
  } else {
    if (ctx.has_input(1) && ctx.in(1).dtype != DType::Undefined) {
      int64_t n = 1;
      for (int64_t d : ctx.in(1).shape) n *= d;
      if (n != 0 && p.coordinates == "tf_crop_and_resize") ctx.fail("tf_crop_and_resize (a region of interest) is not supported");
    }
    if (const Tensor* t = float_input(ctx, 2)) {
      if (t->dtype() != DType::Float32) ctx.fail("scales must be float32");
      scales.assign(t->data<float>(), t->data<float>() + t->numel());
    }
    if (ctx.has_input(3) && ctx.const_in(3) && ctx.const_in(3)->numel() > 0) sizes = ctx.require_ints(3, "sizes");
    else if (ctx.has_input(3) && !ctx.const_in(3)) ctx.require_const(3, "sizes");
    if (!scales.empty() && !sizes.empty()) ctx.fail("give scales or sizes, not both");
  }
  if (scales.empty() && sizes.empty()) ctx.fail("needs scales or sizes");
  if (upsample)
    for (double sc : scales)
      if (sc < 1) ctx.fail("Upsample scales must be >= 1 (the spec's rule), got " + std::to_string(sc) + "; downsampling is Resize's");
  // Axes (opset 18): scales / sizes name only those axes; the others keep their size.
  std::vector<int64_t> axes = p.axes;
  if (axes.empty())
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  for (auto& a : axes) a = normalize_axis(ctx, a, rank);
  for (size_t i = 0; i < axes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (axes[i] == axes[j]) ctx.fail("axes " + ints_str(p.axes) + " name axis " + std::to_string(axes[i]) + " twice");
  const size_t n = scales.empty() ? sizes.size() : scales.size();
  if (n != axes.size())
    ctx.fail(std::string(scales.empty() ? "sizes" : "scales") + " has " + std::to_string(n) + " entries for " +
             std::to_string(axes.size()) + " axes");
  p.resolved.assign(static_cast<size_t>(rank), 1.0);
  Shape out = x.shape;
  for (size_t i = 0; i < axes.size(); ++i) {
    const auto d = static_cast<size_t>(axes[i]);
    if (!scales.empty()) {
      const double sc = scales[i];
      if (!(sc > 0) || !std::isfinite(sc)) ctx.fail("scale " + std::to_string(sc) + " must be a positive number");
      // In float32, as ONNX Runtime and ONNX's shape inference do: 10 x 0.7f is 7 there, and
      // 6.99999988 (so 6) in double. (PyTorch's own 0.7, a double, also gives 7.)
      const double o = std::floor(static_cast<double>(static_cast<float>(x.shape[d]) * static_cast<float>(sc)));
      if (o > 1e12) ctx.fail("the output along axis " + std::to_string(d) + " would be too large");
      out[d] = static_cast<int64_t>(o);
      p.resolved[d] = sc;
    } else {
      if (sizes[i] < 0) ctx.fail("sizes has a negative entry");
      out[d] = sizes[i];
      p.resolved[d] = x.shape[d] ? static_cast<float>(sizes[i]) / static_cast<float>(x.shape[d]) : 1.f;
    }
  }
  for (size_t d = 0; d < static_cast<size_t>(rank); ++d)
    if (x.shape[d] == 0 && out[d] > 0)
      ctx.fail("axis " + std::to_string(d) + " is empty in the input and would have " + std::to_string(out[d]) +
               " entries in the output: nothing to interpolate from");
  checked_numel(ctx, out);
  ctx.set_output(0, DType::Float32, out);
}

// Where output coordinate o along an axis of in -> out entries falls in the input. In float,
// as ONNX Runtime computes it: 8 / 1.6f is 5 in float and 4.99999992 in double, and nearest
// with floor rounding would pick another entry.
float source_coordinate(const std::string& mode, float o, float scale, int64_t in, int64_t out) {
  if (mode == "asymmetric") return o / scale;
  if (mode == "align_corners") return out == 1 ? 0.f : o * static_cast<float>(in - 1) / static_cast<float>(out - 1);
  if (mode == "pytorch_half_pixel") return out > 1 ? (o + 0.5f) / scale - 0.5f : 0.f;
  if (mode == "tf_half_pixel_for_nn") return (o + 0.5f) / scale;
  if (mode == "half_pixel_symmetric") {
    const float adj = static_cast<float>(out) / (scale * static_cast<float>(in));
    const float center = static_cast<float>(in) / 2.f, offset = center * (1 - adj);
    return offset + (o + 0.5f) / scale - 0.5f;
  }
  return (o + 0.5f) / scale - 0.5f;  // half_pixel
}

int64_t nearest_index(const std::string& mode, double c, int64_t in, bool down) {
  double r;
  if (mode == "simple") r = down ? std::ceil(c) : std::trunc(c);
  else if (mode == "floor") r = std::floor(c);
  else if (mode == "ceil") r = std::ceil(c);
  else if (mode == "round_prefer_ceil") r = std::round(c);  // halves away from zero: up for c >= 0
  else r = (c - std::floor(c) == 0.5) ? std::floor(c) : std::round(c);  // round_prefer_floor
  return std::clamp<int64_t>(static_cast<int64_t>(r), 0, in - 1);
}

// Per axis and output index: up to four source indices and their weights (1 for an axis
// that keeps its size or for nearest, 2 for linear, 4 for cubic).
struct Taps {
  int n = 1;
  int64_t i[4] = {0, 0, 0, 0};
  double w[4] = {1, 0, 0, 0};
};

std::vector<Taps> axis_taps(const graph::ResizeParams& p, size_t d, int64_t n_in, int64_t n_out) {
  std::vector<Taps> t(static_cast<size_t>(n_out));
  const bool same = n_in == n_out && p.resolved[d] == 1.0;
  for (int64_t o = 0; o < n_out; ++o) {
    Taps& k = t[static_cast<size_t>(o)];
    if (same) {
      k.i[0] = o;
      continue;
    }
    const double c = source_coordinate(p.coordinates, static_cast<float>(o), static_cast<float>(p.resolved[d]), n_in, n_out);
    if (p.mode == "nearest") {
      k.i[0] = nearest_index(p.nearest_mode, c, n_in, p.resolved[d] < 1.0);
    } else if (p.mode == "linear") {
      const double cc = std::clamp(c, 0.0, static_cast<double>(n_in - 1));
      const auto i0 = static_cast<int64_t>(std::floor(cc));
      k.n = 2;
      k.i[0] = i0, k.i[1] = std::min(i0 + 1, n_in - 1);
      k.w[1] = cc - static_cast<double>(i0), k.w[0] = 1 - k.w[1];
    } else {  // cubic: taps at floor(c) - 1 .. floor(c) + 2
      const double A = p.cubic_a, x0 = std::floor(c), r = c - x0;
      const double s[4] = {r + 1, r, 1 - r, 2 - r};
      double sum = 0;
      k.n = 4;
      for (int j = 0; j < 4; ++j) {
        const double z = s[j];
        k.w[j] = z <= 1 ? ((A + 2) * z - (A + 3)) * z * z + 1 : ((A * z - 5 * A) * z + 8 * A) * z - 4 * A;
        const auto idx = static_cast<int64_t>(x0) - 1 + j;
        if (p.exclude_outside && (idx < 0 || idx >= n_in)) k.w[j] = 0;
        k.i[j] = std::clamp<int64_t>(idx, 0, n_in - 1);
        sum += k.w[j];
      }
      if (p.exclude_outside && sum != 0)
        for (double& w : k.w) w /= sum;
    }
  }
  return t;
}

void resize(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ResizeParams>();
  const TensorView &x = in[0], &y = out[0];
  const size_t rank = x.shape.size();
  std::vector<std::vector<Taps>> taps(rank);
  for (size_t d = 0; d < rank; ++d) taps[d] = axis_taps(p, d, x.shape[d], y.shape[d]);
  const auto xs = strides_of(x.shape);
  const float* X = x.as<const float>();
  float* Y = y.as<float>();
  std::vector<int64_t> pos(rank, 0);
  std::vector<int> pick(rank, 0);
  const int64_t total = y.numel();
  for (int64_t e = 0; e < total; ++e) {
    double acc = 0;
    std::fill(pick.begin(), pick.end(), 0);
    for (;;) {  // every combination of one tap per axis
      double w = 1;
      int64_t off = 0;
      for (size_t d = 0; d < rank; ++d) {
        const Taps& k = taps[d][static_cast<size_t>(pos[d])];
        w *= k.w[pick[d]];
        off += k.i[pick[d]] * xs[d];
      }
      if (w != 0) acc += w * X[off];
      size_t d = rank;
      while (d-- > 0) {
        if (++pick[d] < taps[d][static_cast<size_t>(pos[d])].n) break;
        pick[d] = 0;
      }
      if (d == static_cast<size_t>(-1)) break;
    }
    Y[e] = static_cast<float>(acc);
    for (size_t d = rank; d-- > 0;) {
      if (++pos[d] < y.shape[d]) break;
      pos[d] = 0;
    }
  }
}

// Resize of H and W of a 4-D float map (N and C kept), NCHW or NHWC: the reference's taps per
// output row and column, computed once at plan time, those of weight 0 dropped (the reference
// skips them: an inf or NaN there does not reach the output), then per output value the sum
// over the row's and the column's taps, in float as ONNX Runtime computes it (the reference
// sums in double: the two differ by a float's rounding). NHWC: a pixel's channels in one
// vectorised loop per tap. The reference took 40 ms of a DeepLabV3's 65 (a 21-channel bilinear
// 32 -> 256 upsampling; ONNX Runtime 0.8 ms).
class FastResize final : public Kernel {
 public:
  FastResize(const graph::Graph& g, const graph::Node& n) : nhwc_(n.layout == graph::Layout::NHWC) {
    const auto& p = n.p<graph::ResizeParams>();
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ys = g.value(n.outputs[0]).shape;
    n_ = xs[0], c_ = xs[1], h_ = xs[2], w_ = xs[3], oh_ = ys[2], ow_ = ys[3];
    threads_ = std::max(1, omp_get_max_threads());
    rows_ = flat(axis_taps(p, 2, h_, oh_));
    cols_ = flat(axis_taps(p, 3, w_, ow_));
  }

  void run(const KernelArgs& a) const override {
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    const int64_t n = n_, planes = n_ * c_, work = planes * oh_ * ow_;
    if (nhwc_) {
#pragma omp parallel for collapse(2) schedule(static) if (work >= 65536)
      for (int64_t b = 0; b < n; ++b)
        for (int64_t oy = 0; oy < oh_; ++oy) {
          const Tap& r = rows_[static_cast<size_t>(oy)];
          for (int64_t ox = 0; ox < ow_; ++ox) {
            const Tap& col = cols_[static_cast<size_t>(ox)];
            float* __restrict o = y + ((b * oh_ + oy) * ow_ + ox) * c_;
            bool first = true;
            for (int i = 0; i < r.n; ++i)
              for (int j = 0; j < col.n; ++j) {
                const float wt = r.w[i] * col.w[j];
                const float* __restrict src = x + ((b * h_ + r.i[i]) * w_ + col.i[j]) * c_;
                if (first)
                  for (int64_t ch = 0; ch < c_; ++ch) o[ch] = wt * src[ch];
                else
                  for (int64_t ch = 0; ch < c_; ++ch) o[ch] += wt * src[ch];
                first = false;
              }
            if (first) std::fill(o, o + c_, 0.f);  // (no tap of weight other than 0)
          }
        }
      return;
    }
    // NCHW, separably: each input row interpolated along W into a plane of h x ow (gathers),
    // then each output row the weighted sum of its taps' rows (contiguous, vectorised).
#pragma omp parallel for schedule(static) num_threads(threads_) if (work >= 65536)
    for (int64_t pl = 0; pl < planes; ++pl) {
      float* __restrict rows = static_cast<float*>(a.scratch) + static_cast<int64_t>(omp_get_thread_num()) * h_ * ow_;
      const float* src = x + pl * h_ * w_;
      for (int64_t iy = 0; iy < h_; ++iy) {
        const float* row = src + iy * w_;
        float* hr = rows + iy * ow_;
        for (int64_t ox = 0; ox < ow_; ++ox) {
          const Tap& col = cols_[static_cast<size_t>(ox)];
          float acc = 0.f;
          for (int j = 0; j < col.n; ++j) acc += col.w[j] * row[col.i[j]];
          hr[ox] = acc;
        }
      }
      for (int64_t oy = 0; oy < oh_; ++oy) {
        const Tap& r = rows_[static_cast<size_t>(oy)];
        float* __restrict o = y + (pl * oh_ + oy) * ow_;
        if (r.n == 0) {
          std::fill(o, o + ow_, 0.f);
          continue;
        }
        const float* __restrict r0 = rows + r.i[0] * ow_;
        const float w0 = r.w[0];
        for (int64_t ox = 0; ox < ow_; ++ox) o[ox] = w0 * r0[ox];
        for (int i = 1; i < r.n; ++i) {
          const float* __restrict ri = rows + r.i[i] * ow_;
          const float wi = r.w[i];
          for (int64_t ox = 0; ox < ow_; ++ox) o[ox] += wi * ri[ox];
        }
      }
    }
  }
  size_t scratch_bytes() const override {
    return nhwc_ ? 0 : static_cast<size_t>(threads_ * h_ * ow_) * sizeof(float);
  }
  std::string name() const override { return nhwc_ ? "resize:nhwc" : "resize:planes"; }

 private:
  struct Tap {  // the taps of weight other than 0
    int n = 0;
    int64_t i[4] = {0, 0, 0, 0};
    float w[4] = {0, 0, 0, 0};
  };
  static std::vector<Tap> flat(const std::vector<Taps>& t) {
    std::vector<Tap> r(t.size());
    for (size_t o = 0; o < t.size(); ++o)
      for (int j = 0; j < t[o].n; ++j)
        if (t[o].w[j] != 0) {
          Tap& k = r[o];
          k.i[k.n] = t[o].i[j];
          k.w[k.n++] = static_cast<float>(t[o].w[j]);
        }
    return r;
  }

  bool nhwc_;
  int threads_;  // (the NCHW path's scratch holds a plane of rows per thread)
  int64_t n_, c_, h_, w_, oh_, ow_;
  std::vector<Tap> rows_, cols_;
};

}  // namespace

bool fast_resize_applies(const graph::Graph& g, const graph::Node& n) {
  if ((n.op != graph::OpType::Resize && n.op != graph::OpType::Upsample) || n.inputs.empty() || n.outputs.empty())
    return false;
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& y = g.value(n.outputs[0]);
  const auto& p = n.p<graph::ResizeParams>();
  return x.dtype == DType::Float32 && x.shape_known && y.shape_known && x.shape.size() == 4 && y.shape.size() == 4 &&
         p.resolved.size() == 4 && y.shape[0] == x.shape[0] && y.shape[1] == x.shape[1] && p.resolved[0] == 1.0 &&
         p.resolved[1] == 1.0 && (p.mode == "nearest" || p.mode == "linear" || p.mode == "cubic");
}

std::unique_ptr<Kernel> make_fast_resize(const graph::Graph& g, const graph::Node& n) {
  if (!fast_resize_applies(g, n) || (n.layout != graph::Layout::NCHW && n.layout != graph::Layout::NHWC)) return nullptr;
  // NCHW keeps a plane of h x ow interpolated rows per thread: not where that is far larger than
  // an output plane (a strong downsampling of H, an input of 10^6 rows to one), which the
  // reference kernel then does without scratch.
  const Shape& xs = g.value(n.inputs[0]).shape;
  const Shape& ys = g.value(n.outputs[0]).shape;
  if (n.layout == graph::Layout::NCHW && xs[2] * ys[3] > 4 * std::max<int64_t>(ys[2] * ys[3], 65536)) return nullptr;
  return std::make_unique<FastResize>(g, n);
}

void infer_Resize(InferContext& ctx) { infer_resize(ctx); }
void infer_Upsample(InferContext& ctx) { infer_resize(ctx); }
void reference_Resize(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) { resize(n, in, out); }
void reference_Upsample(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) { resize(n, in, out); }

}  // namespace sluice::ops
