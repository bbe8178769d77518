// A dense conv on the direct planar kernel (ops/gated/direct_conv.h: output pixels in vector
// lanes, weights broadcast; packed at load on AVX-512, else read from the model's OIHW
// tensor), for the convs oneDNN runs poorly:
// channel counts that are small or not a multiple of its 16-channel blocks, as statically
// pruned models leave them (a ResNet-18 stem pruned to 19 channels ran at 47 GMAC/s on
// oneDNN). make_conv times both on the node's shape and keeps the faster.
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/gated/direct_conv.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

bool is_resident(const graph::Graph& g, graph::ValueId v) {
  return v != graph::kNoValue && g.value(v).layout == graph::Layout::Planar;
}

class PlanarDirectConv final : public Kernel {
 public:
  PlanarDirectConv(const graph::Graph& g, const graph::Node& n)
      : p_(n.p<graph::ConvParams>()),
        x_form_(is_resident(g, n.inputs[0]) ? planar::Source::Resident
                : reads_nchw_input(g, n)    ? planar::Source::Nchw
                                            : planar::Source::Nhwc),
        y_resident_(is_resident(g, n.outputs[0])),
        sum_resident_(p_.fused_sum && is_resident(g, n.inputs[3])) {
    // An NHWC residual is not added into planes (keep_planes_resident never asks for it).
    if (y_resident_ && p_.fused_sum && !sum_resident_)
      throw Error("internal error: '" + n.name + "' writes resident planes with an NHWC residual");
    const Shape& xs = g.value(n.inputs[0]).shape;
    const graph::Value& w = g.value(n.inputs[1]);
    const Shape& ys = g.value(n.outputs[0]).shape;
    batch_ = xs[0];
    c_ = xs[1];
    m_ = ys[1];
    shape_ = {c_, m_, xs[2], xs[3], w.shape[2], w.shape[3], ys[2], ys[3], p_.pads[0], p_.pads[1], p_.strides[0]};
    const float* W = w.constant.data<float>();
    weights_.assign(W, W + w.constant.numel());
    packed_ = gated::pack_direct_weights(shape_, W);
    bias_ = constant_or_zeros(g, n, 2, m_);
    in_.resize(static_cast<size_t>(c_));
    out_.resize(static_cast<size_t>(m_));
    std::iota(in_.begin(), in_.end(), 0);
    std::iota(out_.begin(), out_.end(), 0);
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const float* S = p_.fused_sum ? a.in[3].as<const float>() : nullptr;
    // Floats per sample: NHWC pixels, or resident planes.
    const int64_t in_size =
        c_ * (x_form_ == planar::Source::Resident ? planar::resident(shape_.h, shape_.w).plane() : shape_.h * shape_.w);
    const int64_t out_nhwc = m_ * shape_.oh * shape_.ow, out_res = m_ * planar::resident(shape_.oh, shape_.ow).plane();
    const int64_t out_size = y_resident_ ? out_res : out_nhwc, sum_size = sum_resident_ ? out_res : out_nhwc;
    for (int64_t b = 0; b < batch_; ++b)
      gated::direct_conv(shape_, X + b * in_size, c_, in_.data(), in_.data(), c_, weights_.data(), bias_.data(),
                         out_.data(), m_, Y + b * out_size, a.scratch,
                         {S ? S + b * sum_size : nullptr, m_, p_.activation, y_resident_, sum_resident_}, x_form_,
                         packed_.empty() ? nullptr : packed_.data());
  }
  std::string name() const override {
    std::string r = "direct:planar";
    const char* sep = ", resident planes ";
    for (auto [on, what] :
         {std::pair{x_form_ == planar::Source::Resident, "in"}, {y_resident_, "out"}, {sum_resident_, "residual"}})
      if (on) r.append(sep).append(what), sep = "+";
    return x_form_ == planar::Source::Nchw ? r + ", reads NCHW" : r;
  }
  bool keeps_planes() const override { return true; }
  size_t scratch_bytes() const override { return gated::direct_conv_scratch(shape_); }
  // The sum is read pixel by pixel before that pixel's output is written: in place is safe,
  // in the same layout.
  int in_place_input() const override { return p_.fused_sum && sum_resident_ == y_resident_ ? 3 : -1; }

 private:
  graph::ConvParams p_;
  planar::Source x_form_;                        // input 0: NHWC, resident planes or NCHW
  bool y_resident_, sum_resident_;               // output, fused sum in resident planes (Layout::Planar)
  gated::DirectConvShape shape_{};
  int64_t batch_, c_, m_;
  std::vector<float> weights_, bias_;
  std::vector<float> packed_;      // the weights for direct_conv's wide blocks (AVX-512), or empty
  std::vector<int32_t> in_, out_;  // every channel: 0..C-1 and 0..M-1
};

}  // namespace

