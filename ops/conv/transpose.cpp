// ConvTranspose (1-D and 2-D): shape inference with the spec's output_shape / auto_pad rules,
// a reference kernel that scatters each input pixel through the kernel:
//   y[n, g Mg + m, i s + k d - pad] += x[n, g Cg + c, i] * w[g Cg + c, m, k]  (+ bias[m]),
// oneDNN's deconvolution for constant weights and non-negative pads (NCHW), and for strided 2-D
// ones on NHWC a 1x1 conv (stride = kernel, unpadded) or one oneDNN conv per output phase.
#include <algorithm>
#include <array>
#include <optional>

#include "ops/common/onednn.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_ConvTranspose(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ConvTransposeParams>();
  const auto& x = ctx.in(0);
  const auto& w = ctx.in(1);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input X", x.dtype));
  if (x.shape.size() != 3 && x.shape.size() != 4)
    ctx.fail("input X must be [N, C, W] or [N, C, H, W] (1-D or 2-D), got " + shape_str(x.shape));
  const size_t sr = x.shape.size() - 2;
  ctx.expect_input(1, DType::Float32, static_cast<int>(x.shape.size()));
  const int64_t c = x.shape[1];
  if (c % p.group) ctx.fail("input channels (" + std::to_string(c) + ") are not divisible by group " + std::to_string(p.group));
  if (w.shape[0] != c)
    ctx.fail("weight W of shape " + shape_str(w.shape) + " must have " + std::to_string(c) + " (the input channels) as its first dimension");
  const int64_t m = w.shape[1] * p.group;
  if (p.kernel_shape.empty()) p.kernel_shape.assign(w.shape.begin() + 2, w.shape.end());
  if (p.kernel_shape != Shape(w.shape.begin() + 2, w.shape.end()))
    ctx.fail("kernel_shape " + ints_str(p.kernel_shape) + " does not match the weight's " + shape_str(w.shape));
  // Attributes left at their defaults were parsed for 2 spatial axes: size them to this input.
  auto fit = [&](std::vector<int64_t>& v, size_t n, int64_t dflt, const char* name) {
    if (v.empty() || (v.size() != n && std::all_of(v.begin(), v.end(), [&](int64_t e) { return e == dflt; })))
      v.assign(n, dflt);
    if (v.size() != n)
      ctx.fail(std::string("attribute '") + name + "' " + ints_str(v) + " must have " + std::to_string(n) + " entries");
  };
  fit(p.strides, sr, 1, "strides");
  fit(p.dilations, sr, 1, "dilations");
  fit(p.pads, 2 * sr, 0, "pads");
  fit(p.output_padding, sr, 0, "output_padding");
  for (size_t i = 0; i < sr; ++i) {
    if (p.strides[i] < 1 || p.dilations[i] < 1) ctx.fail("strides and dilations must be >= 1");
    if (p.output_padding[i] < 0 || p.output_padding[i] >= std::max(p.strides[i], p.dilations[i]))
      ctx.fail("output_padding " + ints_str(p.output_padding) + " must be >= 0 and less than the stride or the dilation");
  }
  if (ctx.has_input(2)) {
    ctx.expect_input(2, DType::Float32, 1);
    if (ctx.in(2).shape[0] != m)
      ctx.fail("bias B has " + std::to_string(ctx.in(2).shape[0]) + " entries for " + std::to_string(m) + " output channels");
  }
  Shape out{x.shape[0], m};
  std::vector<int64_t> target = p.output_shape;
  if (target.size() == sr + 2) target.erase(target.begin(), target.begin() + 2);  // given with N and C
  if (!target.empty() && target.size() != sr)
    ctx.fail("output_shape " + ints_str(p.output_shape) + " must have " + std::to_string(sr) + " spatial entries");
  const bool same = p.auto_pad == "SAME_UPPER" || p.auto_pad == "SAME_LOWER";
  for (size_t i = 0; i < sr; ++i) {
    const int64_t in = x.shape[2 + i];
    int64_t k = 0, step = 0, full = 0;  // the output with no padding: strides (in - 1) + output_padding + k
    if (__builtin_mul_overflow(p.kernel_shape[i] - 1, p.dilations[i], &k) || __builtin_add_overflow(k, 1, &k) ||
        __builtin_mul_overflow(p.strides[i], std::max<int64_t>(in - 1, 0), &step) ||
        __builtin_add_overflow(step, p.output_padding[i] + k, &full) || full > (int64_t{1} << 40))
      ctx.fail("the output along spatial axis " + std::to_string(i) + " (strides " + ints_str(p.strides) + ", dilations " +
               ints_str(p.dilations) + ", kernel " + ints_str(p.kernel_shape) + ") is too large");
    if (p.auto_pad == "VALID") p.pads[i] = p.pads[i + sr] = 0;
    // (Pads past +-2^40 would overflow the difference below; no output of such a size fits in memory.)
    constexpr int64_t kHuge = int64_t{1} << 40;
    if (std::abs(p.pads[i]) > kHuge || std::abs(p.pads[i + sr]) > kHuge)
      ctx.fail("pads " + ints_str(p.pads) + " are too large along spatial axis " + std::to_string(i) + " (its output is " +
               std::to_string(full) + " entries before they are removed)");
    int64_t o = full - p.pads[i] - p.pads[i + sr];
    if (!target.empty() || same) {
      o = !target.empty() ? target[i] : in * p.strides[i];
      const int64_t total = full - o;
      if (total < 0 && target.empty()) ctx.fail("auto_pad gives a negative padding");
      const bool upper = p.auto_pad == "SAME_UPPER";
      if (total >= 0) {
        p.pads[i] = upper ? total / 2 : total - total / 2;
        p.pads[i + sr] = upper ? total - total / 2 : total / 2;
      } else {  // an output_shape past the kernel's reach: the extra entries at the end, bias only (as ONNX Runtime)
        p.pads[i] = 0;
        p.pads[i + sr] = total;
      }
    }
    if (o <= 0) ctx.fail("the output would have " + std::to_string(o) + " entries along spatial axis " + std::to_string(i));
    out.push_back(o);
  }
  p.auto_pad = "NOTSET";  // resolved into pads
  checked_numel(ctx, out);
  ctx.set_output(0, DType::Float32, out);
}

