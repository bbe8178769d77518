// Conv: shape inference and the plain reference kernel (direct 2-D convolution, NCHW).
#include <cstring>

#include "ops/conv/window.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_Conv(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ConvParams>();
  const auto& x = ctx.in(0);
  const auto& w = ctx.in(1);
  if (x.dtype != DType::Float32) ctx.fail(need_float32("input X", x.dtype));
  if (x.shape.size() != 4)
    ctx.fail("only 1-D and 2-D convolutions are supported: input X must be [N, C, H, W], or [N, C, L] for a conv "
             "that says it is 1-D (a 1-D kernel_shape, strides, dilations or pads, or a 3-D initializer weight), got " +
             shape_str(x.shape));
  ctx.expect_input(1, DType::Float32, 4);
  const int64_t c = x.shape[1], m = w.shape[0];
  if (m == 0 || w.shape[2] == 0 || w.shape[3] == 0)
    ctx.fail("weight shape " + shape_str(w.shape) + " has no " + (m == 0 ? "output channels" : "kernel taps") +
             ": nothing to compute");
  if (p.kernel_shape.empty()) p.kernel_shape = {w.shape[2], w.shape[3]};
  if (p.kernel_shape[0] != w.shape[2] || p.kernel_shape[1] != w.shape[3])
    ctx.fail("kernel_shape " + ints_str(p.kernel_shape) + " does not match weight shape " + shape_str(w.shape));
  if (c % p.group != 0 || m % p.group != 0 || w.shape[1] * p.group != c)
    ctx.fail("weight shape " + shape_str(w.shape) + " does not fit input channels " + std::to_string(c) +
             " with group " + std::to_string(p.group) + " (expected [M, C/group, kh, kw] with M divisible by group)");
  if (ctx.has_input(2)) {
    ctx.expect_input(2, DType::Float32, 1);
    if (ctx.in(2).shape[0] != m)
      ctx.fail("bias has " + std::to_string(ctx.in(2).shape[0]) + " elements, expected " + std::to_string(m));
  }
  Shape out = {x.shape[0], m};
  for (int64_t d : window_output_dims(ctx, {x.shape[2], x.shape[3]}, p.kernel_shape, p.strides, p.dilations, p.pads,
                                      p.auto_pad, false))
    out.push_back(d);
  p.auto_pad = "NOTSET";
  if (p.fused_sum && (!ctx.has_input(3) || ctx.in(3).shape != out))
    ctx.fail("the fused sum operand must have the output shape " + shape_str(out));
  checked_numel(ctx, out);
  ctx.set_output(0, DType::Float32, out);
}

void reference_Conv(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ConvParams>();
  if (!p.pre_shift.empty()) {  // a fused shift: shift the input, then the plain conv
    graph::Node plain = node;
    plain.p<graph::ConvParams>().pre_shift = {};
    plain.op = graph::OpType::SluiceShift;
    plain.params = p.pre_shift;
    TensorView shifted = in[0];
    shifted.shape[1] = static_cast<int64_t>(p.pre_shift.src.size());
    std::vector<float> buf(static_cast<size_t>(shifted.numel()));
    shifted.data = buf.data();
    TensorView so[1] = {shifted};
    reference_SluiceShift(plain, in.subspan(0, 1), so);
    std::vector<TensorView> args(in.begin(), in.end());
    args[0] = shifted;
    graph::Node conv = node;
    conv.p<graph::ConvParams>().pre_shift = {};
    reference_Conv(conv, args, out);
    return;
  }
  const TensorView &x = in[0], &w = in[1], &y = out[0];
  const float* bias = in.size() > 2 && in[2].data ? in[2].as<const float>() : nullptr;
  const float* sum = p.fused_sum ? in[3].as<const float>() : nullptr;
  const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3];
  const int64_t m = y.shape[1], oh = y.shape[2], ow = y.shape[3];
  const int64_t kh = w.shape[2], kw = w.shape[3], cg = c / p.group, mg = m / p.group;
  const float* X = x.as<const float>();
  const float* W = w.as<const float>();
  float* Y = y.as<float>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oc = 0; oc < m; ++oc) {
      const int64_t g = oc / mg;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = bias ? bias[oc] : 0.0;
          for (int64_t ic = 0; ic < cg; ++ic)
            for (int64_t ky = 0; ky < kh; ++ky) {
              const int64_t iy = oy * p.strides[0] - p.pads[0] + ky * p.dilations[0];
              if (iy < 0 || iy >= h) continue;
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ox * p.strides[1] - p.pads[1] + kx * p.dilations[1];
                if (ix < 0 || ix >= wd) continue;
                acc += static_cast<double>(X[((b * c + g * cg + ic) * h + iy) * wd + ix]) *
                       W[((oc * cg + ic) * kh + ky) * kw + kx];
              }
            }
          const int64_t o = ((b * m + oc) * oh + oy) * ow + ox;
          float v = static_cast<float>(acc);
          if (sum) v += sum[o];
          Y[o] = graph::apply_activation(p.activation, v);
        }
    }
}

namespace {

// A conv with no input channels on NHWC data: every output pixel is act(bias + sum).
class EmptyConvNhwc final : public Kernel {
 public:
  EmptyConvNhwc(const graph::Graph& g, const graph::Node& n)
      : p_(n.p<graph::ConvParams>()), bias_(constant_or_zeros(g, n, 2, g.value(n.outputs[0]).shape[1])) {}
  void run(const KernelArgs& a) const override {
    float* y = a.out[0].as<float>();
    const float* sum = p_.fused_sum ? a.in[3].as<const float>() : nullptr;
    const auto m = static_cast<int64_t>(bias_.size()), pixels = a.out[0].numel() / m;
    for (int64_t q = 0; q < pixels; ++q)
      for (int64_t j = 0; j < m; ++j)
        y[q * m + j] = graph::apply_activation(p_.activation, bias_[j] + (sum ? sum[q * m + j] : 0.f));
  }
  std::string name() const override { return "bias only (no input channels)"; }
  int in_place_input() const override { return p_.fused_sum ? 3 : -1; }

 private:
  graph::ConvParams p_;
  std::vector<float> bias_;
};

}  // namespace

std::unique_ptr<Kernel> make_empty_conv(const graph::Graph& g, const graph::Node& n) {
  return std::make_unique<EmptyConvNhwc>(g, n);
}

}  // namespace sluice::ops