bool make_direct_conv_applies(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  if (n.layout != graph::Layout::NHWC || p.group != 1 || !p.pre_shift.empty() || p.strides.size() != 2 ||
      p.dilations.size() != 2 || !gated::direct_conv_supported(p.strides.data(), p.dilations.data()))
    return false;
  const graph::Value& w = g.value(n.inputs[1]);
  if (!w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[2] * w.shape[3] > 64) return false;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return false;
  if (g.value(n.inputs[0]).shape.size() != 4 || g.value(n.inputs[0]).shape[1] != w.shape[1]) return false;
  return all_finite(w.constant);  // (last: it reads every weight) inf x the zero padding: NaN where oneDNN skips it
}

std::unique_ptr<Kernel> make_direct_conv(const graph::Graph& g, const graph::Node& n) {
  if (!make_direct_conv_applies(g, n)) return nullptr;
  return std::make_unique<PlanarDirectConv>(g, n);
}

bool resident_conv(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& y = g.value(n.outputs[0]);
  return x.shape_known && y.shape_known && x.shape.size() == 4 && y.shape.size() == 4 && x.dtype == DType::Float32 &&
         make_direct_conv_applies(g, n);
}

bool reads_nchw_input(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || !n.p<graph::ConvParams>().reads_nchw) return false;
  if (n.layout != graph::Layout::NHWC || g.value(n.inputs[0]).layout != graph::Layout::NCHW)
    throw Error("internal error: '" + n.name + "' is marked to read NCHW but its input is not NCHW or it is not NHWC");
  return true;
}

bool touches_resident(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  return is_resident(g, n.inputs[0]) || is_resident(g, n.outputs[0]) || (p.fused_sum && is_resident(g, n.inputs[3]));
}

// Channel counts in oneDNN's 16-channel blocks run well there, and 1x1 convs are oneDNN's on
// every shape measured (the direct kernel ran 1.6-9x slower on MobileNetV2's); only the others
// are timed.
bool direct_timed(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || !make_direct_conv_applies(g, n)) return false;
  const Shape& ws = g.value(n.inputs[1]).shape;
  const int64_t m = g.value(n.outputs[0]).shape.size() == 4 ? g.value(n.outputs[0]).shape[1] : 0;
  return !((ws[1] % 16 == 0 && m % 16 == 0) || ws[2] * ws[3] == 1);
}

std::unique_ptr<Kernel> make_dense_conv(const graph::Graph& g, const graph::Node& n) {
  // A conv that reads or writes resident planes, or reads NCHW, runs on the direct kernel: it
  // is the only one that can (keep_planes_resident and read_nchw_inputs chose them among the
  // convs that measured faster on it).
  if (touches_resident(g, n) || reads_nchw_input(g, n)) {
    if (std::unique_ptr<Kernel> direct = make_direct_conv(g, n)) return direct;
    throw Error("internal error: '" + n.name + "' has resident planes or an NCHW input but no direct kernel");
  }
  std::unique_ptr<Kernel> onednn = make_onednn_conv(g, n);
  if (!onednn) return nullptr;
  // oneDNN's NHWC conv against the same conv on its blocked layout with the reorders around
  // it (ops/conv/onednn.cpp), where that can pay.
  if (onednn::blocked_form_may_pay(onednn->name(), static_macs(g, n)))
    if (std::unique_ptr<Kernel> blocked = make_onednn_conv_blocked(g, n)) {
      const std::vector<double> t = time_kernels({onednn.get(), blocked.get()}, g, n, 3);
      char note[80];
      std::snprintf(note, sizeof note, "[measured: nhwc %.3f ms, blocked %.3f ms]", t[0], t[1]);
      onednn = with_note(t[1] < t[0] ? std::move(blocked) : std::move(onednn), note);
    }
  if (!direct_timed(g, n)) return onednn;
  std::unique_ptr<Kernel> direct = make_direct_conv(g, n);
  if (!direct) return onednn;
  const std::vector<double> t = time_kernels({onednn.get(), direct.get()}, g, n, 7);
  const double t_onednn = t[0], t_direct = t[1];
  char note[80];
  std::snprintf(note, sizeof note, "[measured: direct %.3f ms, onednn %.3f ms]", t_direct, t_onednn);
  return with_note(t_direct < t_onednn ? std::move(direct) : std::move(onednn), note);
}

}  // namespace sluice::ops