void reference_ConvTranspose(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ConvTransposeParams>();
  const Shape& xs = in[0].shape;
  const Shape& ys = out[0].shape;
  const bool one_d = xs.size() == 3;  // run as 2-D with H = 1
  const int64_t n = xs[0], c = xs[1], h = one_d ? 1 : xs[2], w = xs.back();
  const int64_t m = ys[1], oh = one_d ? 1 : ys[2], ow = ys.back();
  const int64_t kh = one_d ? 1 : p.kernel_shape[0], kw = p.kernel_shape.back();
  const int64_t sh = one_d ? 1 : p.strides[0], sw = p.strides.back(), dh = one_d ? 1 : p.dilations[0], dw = p.dilations.back();
  const int64_t ph = one_d ? 0 : p.pads[0], pw = one_d ? p.pads[0] : p.pads[1];
  const int64_t cg = c / p.group, mg = m / p.group;
  const float* X = in[0].as<const float>();
  const float* W = in[1].as<const float>();
  const float* B = in.size() > 2 && in[2].data ? in[2].as<const float>() : nullptr;
  std::vector<double> acc(static_cast<size_t>(oh * ow));
  float* Y = out[0].as<float>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t g = 0; g < p.group; ++g)
      for (int64_t mo = 0; mo < mg; ++mo) {
        const int64_t oc = g * mg + mo;
        std::fill(acc.begin(), acc.end(), B ? B[oc] : 0.0);
        for (int64_t ci = 0; ci < cg; ++ci) {
          const int64_t ic = g * cg + ci;
          const float* xp = X + (b * c + ic) * h * w;
          const float* wp = W + (ic * mg + mo) * kh * kw;
          for (int64_t iy = 0; iy < h; ++iy)
            for (int64_t ix = 0; ix < w; ++ix) {
              const double xv = xp[iy * w + ix];
              for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t y = iy * sh + ky * dh - ph;
                if (y < 0 || y >= oh) continue;
                for (int64_t kx = 0; kx < kw; ++kx) {
                  const int64_t xo = ix * sw + kx * dw - pw;
                  if (xo >= 0 && xo < ow) acc[static_cast<size_t>(y * ow + xo)] += xv * wp[ky * kw + kx];
                }
              }
            }
        }
        float* yp = Y + (b * m + oc) * oh * ow;
        for (int64_t i = 0; i < oh * ow; ++i) yp[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
      }
}

namespace {

using dnnl::memory;
using tag = memory::format_tag;

class OneDnnDeconv final : public Kernel {
 public:
  OneDnnDeconv(const graph::Graph& g, const graph::Node& n) {
    const auto& p = n.p<graph::ConvTransposeParams>();
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ys = g.value(n.outputs[0]).shape;
    const Shape& ws = g.value(n.inputs[1]).shape;
    const bool one_d = xs.size() == 3;
    auto dims2 = [&](const Shape& s) { return one_d ? memory::dims{s[0], s[1], 1, s[2]} : memory::dims(s.begin(), s.end()); };
    auto pair = [&](const std::vector<int64_t>& v, size_t at, int64_t one_d_value) {
      return one_d ? memory::dims{one_d_value, v[at]} : memory::dims{v[at], v[at + 1]};
    };
    src_md_ = memory::desc(dims2(xs), memory::data_type::f32, tag::nchw);
    dst_md_ = memory::desc(dims2(ys), memory::data_type::f32, tag::nchw);
    const int64_t groups = p.group, cg = xs[1] / groups, mg = ws[1];
    const int64_t kh = one_d ? 1 : ws[2], kw = ws.back();
    // ONNX W [C, M/g, kh, kw] is oneDNN's (g)oihw with i and o swapped: (g)iohw.
    const memory::dims wd = groups == 1 ? memory::dims{mg, cg, kh, kw} : memory::dims{groups, mg, cg, kh, kw};
    const memory::desc w_plain(wd, memory::data_type::f32, groups == 1 ? tag::iohw : tag::giohw);
    const memory::desc w_any(wd, memory::data_type::f32, tag::any);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    const memory::desc b_md = has_bias ? memory::desc({ys[1]}, memory::data_type::f32, tag::a) : memory::desc();
    memory::dims dil = pair(p.dilations, 0, 1);
    for (auto& d : dil) d -= 1;  // oneDNN counts the gaps
    const size_t sr = xs.size() - 2;
    dnnl::deconvolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::deconvolution_direct,
                                        src_md_, w_any, b_md, dst_md_, pair(p.strides, 0, 1), dil, pair(p.pads, 0, 0),
                                        pair(p.pads, sr, 0));
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::deconvolution_forward::primitive_desc pd(d, attr, onednn::engine());
    impl_ = pd.impl_info_str();
    scratch_md_ = pd.scratchpad_desc();
    weights_ = onednn::pack(w_plain, g.value(n.inputs[1]).constant.raw(), pd.weights_desc());
    if (has_bias) bias_ = onednn::pack(b_md, g.value(n.inputs[2]).constant.raw(), pd.bias_desc());
    prim_ = dnnl::deconvolution_forward(pd);
  }
  void run(const KernelArgs& a) const override {
    onednn::execute_forward(prim_, src_md_, a.in[0].data, weights_, bias_, dst_md_, a.out[0].data, scratch_md_, a.scratch);
  }
  std::string name() const override { return "onednn:deconv:" + impl_; }
  size_t scratch_bytes() const override { return scratch_md_.get_size(); }

 private:
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::deconvolution_forward prim_;
  std::string impl_;
};

// A ConvTranspose whose stride equals its kernel: input pixel (i, j) alone writes output
// pixels (i sh + a, j sw + b), y[.., a, b, o] = sum_c x[c] W[c, o, a, b] + bias[o], so it is a 1x1
// conv to sh sw M channels (ordered a, b, o; the bias repeated) whose values are then moved to
// their pixels: for each (i, a) and j, the sw M values (b, o) are one run of the NHWC output
// row i sh + a. The 1x1 conv runs on blocks of whole input rows into a buffer that stays in
// cache for the move. oneDNN's deconvolution took 10.0 ms for a 64 -> 32 channel 2x2 stride-2
// upsampling of a 128 x 128 map (13 GMAC/s), ONNX Runtime 7.0 ms (a probe).
class StrideKernelDeconv final : public Kernel {
 public:
  StrideKernelDeconv(const graph::Graph& g, const graph::Node& n) {
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ws = g.value(n.inputs[1]).shape;  // [C, M, kh, kw]
    c_ = xs[1], h_ = xs[2], w_ = xs[3], rows_ = xs[0] * xs[2];
    m_ = ws[1], kh_ = ws[2], kw_ = ws[3];
    const int64_t nn = kh_ * kw_ * m_;
    const float* W = g.value(n.inputs[1]).constant.data<float>();
    std::vector<float> wr(static_cast<size_t>(c_ * nn));  // [C][(a, b, o)]
    for (int64_t c = 0; c < c_; ++c)
      for (int64_t o = 0; o < m_; ++o)
        for (int64_t a = 0; a < kh_; ++a)
          for (int64_t b = 0; b < kw_; ++b)
            wr[static_cast<size_t>(c * nn + (a * kw_ + b) * m_ + o)] = W[((c * m_ + o) * kh_ + a) * kw_ + b];
    std::vector<float> bias;
    if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue) {
      const float* B = g.value(n.inputs[2]).constant.data<float>();
      for (int64_t t = 0; t < kh_ * kw_; ++t) bias.insert(bias.end(), B, B + m_);
    }
    // Blocks of whole input rows, about 4096 pixels (the block's results: 4096 kh kw M floats).
    block_rows_ = std::clamp<int64_t>(4096 / std::max<int64_t>(w_, 1), 1, rows_);
    const void* bp = bias.empty() ? nullptr : bias.data();
    full_ = make_onednn_matmul_1x1(block_rows_ * w_, c_, nn, wr.data(), false, bp, {});
    if (const int64_t tail = rows_ % block_rows_; tail > 0)
      tail_ = make_onednn_matmul_1x1(tail * w_, c_, nn, wr.data(), false, bp, {});
  }

  void run(const KernelArgs& a) const override {
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    float* buf = static_cast<float*>(a.scratch);
    void* inner_scratch = static_cast<char*>(a.scratch) + buf_bytes();
    const int64_t nn = kh_ * kw_ * m_, ow = w_ * kw_, run = kw_ * m_;
    for (int64_t r0 = 0; r0 < rows_; r0 += block_rows_) {
      const int64_t rows = std::min(block_rows_, rows_ - r0);
      const Kernel& k = rows == block_rows_ ? *full_ : *tail_;
      const TensorView in{DType::Float32, {rows * w_, c_}, const_cast<float*>(x + r0 * w_ * c_)};
      TensorView out{DType::Float32, {rows * w_, nn}, buf};
      k.run({std::span<const TensorView>(&in, 1), std::span<TensorView>(&out, 1), inner_scratch});
      // Input row r (sample r / h, row r % h) fills output rows (r % h) kh + a of its sample.
#pragma omp parallel for collapse(2) schedule(static) if (rows * w_ * nn >= 65536)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t aa = 0; aa < kh_; ++aa) {
          const int64_t gr = r0 + r, sample = gr / h_, i = gr % h_;
          float* dst = y + ((sample * h_ * kh_ + i * kh_ + aa) * ow) * m_;
          const float* src = buf + r * w_ * nn + aa * run;
          for (int64_t j = 0; j < w_; ++j) std::copy_n(src + j * nn, run, dst + j * run);
        }
    }
  }
  std::string name() const override { return "deconv as " + full_->name(); }
  size_t scratch_bytes() const override {
    return buf_bytes() + std::max(full_->scratch_bytes(), tail_ ? tail_->scratch_bytes() : size_t{0});
  }

 private:
  size_t buf_bytes() const { return (static_cast<size_t>(block_rows_ * w_ * kh_ * kw_ * m_) * sizeof(float) + 63) / 64 * 64; }

  int64_t c_, h_, w_, rows_, m_, kh_, kw_, block_rows_;
  std::unique_ptr<Kernel> full_, tail_;
};

}  // namespace

// Any other strided 2-D ConvTranspose (DCGAN's 4x4 stride 2 pad 1): split by output phase. Output
// row oy = q sy + r - pad_top takes only the taps a = r + sy t (t = 0 .. Ty - 1) at input rows
// q - t, so the rows of phase r are a plain stride-1 conv of the input with those taps reversed
// (Ty rows, padded Ty - 1 - q0 on top); likewise along W. Each of the sy sx phases runs as
// oneDNN's NHWC conv into a buffer, whose pixels then go to their places in the output (every
// output pixel has exactly one phase, so each gets its bias once). oneDNN's deconvolution ran
// a 64 -> 32 channel 4x4 stride-2 one on a 128 x 128 map at 25 GMAC/s.
class PhaseSplitDeconv final : public Kernel {
 public:
  // One phase ph of an axis: its taps (ph + s t), its first q and how many output rows (or
  // columns) it has, and its conv's padding before and after.
  struct AxisPhase {
    int64_t taps, q0, count, before, after;
  };
  using Plan = std::array<std::vector<AxisPhase>, 2>;  // per axis (H, W), per phase
  // The phases of both axes, or nullopt where one would need a negative padding.
  static std::optional<Plan> plan(const graph::Graph& g, const graph::Node& n) {
    const auto& p = n.p<graph::ConvTransposeParams>();
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ws = g.value(n.inputs[1]).shape;
    const Shape& ys = g.value(n.outputs[0]).shape;
    Plan r;
    for (size_t d = 0; d < 2; ++d) {
      const int64_t s = p.strides[d], k = ws[2 + d], pad = p.pads[d], in = xs[2 + d], on = ys[2 + d];
      for (int64_t ph = 0; ph < s; ++ph) {
        const int64_t taps = ph < k ? (k - ph + s - 1) / s : 0;
        const int64_t q0 = (pad - ph + s - 1 >= 0 ? (pad - ph + s - 1) / s : -((ph - pad) / s));  // ceil((pad - ph) / s)
        const int64_t q1 = on - 1 + pad - ph >= 0 ? (on - 1 + pad - ph) / s : -1;                 // floor, -1: none
        const int64_t count = std::max<int64_t>(0, q1 - q0 + 1);
        // The phase's conv: padded before so that output u reads rows u + q0 - (taps - 1) on; after
        // so that it gives exactly `count` rows (a cropped output, needing it negative, is not taken).
        const int64_t before = taps - 1 - q0, after = count + q0 - in;
        if (taps > 0 && count > 0 && (before < 0 || after < 0 || after >= taps)) return std::nullopt;
        r[d].push_back({taps, q0, count, before, after});
      }
    }
    return r;
  }

  PhaseSplitDeconv(const graph::Graph& g, const graph::Node& n) : p_(n.p<graph::ConvTransposeParams>()) {
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ws = g.value(n.inputs[1]).shape;  // [C, M, ky, kx]
    const Shape& ys = g.value(n.outputs[0]).shape;
    n_ = xs[0], c_ = xs[1], h_ = xs[2], w_ = xs[3], m_ = ws[1], oh_ = ys[2], ow_ = ys[3];
    const Plan geo = *plan(g, n);
    const float* W = g.value(n.inputs[1]).constant.data<float>();
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    if (has_bias) {
      const float* B = g.value(n.inputs[2]).constant.data<float>();
      bias_.assign(B, B + m_);
    } else {
      bias_.assign(static_cast<size_t>(m_), 0.f);
    }
    const int64_t sy = p_.strides[0], sx = p_.strides[1];
    for (int64_t ry = 0; ry < sy; ++ry)
      for (int64_t rx = 0; rx < sx; ++rx) {
        const AxisPhase& a = geo[0][static_cast<size_t>(ry)];
        const AxisPhase& b = geo[1][static_cast<size_t>(rx)];
        Phase ph;
        ph.ry = ry, ph.rx = rx, ph.q0y = a.q0, ph.q0x = b.q0, ph.ny = a.count, ph.nx = b.count;
        if (ph.ny == 0 || ph.nx == 0) continue;  // no output pixel of this phase
        if (a.taps > 0 && b.taps > 0) {
          const int64_t ty = a.taps, tx = b.taps;
          // Weights [M, C, ty, tx]: tap (t', u') is W[c, o, ry + sy (ty - 1 - t'), rx + sx (tx - 1 - u')].
          std::vector<float> wp(static_cast<size_t>(m_ * c_ * ty * tx));
          for (int64_t o = 0; o < m_; ++o)
            for (int64_t c = 0; c < c_; ++c)
              for (int64_t t = 0; t < ty; ++t)
                for (int64_t u = 0; u < tx; ++u)
                  wp[static_cast<size_t>(((o * c_ + c) * ty + t) * tx + u)] =
                      W[((c * m_ + o) * ws[2] + ry + sy * (ty - 1 - t)) * ws[3] + rx + sx * (tx - 1 - u)];
          ph.src_md = memory::desc({n_, c_, h_, w_}, memory::data_type::f32, tag::nhwc);
          ph.dst_md = memory::desc({n_, m_, ph.ny, ph.nx}, memory::data_type::f32, tag::nhwc);
          const memory::desc w_plain({m_, c_, ty, tx}, memory::data_type::f32, tag::oihw);
          const memory::desc w_any({m_, c_, ty, tx}, memory::data_type::f32, tag::any);
          const memory::desc b_md({m_}, memory::data_type::f32, tag::a);
          dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            ph.src_md, w_any, b_md, ph.dst_md, {1, 1}, {a.before, b.before}, {a.after, b.after});
          dnnl::primitive_attr attr;
          attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
          dnnl::convolution_forward::primitive_desc pd(d, attr, onednn::engine());
          impl_ = pd.impl_info_str();
          ph.scratch_md = pd.scratchpad_desc();
          ph.weights = onednn::pack(w_plain, wp.data(), pd.weights_desc());
          ph.bias = onednn::pack(b_md, bias_.data(), pd.bias_desc());
          ph.prim = dnnl::convolution_forward(pd);
          ph.conv = true;
          scratch_ = std::max(scratch_, ph.scratch_md.get_size());
        }
        buf_ = std::max(buf_, static_cast<size_t>(n_ * ph.ny * ph.nx * m_) * sizeof(float));
        phases_.push_back(std::move(ph));
      }
    buf_ = (buf_ + 63) / 64 * 64;
  }

  void run(const KernelArgs& a) const override {
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    float* buf = static_cast<float*>(a.scratch);
    void* inner = static_cast<char*>(a.scratch) + buf_;
    const int64_t sy = p_.strides[0], sx = p_.strides[1], pt = p_.pads[0], pl = p_.pads[1];
    for (const Phase& ph : phases_) {
      if (ph.conv)
        onednn::execute_forward(ph.prim, ph.src_md, x, ph.weights, ph.bias, ph.dst_md, buf, ph.scratch_md, inner);
#pragma omp parallel for collapse(2) schedule(static) if (n_ * ph.ny * ph.nx * m_ >= 65536)
      for (int64_t b = 0; b < n_; ++b)
        for (int64_t u = 0; u < ph.ny; ++u) {
          const int64_t oy = (ph.q0y + u) * sy + ph.ry - pt;
          for (int64_t v = 0; v < ph.nx; ++v) {
            float* dst = y + ((b * oh_ + oy) * ow_ + (ph.q0x + v) * sx + ph.rx - pl) * m_;
            if (ph.conv)
              std::copy_n(buf + ((b * ph.ny + u) * ph.nx + v) * m_, m_, dst);
            else
              std::copy_n(bias_.data(), m_, dst);  // (no tap reaches this phase: the bias)
          }
        }
    }
  }
  std::string name() const override { return "deconv by phases:" + impl_; }
  size_t scratch_bytes() const override { return buf_ + scratch_; }

 private:
  struct Phase {
    int64_t ry = 0, rx = 0, q0y = 0, q0x = 0, ny = 0, nx = 0;
    bool conv = false;
    memory::desc src_md, dst_md, scratch_md;
    memory weights, bias;
    dnnl::convolution_forward prim;
  };
  graph::ConvTransposeParams p_;
  int64_t n_, c_, h_, w_, m_, oh_, ow_;
  std::vector<float> bias_;
  std::vector<Phase> phases_;
  size_t buf_ = 0, scratch_ = 0;
  std::string impl_;
};

namespace {
// What both NHWC ConvTranspose kernels take: 2-D float maps with input channels and output
// pixels, constant finite float weights (an inf times a 0 input: NaN the padding would not
// give), a constant float bias or none, group 1, dilation 1, no negative pad.
bool plain_2d_deconv(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::ConvTranspose || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const auto& p = n.p<graph::ConvTransposeParams>();
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& w = g.value(n.inputs[1]);
  const graph::Value& y = g.value(n.outputs[0]);
  if (x.dtype != DType::Float32 || !x.shape_known || !y.shape_known || x.shape.size() != 4 || y.shape.size() != 4 ||
      !w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4 || p.group != 1 || p.strides.size() != 2 ||
      p.pads.size() != 4 || p.dilations != std::vector<int64_t>{1, 1} ||
      x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] == 0 || w.shape[1] == 0 || y.shape[2] * y.shape[3] == 0)
    return false;
  for (int64_t pad : p.pads)
    if (pad < 0) return false;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue &&
      (!g.value(n.inputs[2]).is_constant() || g.value(n.inputs[2]).dtype != DType::Float32))
    return false;
  return all_finite(w.constant);
}
}  // namespace

bool phase_split_deconv_applies(const graph::Graph& g, const graph::Node& n) {
  if (!plain_2d_deconv(g, n)) return false;
  const auto& p = n.p<graph::ConvTransposeParams>();
  return (p.strides[0] >= 2 || p.strides[1] >= 2) && PhaseSplitDeconv::plan(g, n).has_value();
}

bool stride_kernel_deconv_applies(const graph::Graph& g, const graph::Node& n) {
  if (!plain_2d_deconv(g, n)) return false;
  const auto& p = n.p<graph::ConvTransposeParams>();
  const Shape& xs = g.value(n.inputs[0]).shape;
  const Shape& ws = g.value(n.inputs[1]).shape;
  for (size_t i = 0; i < 2; ++i)
    if (p.strides[i] != ws[2 + i] || p.pads[i] != 0 || p.pads[2 + i] != 0) return false;
  // (output_padding or an output_shape would add rows no input pixel writes)
  return g.value(n.outputs[0]).shape == Shape{xs[0], ws[1], xs[2] * ws[2], xs[3] * ws[3]};
}

std::unique_ptr<Kernel> make_nhwc_deconv(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NHWC) return nullptr;
  // (a dnnl::error: named with the node by the plan)
  if (stride_kernel_deconv_applies(g, n)) return std::make_unique<StrideKernelDeconv>(g, n);
  if (phase_split_deconv_applies(g, n)) return std::make_unique<PhaseSplitDeconv>(g, n);
  return nullptr;
}

std::unique_ptr<Kernel> make_onednn_deconv(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvTransposeParams>();
  if (n.layout != graph::Layout::NCHW || !g.value(n.inputs[1]).is_constant()) return nullptr;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return nullptr;
  for (int64_t pad : p.pads)
    if (pad < 0) return nullptr;  // an output_shape past the kernel's reach: the reference kernel
  try {
    return std::make_unique<OneDnnDeconv>(g, n);
  } catch (const dnnl::error&) {
    return nullptr;  // a shape oneDNN has no implementation for: the reference kernel
  }
}

}  // namespace sluice::ops
