// SluiceGatedConv: a convolution with its FBS gate (design.md §3-§4).
//
// The fast kernel runs per sample: saliency -> predictor -> top-k, then computes only
// the active output channels from only the active input channels (those the producer
// reports as possibly non-zero). The compact problem (k_in -> k_out channels) runs on a
// oneDNN primitive cached per (k_in, k_out); the active channels' weights are gathered per
// call straight into that primitive's layout (k_out * k_in * kh * kw values, small next to
// the conv; ops/gated/weight_gather.h). On small maps the direct kernel, which reads the
// model's weights in place (ops/gated/direct_conv.h), runs it instead where that measures
// faster (make_gated_conv). The output is written dense NHWC (active channels from the compact
// result, suppressed channels as the constant the graph gives them), or compact when every
// reader is a gated conv. GateForm::All (passes::read_gated_inputs: a plain conv behind a
// gate) has no gate of its own: every output is computed, from the active inputs only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>

#include <omp.h>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/conv/window.h"
#include "ops/gated/direct_conv.h"
#include "ops/gated/gate.h"
#include "ops/gated/input_list_conv.h"
#include "ops/gated/weight_gather.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

// Output maps up to this size may run the compact conv on the direct kernel.
constexpr int64_t kDirectMaxPixels = 14 * 14;

void infer_SluiceGatedConv(InferContext& ctx) {
  auto& gp = ctx.node().p<graph::GatedConvParams>();
  const auto& x = ctx.in(0);
  const auto& w = ctx.in(1);
  if (x.shape.size() != 4 || w.shape.size() != 4) ctx.fail("gated conv needs 4-D input and weights");
  const int64_t c = x.shape[1], m = w.shape[0];
  // Group 1, or depthwise: one filter per channel (group = C_in = C_out).
  const bool depthwise = gp.conv.group == c && m == c && c > 1;
  if ((gp.conv.group != 1 && !depthwise) || w.shape[1] != (depthwise ? 1 : c))
    ctx.fail("weight shape " + shape_str(w.shape) + " with group " + std::to_string(gp.conv.group) + " does not fit " +
             std::to_string(c) + " input channels (a gated conv is group 1 or depthwise)");
  const bool has_gate = gp.form != graph::GateForm::All;
  if (has_gate != ctx.has_input(3) || has_gate != ctx.has_input(4))
    ctx.fail(has_gate ? "gate weights and bias are missing" : "a conv with every output kept takes no gate weights");
  if (has_gate && ctx.in(3).shape != Shape{m, c})
    ctx.fail("gate weights must be [" + std::to_string(m) + ", " + std::to_string(c) + "]");
  if (has_gate && ctx.in(4).shape != Shape{m}) ctx.fail("gate bias must have " + std::to_string(m) + " values");
  if (has_gate && (gp.k < 0 || gp.k > m))
    ctx.fail("k = " + std::to_string(gp.k) + " exceeds the channel count " + std::to_string(m));
  Shape out = {x.shape[0], m};
  for (int64_t d : window_output_dims(ctx, {x.shape[2], x.shape[3]}, gp.conv.kernel_shape, gp.conv.strides,
                                      gp.conv.dilations, gp.conv.pads, gp.conv.auto_pad, false))
    out.push_back(d);
  if (gp.fused_sum && (ctx.num_inputs() <= graph::kGatedSumInput || ctx.in(graph::kGatedSumInput).shape != out))
    ctx.fail("the fused residual operand must have the output's shape " + shape_str(out));
  ctx.set_output(0, DType::Float32, out);
}

void reference_SluiceGatedConv(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& gp = node.p<graph::GatedConvParams>();
  graph::Node conv;
  conv.op = graph::OpType::Conv;
  conv.params = gp.conv;
  conv.p<graph::ConvParams>().activation = {};
  conv.p<graph::ConvParams>().fused_sum = false;
  const TensorView& x = in[0];
  TensorView& y = out[0];
  std::vector<float> raw(static_cast<size_t>(y.numel()));
  TensorView rv{DType::Float32, y.shape, raw.data()};
  TensorView conv_in[3] = {in[0], in[1], in[2]};
  reference_Conv(conv, conv_in, std::span<TensorView>(&rv, 1));
  const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
  const int64_t m = y.shape[1], ohw = y.shape[2] * y.shape[3];
  const float* beta = in.size() > 5 && in[5].data ? in[5].as<const float>() : nullptr;
  const float* sum = gp.fused_sum ? in[graph::kGatedSumInput].as<const float>() : nullptr;
  const bool has_gate = gp.form != graph::GateForm::All;
  gate::Spec spec{c, m, has_gate ? in[3].as<const float>() : nullptr, has_gate ? in[4].as<const float>() : nullptr,
                  gp.form, gp.k, gp.saliency, gp.threshold_by_difference, gp.unit_pi, gp.positive_pi};
  std::vector<float> s(static_cast<size_t>(c)), g(static_cast<size_t>(m)), pi(static_cast<size_t>(m));
  for (int64_t b = 0; b < n; ++b) {
    const float* X = x.as<const float>() + b * c * hw;
    using Pool = graph::GatedConvParams::Pool;
    for (int64_t ch = 0; ch < c && has_gate; ++ch) {
      double acc = 0;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < hw; ++i) {
        const float v = gp.abs_saliency ? std::fabs(X[ch * hw + i]) : X[ch * hw + i];
        if (gp.saliency_pool == Pool::Max) mx = std::isnan(v) || v > mx ? v : mx;
        else acc += gp.saliency_pool == Pool::L2 ? static_cast<double>(v) * v : v;
      }
      s[static_cast<size_t>(ch)] = gp.saliency_pool == Pool::Max ? mx
                                   : gp.saliency_pool == Pool::L2 ? static_cast<float>(std::sqrt(acc))
                                                                  : static_cast<float>(acc / static_cast<double>(hw));
    }
    gate::predict(spec, s.data(), g.data());
    gate::select(spec, g.data(), pi.data());
    for (int64_t o = 0; o < m; ++o) {
      float* Y = y.as<float>() + (b * m + o) * ohw;
      const float* R = raw.data() + (b * m + o) * ohw;
      const float* S = sum ? sum + (b * m + o) * ohw : nullptr;
      const float p = pi[static_cast<size_t>(o)];
      for (int64_t i = 0; i < ohw; ++i) {
        const float pre = p != 0.f ? gate::pre_active(gp, beta, o, p, R[i]) : gate::pre_suppressed(gp, beta, o);
        Y[i] = gate::activate(gp, S ? S[i] + pre : pre);
      }
    }
  }
}

namespace {

using dnnl::memory;
using tag = memory::format_tag;

// Whether gated conv n writes its output compact (active channels only): every reader is a
// gated conv that understands it, and a suppressed channel is exactly zero.
bool writes_compact(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::GatedConvParams>();
  if (n.layout != graph::Layout::NHWC || !p.gating || p.fused_sum || g.value(n.outputs[0]).is_output ||
      g.value(n.outputs[0]).consumers.empty())
    return false;
  const float* beta = n.inputs.size() > 5 && n.inputs[5] != graph::kNoValue
                          ? g.value(n.inputs[5]).constant.data<float>()
                          : nullptr;
  for (int64_t o = 0; o < g.value(n.outputs[0]).shape[1]; ++o)
    if (gate::suppressed_value(p, beta, o) != 0.f) return false;
  for (graph::NodeId c : g.value(n.outputs[0]).consumers) {
    const graph::Node& cn = g.node(c);
    if (cn.op != graph::OpType::SluiceGatedConv || cn.layout != graph::Layout::NHWC ||
        !cn.p<graph::GatedConvParams>().gating || cn.inputs[0] != n.outputs[0])
      return false;
    for (size_t i = 1; i < cn.inputs.size(); ++i)
      if (cn.inputs[i] == n.outputs[0]) return false;
  }
  return true;
}

// Which kernel computes the compact problem on small maps (see make_gated_conv).
// InputList: a conv with no gate of its own (GateForm::All) on gated::InputListConv.
enum class SmallMapPath { Direct, OneDnn, InputList };
// The oneDNN convs' activation layout: NHWC or blocked as blocked_form measures, or blocked
// wherever oneDNN has a blocked form (tests).
enum class ActLayout { Measured, Blocked };

class GatedConv final : public Kernel {
 public:
  GatedConv(const graph::Graph& g, const graph::Node& n, SmallMapPath path, ActLayout layout = ActLayout::Measured)
      : p_(n.p<graph::GatedConvParams>()) {
    const Shape& xs = g.value(n.inputs[0]).shape;
    const graph::Value& wv = g.value(n.inputs[1]);
    const Shape& ys = g.value(n.outputs[0]).shape;
    batch_ = xs[0];
    c_ = xs[1];
    h_ = xs[2];
    w_ = xs[3];
    m_ = ys[1];
    oh_ = ys[2];
    ow_ = ys[3];
    kh_ = wv.shape[2];
    kw_ = wv.shape[3];
    depthwise_ = p_.conv.group > 1;  // (infer_SluiceGatedConv allows group C = M only)
    const float* W = wv.constant.data<float>();
    weights_.assign(W, W + wv.constant.numel());
    bias_ = constant_or_zeros(g, n, 2, m_);
    if (p_.form != graph::GateForm::All) {
      const float* Wg = g.value(n.inputs[3]).constant.data<float>();
      const float* Bg = g.value(n.inputs[4]).constant.data<float>();
      wg_.assign(Wg, Wg + m_ * c_);
      bg_.assign(Bg, Bg + m_);
    }
    if (n.inputs.size() > 5 && n.inputs[5] != graph::kNoValue) {
      const float* Be = g.value(n.inputs[5]).constant.data<float>();
      beta_.assign(Be, Be + m_);
    }
    suppressed_.resize(static_cast<size_t>(m_));
    pre_suppressed_.resize(static_cast<size_t>(m_));
    for (int64_t o = 0; o < m_; ++o) {
      suppressed_[static_cast<size_t>(o)] = gate::suppressed_value(p_, beta(), o);
      pre_suppressed_[static_cast<size_t>(o)] = gate::pre_suppressed(p_, beta(), o);
    }
    // Channels pruned inside the gated conv (network slimming on an FBS net: an all-zero filter
    // and bias): the gate still ranks them, so they stay in its top-k, but when one is selected
    // its value is act(pi * 0 + beta_c [+ sum]), which is what it gives suppressed unless beta
    // is masked and non-zero. Such a channel is selected, then run as suppressed: no MACs.
    const int64_t per_filter = m_ > 0 ? static_cast<int64_t>(weights_.size()) / m_ : 0;
    for (int64_t o = 0; o < m_; ++o) {
      const float* f = weights_.data() + o * per_filter;
      const bool masked_beta = beta() && p_.beta == graph::BetaMode::Masked && beta_[static_cast<size_t>(o)] != 0.f;
      if (bias_[static_cast<size_t>(o)] == 0.f && !masked_beta &&
          std::all_of(f, f + per_filter, [](float v) { return v == 0.f; }))
        dead_.push_back(static_cast<int32_t>(o));
    }
    compact_out_ = writes_compact(g, n);
    dense_ = make_prim(c_, m_, false);
    if (std::optional<Prim> b = blocked_form(layout, static_macs(g, n))) {
      dense_ = std::move(*b);
      blocked_ = true;
    }
    pack_dense_weights();
    // Scratch: compact input, compact/dense conv output, gathered and packed weights, oneDNN scratchpad.
    x_off_ = 0;
    y_off_ = align(x_off_ + floats(h_ * w_ * c_));
    wc_off_ = align(y_off_ + floats(oh_ * ow_ * m_));
    // A plain copy of the gathered weights is needed only where gather_weights cannot write
    // oneDNN's layout; with the dense primitive's layout addressable, the compact ones are too
    // (same formats, fewer channels), and the rare exception gathers into a heap buffer.
    plain_reserved_ = depthwise_ || onednn::blocked_offsets(dense_.pd.weights_desc()).along.size() != 4;
    // (A depthwise conv's weights are one filter per channel: c_ times fewer.)
    const int64_t per_out = depthwise_ ? 1 : c_;
    wp_off_ = align(wc_off_ + (plain_reserved_ ? floats(m_ * per_out * kh_ * kw_) : 0));
    // packed compact weights: oneDNN pads the channel dims to its blocks (up to 64)
    sp_off_ = align(wp_off_ + floats((m_ + 63) / 64 * 64 * ((per_out + 63) / 64 * 64) * kh_ * kw_));
    sp_reserve_ = std::max<size_t>(dense_.pd.scratchpad_desc().get_size(), size_t{1} << 20);
    // Small maps (late layers): the direct kernel reads the weights in place, where gathering
    // them for oneDNN per input can cost as much as the conv (make_gated_conv measures).
    const auto& cp = p_.conv;
    ds_ = {c_, m_, h_, w_, kh_, kw_, oh_, ow_, cp.pads[0], cp.pads[1], cp.strides[0]};
    direct_ = path == SmallMapPath::Direct && direct_applies(g, n);
    if (path == SmallMapPath::InputList && input_list_applies(g, n))
      input_list_ = std::make_unique<gated::InputListConv>(
          gated::InputListShape{c_, m_, h_, w_, kh_, kw_, oh_, ow_, cp.pads[0], cp.pads[1], cp.strides[0],
                                cp.strides[1], cp.dilations[0], cp.dilations[1]},
          weights_.data(), bias_.data());
    dc_off_ = align(sp_off_ + sp_reserve_);
    // The blocked form's input and output (the dense primitive's are the largest: compact
    // problems have fewer channels in the same blocks).
    // A depthwise conv's result for the computed channels, before the others' bias joins it.
    dw_off_ = align(dc_off_ + (direct_ ? gated::direct_conv_scratch(ds_) : 0) +
                    (input_list_ ? input_list_->scratch_bytes() : 0));
    bx_off_ = align(dw_off_ + (depthwise_ ? floats(oh_ * ow_ * m_) : 0));
    by_off_ = align(bx_off_ + (blocked_ ? dense_.pd.src_desc().get_size() : 0));
    scratch_ = align(by_off_ + (blocked_ ? dense_.pd.dst_desc().get_size() : 0));
    slots_ = static_cast<int>(std::min<int64_t>(batch_, omp_get_max_threads()));  // the session's thread count
  }

  // gated::InputListConv can compute this node: no gate of its own (every output computed),
  // gating on, at most 64 taps, finite weights (it pads with zeros: ops::all_finite).
  static bool input_list_applies(const graph::Graph& g, const graph::Node& n) {
    const auto& p = n.p<graph::GatedConvParams>();
    return p.form == graph::GateForm::All && p.gating && p.conv.group == 1 && n.layout == graph::Layout::NHWC &&
           p.conv.kernel_shape[0] * p.conv.kernel_shape[1] <= gated::InputListConv::kMaxTaps &&
           all_finite(g.value(n.inputs[1]).constant);
  }

  // The direct kernel can compute this node's compact problem (its strides, dilations and
  // kernel size, finite weights; make_gated_conv decides by the map's size and by measurement).
  static bool direct_applies(const graph::Graph& g, const graph::Node& n) {
    const auto& p = n.p<graph::GatedConvParams>();
    return p.gating && p.conv.group == 1 && n.layout == graph::Layout::NHWC &&
           gated::direct_conv_supported(p.conv.strides.data(), p.conv.dilations.data()) &&
           p.conv.kernel_shape[0] * p.conv.kernel_shape[1] <= 64 && all_finite(g.value(n.inputs[1]).constant);
  }

  std::string name() const override {
    return std::string(has_gate() ? "gated" : "gated-input") + (p_.gating ? "" : "(off)") + (compact_out_ ? "+compact-out" : "") +
           (direct_ && p_.gating ? ":direct" : "") + (input_list_ ? ":input-list" : "") + ":onednn:" +
           dense_.pd.impl_info_str() + layout_note_;
  }
  size_t scratch_bytes() const override { return scratch_ * static_cast<size_t>(slots_); }

  void run(const KernelArgs& a) const override {
    auto* scratch = static_cast<std::byte*>(a.scratch);
    StepRecord* rec = a.record;
    if (rec) {
      rec->filled = true;
      rec->executed_macs.assign(static_cast<size_t>(batch_), 0);
      rec->gate_macs.assign(static_cast<size_t>(batch_), has_gate() ? m_ * c_ : 0);
      rec->active_in.assign(static_cast<size_t>(batch_), 0);
      rec->active_out.assign(static_cast<size_t>(batch_), 0);
    }
    if (a.out_activity) {
      a.out_activity->samples.assign(static_cast<size_t>(batch_), {});
      a.out_activity->compact = compact_out_;
    }
    const bool in_compact = a.in_activity && a.in_activity->known() && a.in_activity->compact;
    // Batch > 1: samples run in parallel, each on its own slot of the scratch, and the
    // oneDNN calls inside run single-threaded. Per-sample parallel regions would put a
    // barrier after every small step, which a busy shared machine makes very slow.
    // (Batch 1 must not enter even an inactive parallel region: the kernels' own parallel
    // regions would then be nested ones, which get fresh threads every time.)
    const int slots = slots_;
    if (slots > 1) {
#pragma omp parallel for num_threads(slots) schedule(dynamic, 1)
      for (int64_t b = 0; b < batch_; ++b)
        run_sample(a, b, in_compact, scratch + static_cast<size_t>(omp_get_thread_num()) * scratch_);
    } else {
      for (int64_t b = 0; b < batch_; ++b) run_sample(a, b, in_compact, scratch);
    }
  }

 private:
  void run_sample(const KernelArgs& a, int64_t b, bool in_compact, std::byte* scratch) const {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const float* sb = p_.fused_sum ? a.in[graph::kGatedSumInput].as<const float>() + b * oh_ * ow_ * m_ : nullptr;
    StepRecord* rec = a.record;
    const gate::Spec spec{c_, m_, wg_.data(), bg_.data(), p_.form, p_.k, p_.saliency, p_.threshold_by_difference, p_.unit_pi, p_.positive_pi};
    std::vector<float> s(static_cast<size_t>(c_)), g(static_cast<size_t>(m_)), pi(static_cast<size_t>(m_));
    std::vector<int32_t> act_in, act_out;
    const int64_t per_map = kh_ * kw_ * oh_ * ow_;
    {
      const float* xb = X + b * h_ * w_ * c_;
      float* yb = Y + b * oh_ * ow_ * m_;
      act_in.clear();
      if (a.in_activity && a.in_activity->known() && p_.gating) {
        act_in = a.in_activity->samples[static_cast<size_t>(b)];
      } else {
        act_in.resize(static_cast<size_t>(c_));
        for (int64_t i = 0; i < c_; ++i) act_in[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      }
      if (has_gate()) saliency(xb, act_in, in_compact, s.data());
      gate::predict(spec, s.data(), g.data());
      gate::select(spec, g.data(), pi.data());
      if (p_.gating)
        for (int32_t o : dead_) pi[static_cast<size_t>(o)] = 0.f;  // selected or not: its suppressed value
      act_out.clear();
      for (int64_t o = 0; o < m_; ++o)
        if (pi[static_cast<size_t>(o)] != 0.f) act_out.push_back(static_cast<int32_t>(o));
      const auto ki = static_cast<int64_t>(act_in.size()), ko = static_cast<int64_t>(act_out.size());
      int64_t executed;
      // Nearly every channel active (d = 1 with a few g = 0): the dense conv is cheaper than
      // the compact one. Compact input with every channel active is dense too. Without a
      // gate of its own (every output kept), nearly every input active is dense too.
      const bool dense = !p_.gating || (ki == c_ && ko * 100 >= m_ * gate::kDenseFromPercent) ||
                         (!has_gate() && !in_compact && ki * 100 >= c_ * gate::kDenseFromPercent);
      if (dense) {
        run_dense(xb, yb, pi.data(), sb, scratch);
        executed = m_ * (depthwise_ ? 1 : c_) * per_map;
      } else if (ko == 0 || ki == 0) {
        // No active output: every channel is its suppressed constant. No active input (the
        // layer before suppressed everything): each active output is its conv bias at every
        // pixel, padding included, then gated like any computed value.
        if (ko > 0) {
          float* yc = compact_out_ ? yb : reinterpret_cast<float*>(scratch + y_off_);
          for (int64_t p = 0; p < oh_ * ow_; ++p)
            for (int64_t j = 0; j < ko; ++j) yc[p * ko + j] = bias_[static_cast<size_t>(act_out[static_cast<size_t>(j)])];
          if (compact_out_)
            scale_compact(yb, pi.data(), act_out);
          else
            fill_suppressed(yb, pi.data(), yc, act_out, sb);
        } else if (!compact_out_) {
          fill_suppressed(yb, pi.data(), nullptr, act_out, sb);
        }
        executed = 0;
      } else if (depthwise_) {
        executed = run_depthwise(xb, yb, pi.data(), act_in, in_compact, act_out, sb, scratch) * per_map;
      } else {
        run_compact(xb, yb, pi.data(), act_in, in_compact, act_out, sb, scratch);
        executed = ko * ki * per_map;
      }
      if (rec) {
        rec->executed_macs[static_cast<size_t>(b)] = executed;
        rec->active_in[static_cast<size_t>(b)] = static_cast<int32_t>(dense ? c_ : ki);
        rec->active_out[static_cast<size_t>(b)] = static_cast<int32_t>(dense ? m_ : ko);
      }
      if (a.out_activity) {
        auto& nz = a.out_activity->samples[static_cast<size_t>(b)];
        for (int64_t o = 0; o < m_; ++o)  // a dense run stored every channel: all are listed
          if ((dense && compact_out_) || p_.fused_sum || pi[static_cast<size_t>(o)] != 0.f ||
              suppressed_[static_cast<size_t>(o)] != 0.f)
            nz.push_back(static_cast<int32_t>(o));
      }
    }
  }

  struct Prim {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
    memory::desc src, dst, w_plain, bias;
    onednn::BlockedOffsets w_layout;  // where gather_weights writes; not ok(): gather plain + reorder
    dnnl::reorder w_reorder;
    // Blocked form: src/dst in the primitive's own layout, NHWC reordered in and out.
    bool blocked = false;
    memory::desc bsrc, bdst;
    dnnl::reorder to_src, from_dst;
  };

  static size_t floats(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }
  static size_t align(size_t b) { return (b + 63) / 64 * 64; }
  const float* beta() const { return beta_.empty() ? nullptr : beta_.data(); }
  bool has_gate() const { return p_.form != graph::GateForm::All; }

  // Depthwise: ki = ko channels, one filter each (weights [ko, 1, 1, kh, kw], grouped).
  Prim make_prim(int64_t ki, int64_t ko, bool blocked) const {
    Prim pr;
    pr.src = memory::desc({1, ki, h_, w_}, memory::data_type::f32, tag::nhwc);
    pr.dst = memory::desc({1, ko, oh_, ow_}, memory::data_type::f32, tag::nhwc);
    const memory::desc src_any({1, ki, h_, w_}, memory::data_type::f32, tag::any);
    const memory::desc dst_any({1, ko, oh_, ow_}, memory::data_type::f32, tag::any);
    const memory::dims wd = depthwise_ ? memory::dims{ko, 1, 1, kh_, kw_} : memory::dims{ko, ki, kh_, kw_};
    pr.w_plain = memory::desc(wd, memory::data_type::f32, depthwise_ ? tag::goihw : tag::oihw);
    pr.bias = memory::desc({ko}, memory::data_type::f32, tag::a);
    memory::desc w_any(wd, memory::data_type::f32, tag::any);
    const auto& c = p_.conv;
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                      blocked ? src_any : pr.src, w_any, pr.bias, blocked ? dst_any : pr.dst,
                                      {c.strides[0], c.strides[1]},
                                      {c.dilations[0] - 1, c.dilations[1] - 1}, {c.pads[0], c.pads[1]},
                                      {c.pads[2], c.pads[3]});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    pr.pd = dnnl::convolution_forward::primitive_desc(d, attr, onednn::engine());
    pr.prim = dnnl::convolution_forward(pr.pd);
    if (blocked && pr.pd.src_desc() != pr.src) {
      pr.blocked = true;
      pr.bsrc = pr.pd.src_desc(), pr.bdst = pr.pd.dst_desc();
      pr.to_src = dnnl::reorder(dnnl::reorder::primitive_desc(onednn::engine(), pr.src, onednn::engine(), pr.bsrc));
      pr.from_dst = dnnl::reorder(dnnl::reorder::primitive_desc(onednn::engine(), pr.bdst, onednn::engine(), pr.dst));
    } else if (blocked) {  // oneDNN keeps NHWC here: the plain form
      return make_prim(ki, ko, false);
    }
    pr.w_layout = onednn::blocked_offsets(pr.pd.weights_desc());
    if (pr.w_layout.along.size() != 4 || depthwise_) pr.w_layout = {};  // [k_out, k_in, kh, kw] only
    if (!pr.w_layout.ok())
      pr.w_reorder = dnnl::reorder(memory(pr.w_plain, onednn::engine(), nullptr),
                                   memory(pr.pd.weights_desc(), onednn::engine(), nullptr));
    return pr;
  }

  void pack_dense_weights() {
    dense_w_ = onednn::pack(dense_.w_plain, weights_.data(), dense_.pd.weights_desc());
    dense_b_ = onednn::pack(dense_.bias, bias_.data(), dense_.bias);
  }

  const Prim& compact_prim(int64_t ki, int64_t ko) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto key = std::make_pair(ki, ko);
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, std::make_unique<Prim>(make_prim(ki, ko, blocked_))).first;
    return *it->second;
  }

  // Where exec_conv's buffers lie in a scratch slot: oneDNN's scratchpad [sp, sp + sp_size),
  // the blocked form's input [bx, by) and output [by, end).
  struct ConvScratch {
    size_t sp, sp_size, bx, by, end;
  };
  ConvScratch conv_scratch() const { return {sp_off_, sp_reserve_, bx_off_, by_off_, scratch_}; }

  void exec_conv(const Prim& pr, const void* src, const memory& w, const memory& bias, float* dst,
                 std::byte* scratch, const ConvScratch& at) const {
    const size_t sp = pr.pd.scratchpad_desc().get_size();
    std::vector<std::byte> heap;
    void* sp_ptr = scratch + at.sp;
    if (sp > at.sp_size) {
      heap.resize(sp);
      sp_ptr = heap.data();
    }
    memory x(pr.src, onednn::engine(), const_cast<void*>(src)), y(pr.dst, onednn::engine(), dst);
    if (!pr.blocked) {
      onednn::execute(pr.prim, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, y}},
                      pr.pd.scratchpad_desc(), sp_ptr);
      return;
    }
    // The reserve is the dense primitive's blocked sizes; a compact primitive whose format
    // pads more (not seen) gets heap buffers rather than overrunning it.
    std::byte* bx_ptr = scratch + at.bx;
    std::byte* by_ptr = scratch + at.by;
    std::vector<std::byte> bheap;
    if (pr.bsrc.get_size() > at.by - at.bx || pr.bdst.get_size() > at.end - at.by) {
      bheap.resize(align(pr.bsrc.get_size()) + pr.bdst.get_size() + 64);
      bx_ptr = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(bheap.data()) + 63) / 64 * 64);
      by_ptr = bx_ptr + align(pr.bsrc.get_size());
    }
    memory bx(pr.bsrc, onednn::engine(), bx_ptr), by(pr.bdst, onednn::engine(), by_ptr);
    dnnl::stream& st = onednn::thread_stream();
    pr.to_src.execute(st, x, bx);
    onednn::execute(pr.prim, {{DNNL_ARG_SRC, bx}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, by}},
                    pr.pd.scratchpad_desc(), sp_ptr);
    pr.from_dst.execute(st, by, y);
    st.wait();
  }

  // The dense primitive's blocked form (its activations in oneDNN's own layout, reorders
  // around it; ops/conv/onednn.cpp explains when that pays) where the layer takes it: forced,
  // or measured faster than NHWC on random data here, the fastest of 3 calls each in turns,
  // where onednn::blocked_form_may_pay. The compact primitives follow the layer's choice.
  std::optional<Prim> blocked_form(ActLayout layout, int64_t macs) {
    if (depthwise_) return std::nullopt;  // (NHWC: what the compact channel lists are gathered in)
    if (layout == ActLayout::Measured && !onednn::blocked_form_may_pay(dense_.pd.impl_info_str(), macs))
      return std::nullopt;
    Prim b = make_prim(c_, m_, true);
    if (!b.blocked) return std::nullopt;
    if (layout == ActLayout::Blocked) {
      layout_note_ = " (blocked activations, reordered)";
      return b;
    }
    const memory wn = onednn::pack(dense_.w_plain, weights_.data(), dense_.pd.weights_desc());
    const memory wb = onednn::pack(b.w_plain, weights_.data(), b.pd.weights_desc());
    const memory bias = onednn::pack(dense_.bias, bias_.data(), dense_.bias);
    std::vector<float> x(static_cast<size_t>(h_ * w_ * c_)), y(static_cast<size_t>(oh_ * ow_ * m_));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
    const size_t sp = std::max(dense_.pd.scratchpad_desc().get_size(), b.pd.scratchpad_desc().get_size());
    const ConvScratch at{0, sp, align(sp), align(sp) + align(b.bsrc.get_size()),
                         align(sp) + align(b.bsrc.get_size()) + b.bdst.get_size()};
    std::vector<std::byte> scratch(at.end + 64);
    auto* base = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64);
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < 3; ++r)
      for (int f = 0; f < 2; ++f) {
        const auto t0 = std::chrono::steady_clock::now();
        exec_conv(f ? b : dense_, x.data(), f ? wb : wn, bias, y.data(), base, at);
        best[f] = std::min(best[f], std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    char note[80];
    std::snprintf(note, sizeof note, " [measured: nhwc %.3f ms, blocked %.3f ms]", best[0], best[1]);
    layout_note_ = (best[1] < best[0] ? " (blocked activations, reordered)" : "") + std::string(note);
    if (best[1] < best[0]) return b;
    return std::nullopt;
  }

  // Mean (or mean |x|) over pixels of every input channel, or their maximum or L2 norm
  // (GatedConvParams::Pool); channels outside act_in are known to be zero and stay 0. Pixel
  // blocks are reduced in parallel, in a fixed order.
  void saliency(const float* xb, const std::vector<int32_t>& act_in, bool compact, float* s) const {
    if (p_.saliency_pool != graph::GatedConvParams::Pool::Mean) return saliency_max_l2(xb, act_in, compact, s);
    const int64_t hw = h_ * w_;
    const auto ki = static_cast<int64_t>(act_in.size());
    const bool all = ki == c_ || compact;
    const int64_t stride = compact ? ki : c_;
    constexpr int64_t kBlock = 256;
    const int64_t blocks = (hw + kBlock - 1) / kBlock;
    std::vector<float> part(static_cast<size_t>(blocks * ki), 0.f);
    if (ki == 0) {
      std::fill(s, s + c_, 0.f);
      return;
    }
#pragma omp parallel for if (hw * ki > 32768)
    for (int64_t bl = 0; bl < blocks; ++bl) {
      float* acc = part.data() + bl * ki;
      const int64_t p1 = std::min(hw, (bl + 1) * kBlock);
      for (int64_t p = bl * kBlock; p < p1; ++p) {
        const float* r = xb + p * stride;
        if (all) {  // every stored channel, in order: act_in[j] is at j
          if (p_.abs_saliency)
            for (int64_t i = 0; i < stride; ++i) acc[i] += std::fabs(r[i]);
          else
            for (int64_t i = 0; i < stride; ++i) acc[i] += r[i];
        } else {
          for (int64_t j = 0; j < ki; ++j) {
            const float v = r[act_in[static_cast<size_t>(j)]];
            acc[j] += p_.abs_saliency ? std::fabs(v) : v;
          }
        }
      }
    }
    std::fill(s, s + c_, 0.f);
    for (int64_t j = 0; j < ki; ++j) {
      double t = 0;
      for (int64_t bl = 0; bl < blocks; ++bl) t += part[static_cast<size_t>(bl * ki + j)];
      s[act_in[static_cast<size_t>(j)]] = static_cast<float>(t / static_cast<double>(hw));
    }
  }

  // The maximum or the L2 norm of each active input channel (one pass, per channel in pixel
  // order; a NaN is kept, as the graph's max pool or norm gives NaN).
  void saliency_max_l2(const float* xb, const std::vector<int32_t>& act_in, bool compact, float* s) const {
    const int64_t hw = h_ * w_;
    const auto ki = static_cast<int64_t>(act_in.size());
    const int64_t stride = compact ? ki : c_;
    const bool max = p_.saliency_pool == graph::GatedConvParams::Pool::Max;
    std::fill(s, s + c_, 0.f);
#pragma omp parallel for if (hw * ki > 32768)
    for (int64_t j = 0; j < ki; ++j) {
      const int64_t at = compact ? j : act_in[static_cast<size_t>(j)];
      float mx = -std::numeric_limits<float>::infinity();
      double sq = 0;
      for (int64_t p = 0; p < hw; ++p) {
        const float v = p_.abs_saliency ? std::fabs(xb[p * stride + at]) : xb[p * stride + at];
        if (max) mx = std::isnan(v) || v > mx ? v : mx;
        else sq += static_cast<double>(v) * v;
      }
      s[act_in[static_cast<size_t>(j)]] = max ? mx : static_cast<float>(std::sqrt(sq));
    }
  }

  // sb: this sample's fused residual operand (NHWC, like the output), or null.
  void run_dense(const float* xb, float* yb, const float* pi, const float* sb, std::byte* scratch) const {
    exec_conv(dense_, xb, dense_w_, dense_b_, yb, scratch, conv_scratch());
    if (!has_gate()) return finish_every_output(yb, sb);  // pi = 1 (a pruned channel's 0 is act(0 + sum) too)
    const int64_t pixels = oh_ * ow_;
    const float* be = beta();
    if (sb) {
#pragma omp parallel for if (pixels * m_ > 65536)
      for (int64_t p = 0; p < pixels; ++p) {
        float* r = yb + p * m_;
        const float* sr = sb + p * m_;
        for (int64_t o = 0; o < m_; ++o)
          r[o] = gate::activate(p_, sr[o] + (pi[o] != 0.f ? gate::pre_active(p_, be, o, pi[o], r[o])
                                                          : pre_suppressed_[static_cast<size_t>(o)]));
      }
      return;
    }
    // y = act(pi * v + beta) where pi != 0, else the suppressed constant (gate::active_value), in
    // a loop the compiler vectorises: per value through the switch it took 2.8 ms of a 112x112
    // FBS MobileNetV2 expand conv at d = 1, most of its time.
    std::vector<float> scale(pi, pi + m_), shift(static_cast<size_t>(m_), -0.f);  // (-0: v + -0 is v, -0 too)
    std::vector<int32_t> on(static_cast<size_t>(m_));
    for (int64_t o = 0; o < m_; ++o) {
      on[static_cast<size_t>(o)] = pi[o] != 0.f ? -1 : 0;
      if (be && p_.beta != graph::BetaMode::None) shift[static_cast<size_t>(o)] = be[o];
    }
    // (__restrict: with the four per-channel arrays possibly aliasing the row, GCC kept it scalar.)
    const float* __restrict sc = scale.data();
    const float* __restrict sh = shift.data();
    const float* __restrict off = suppressed_.data();
    const int32_t* __restrict active = on.data();
    with_activation(false, [&](auto act) {  // as gate::activate
#pragma omp parallel for if (pixels * m_ > 65536)
      for (int64_t p = 0; p < pixels; ++p) {
        float* __restrict r = yb + p * m_;
        for (int64_t o = 0; o < m_; ++o) {
          const float v = act(sc[o] * r[o] + sh[o]), w = off[o];
          r[o] = active[o] ? v : w;
        }
      }
    });
  }

  // Writes every pixel: suppressed constants, then (if given) the active channels from compact.
  // With a fused residual operand sb: y = act(sb + pre-activation value), every channel.
  // Per pixel, the active channels' compact values are moved to their places in a row (plain
  // copies), then one loop over the output channels that the compiler vectorises gives each
  // act(pi * v + beta) where active, else the suppressed constant. (A scalar pass per channel
  // and a second per active channel took 8% of a gated ResNet-18 at d = 0.25; the active values
  // through gate::active_value's per-value switch, 3% at d = 0.5.)
  void fill_suppressed(float* yb, const float* pi, const float* compact, const std::vector<int32_t>& act_out,
                       const float* sb) const {
    const int64_t pixels = oh_ * ow_;
    const auto ko = static_cast<int64_t>(act_out.size());
    if (!compact || ko == 0) {
      if (!sb) {
#pragma omp parallel for if (pixels * m_ > 65536)
        for (int64_t p = 0; p < pixels; ++p) std::memcpy(yb + p * m_, suppressed_.data(), floats(m_));
        return;
      }
      compact = nullptr;
    }
    const float* be = beta();
    // Per output channel: whether it is active, pi and beta (as gate::pre_active: pi * v, then
    // + beta).
    std::vector<int32_t> on(static_cast<size_t>(m_), 0);
    std::vector<float> scale(static_cast<size_t>(m_), 0.f), shift(static_cast<size_t>(m_), -0.f);  // (as run_dense)
    for (int64_t j = 0; compact && j < ko; ++j) {
      const auto o = static_cast<size_t>(act_out[static_cast<size_t>(j)]);
      on[o] = -1;
      scale[o] = pi[o];
      if (be && p_.beta != graph::BetaMode::None) shift[o] = be[o];
    }
    const int32_t* __restrict active = on.data();
    const int32_t* __restrict place = act_out.data();
    const float* __restrict sc = scale.data();
    const float* __restrict sh = shift.data();
    const float* __restrict off = sb ? pre_suppressed_.data() : suppressed_.data();
    with_activation(false, [&](auto act) {  // as gate::activate
#pragma omp parallel if (pixels * m_ > 65536)
      {
        // The active values at their channels; the others stay 0 (read, and not used).
        std::vector<float> row_v(static_cast<size_t>(m_), 0.f);
        float* __restrict row = row_v.data();
#pragma omp for
        for (int64_t p = 0; p < pixels; ++p) {
          float* __restrict r = yb + p * m_;
          if (compact) {
            const float* __restrict cr = compact + p * ko;
            for (int64_t j = 0; j < ko; ++j) row[place[j]] = cr[j];
          }
          if (sb) {
            const float* __restrict sr = sb + p * m_;
            for (int64_t o = 0; o < m_; ++o) {
              const float v = sc[o] * row[o] + sh[o], w = off[o];
              r[o] = act(sr[o] + (active[o] ? v : w));
            }
          } else {
            for (int64_t o = 0; o < m_; ++o) {
              const float v = act(sc[o] * row[o] + sh[o]), w = off[o];
              r[o] = active[o] ? v : w;
            }
          }
        }
      }
    });
  }

  void scale_compact(float* yc, const float* pi, const std::vector<int32_t>& act_out) const {
    const int64_t pixels = oh_ * ow_;
    const auto ko = static_cast<int64_t>(act_out.size());
    std::vector<float> scale(static_cast<size_t>(ko)), shift(static_cast<size_t>(ko), -0.f);  // (as run_dense)
    for (int64_t j = 0; j < ko; ++j) {
      const int32_t o = act_out[static_cast<size_t>(j)];
      scale[static_cast<size_t>(j)] = pi[o];
      if (!beta_.empty() && p_.beta != graph::BetaMode::None) shift[static_cast<size_t>(j)] = beta_[static_cast<size_t>(o)];
    }
    const float* sc = scale.data();
    const float* sh = shift.data();
    with_activation(false, [&](auto act) {  // as gate::activate
#pragma omp parallel for if (pixels * ko > 65536)
      for (int64_t p = 0; p < pixels; ++p) {
        float* r = yc + p * ko;
        for (int64_t j = 0; j < ko; ++j) r[j] = act(sc[j] * r[j] + sh[j]);
      }
    });
  }

  // Calls f(act) with act(v) the fused activation as a function the compiler inlines into f's
  // loops, so that they vectorise for Relu, none and Clip (the generic activation per value,
  // a switch, kept a compact output's epilogue scalar: 19% of an FBS MobileNetV2's time).
  // Relu maps NaN as gate::activate (kept) or graph::apply_activation (to 0), as nan_to_zero says.
  template <class F>
  void with_activation(bool nan_to_zero, F&& f) const {
    const graph::FusedActivation a = p_.activation;
    if (a.kind == graph::Activation::Relu && nan_to_zero)
      f([](float v) { return v > 0.f ? v : 0.f; });
    else if (a.kind == graph::Activation::Relu)
      f([](float v) { return v < 0.f ? 0.f : v; });
    else if (a.kind == graph::Activation::None)
      f([](float v) { return v; });
    else if (a.kind == graph::Activation::Clip)  // as graph::apply_activation: NaN -> the lower bound
      f([lo = a.alpha, hi = a.beta](float v) { return v > lo ? (hi < v ? hi : v) : lo; });
    else
      f([&a](float v) { return graph::apply_activation(a, v); });
  }

  // No gate of its own and every output channel computed (GateForm::All): the compact result
  // is the output itself, channel for channel. y = act(conv + sum), in place over it.
  void finish_every_output(float* yb, const float* sb) const {
    const int64_t n = oh_ * ow_ * m_;
    with_activation(true, [&](auto act) {
      if (sb) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; ++i) yb[i] = act(sb[i] + yb[i]);
      } else {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; ++i) yb[i] = act(yb[i]);
      }
    });
  }

  void run_compact(const float* xb, float* yb, const float* pi, const std::vector<int32_t>& act_in, bool in_compact,
                   const std::vector<int32_t>& act_out, const float* sb, std::byte* scratch) const {
    const auto ki = static_cast<int64_t>(act_in.size()), ko = static_cast<int64_t>(act_out.size());
    const bool every_output = !has_gate() && ko == m_;
    // The hand-written kernels' input: active channel j at position pos[j] of each pixel's
    // x_stride floats (compact input: j of ki; else its channel of c_).
    auto positions = [&] {
      std::vector<int32_t> pos(act_in);
      if (in_compact)
        for (int64_t j = 0; j < ki; ++j) pos[static_cast<size_t>(j)] = static_cast<int32_t>(j);
      return pos;
    };
    const int64_t x_stride = in_compact ? ki : c_;
    if (input_list_ && every_output) {
      const std::vector<int32_t> pos = positions();
      input_list_->run(xb, x_stride, pos.data(), act_in.data(), ki, yb, sb, p_.activation, scratch + dc_off_);
      return;
    }
    if (direct_) {
      const std::vector<int32_t> pos = positions();
      float* out = compact_out_ || every_output ? yb : reinterpret_cast<float*>(scratch + y_off_);
      gated::DirectEpilogue ep;
      if (every_output) ep = {sb, m_, p_.activation};
      gated::direct_conv(ds_, xb, x_stride, pos.data(), act_in.data(), ki, weights_.data(), bias_.data(),
                         act_out.data(), ko, out, scratch + dc_off_, ep);
      if (every_output) return;
      if (compact_out_)
        scale_compact(yb, pi, act_out);
      else
        fill_suppressed(yb, pi, out, act_out, sb);
      return;
    }
    const Prim& pr = compact_prim(ki, ko);
    // Input: the active channels, or the tensor itself when all are active.
    const float* src = xb;
    if (ki != c_ && !in_compact) {
      auto* xc = reinterpret_cast<float*>(scratch + x_off_);
      const int64_t hw = h_ * w_;
#pragma omp parallel for if (hw * ki > 65536)
      for (int64_t p = 0; p < hw; ++p) {
        const float* r = xb + p * c_;
        float* d = xc + p * ki;
        for (int64_t j = 0; j < ki; ++j) d[j] = r[act_in[static_cast<size_t>(j)]];
      }
      src = xc;
    }
    // Weights of the active (out, in) pairs, in the primitive's layout (on the heap if oneDNN
    // ever pads them past the space reserved: channel blocks beyond 64).
    std::vector<float> w_heap;
    void* wp = scratch + wp_off_;
    if (pr.pd.weights_desc().get_size() > sp_off_ - wp_off_) {
      w_heap.resize(pr.pd.weights_desc().get_size() / sizeof(float) + 1);
      wp = w_heap.data();
    }
    memory w_packed(pr.pd.weights_desc(), onednn::engine(), wp);
    if (pr.w_layout.ok()) {
      gated::gather_weights(weights_.data(), c_, kh_, kw_, act_out.data(), ko, act_in.data(), ki, pr.w_layout,
                            static_cast<float*>(wp));
    } else {  // a layout gather_weights cannot address: gather plain, then oneDNN's reorder
      const int64_t taps = kh_ * kw_;
      std::vector<float> wc_heap(plain_reserved_ ? 0 : static_cast<size_t>(ko * ki * taps));
      float* wc = plain_reserved_ ? reinterpret_cast<float*>(scratch + wc_off_) : wc_heap.data();
#pragma omp parallel for if (ko * ki * taps > 65536)
      for (int64_t jo = 0; jo < ko; ++jo) {
        const float* wo = weights_.data() + static_cast<int64_t>(act_out[static_cast<size_t>(jo)]) * c_ * taps;
        float* d = wc + jo * ki * taps;
        for (int64_t ji = 0; ji < ki; ++ji)
          std::memcpy(d + ji * taps, wo + static_cast<int64_t>(act_in[static_cast<size_t>(ji)]) * taps, floats(taps));
      }
      memory w_plain(pr.w_plain, onednn::engine(), wc);
      dnnl::stream& s = onednn::thread_stream();
      pr.w_reorder.execute(s, w_plain, w_packed);
      s.wait();
    }
    std::vector<float> bc(static_cast<size_t>(ko));
    for (int64_t jo = 0; jo < ko; ++jo) bc[static_cast<size_t>(jo)] = bias_[static_cast<size_t>(act_out[static_cast<size_t>(jo)])];
    memory bias(pr.bias, onednn::engine(), bc.data());
    if (compact_out_ || every_output) {  // straight into the output, then the epilogue in place
      exec_conv(pr, src, w_packed, bias, yb, scratch, conv_scratch());
      if (every_output)
        finish_every_output(yb, sb);
      else
        scale_compact(yb, pi, act_out);
      return;
    }
    auto* yc = reinterpret_cast<float*>(scratch + y_off_);
    exec_conv(pr, src, w_packed, bias, yc, scratch, conv_scratch());
    fill_suppressed(yb, pi, yc, act_out, sb);
  }

  // Depthwise (group = C = M): output channel o reads input channel o alone. The active outputs
  // whose input is active are computed (their input channels gathered, then oneDNN's depthwise
  // conv on them, a primitive cached per count); the other active outputs read a zero channel,
  // so are their bias at every pixel, padding included. Then the epilogue, as run_compact's.
  // Returns the channels computed.
  int64_t run_depthwise(const float* xb, float* yb, const float* pi, const std::vector<int32_t>& act_in,
                        bool in_compact, const std::vector<int32_t>& act_out, const float* sb,
                        std::byte* scratch) const {
    const auto ki = static_cast<int64_t>(act_in.size()), ko = static_cast<int64_t>(act_out.size());
    const bool every_output = !has_gate() && ko == m_;
    const int64_t x_stride = in_compact ? ki : c_, hw = h_ * w_, pixels = oh_ * ow_, taps = kh_ * kw_;
    std::vector<int32_t> where(static_cast<size_t>(c_), -1);  // channel -> its place in xb's pixel rows
    for (int64_t j = 0; j < ki; ++j)
      where[static_cast<size_t>(act_in[static_cast<size_t>(j)])] = static_cast<int32_t>(in_compact ? j : act_in[static_cast<size_t>(j)]);
    std::vector<int32_t> run, from;  // computed: act_out's position, and where its input is
    for (int64_t j = 0; j < ko; ++j)
      if (int32_t at = where[static_cast<size_t>(act_out[static_cast<size_t>(j)])]; at >= 0)
        run.push_back(static_cast<int32_t>(j)), from.push_back(at);
    const auto kc = static_cast<int64_t>(run.size());
    float* yc = compact_out_ || every_output ? yb : reinterpret_cast<float*>(scratch + y_off_);  // [pixels, ko]
    float* dst = kc == ko ? yc : reinterpret_cast<float*>(scratch + dw_off_);                    // [pixels, kc]
    if (kc > 0) {
      bool in_place = kc == x_stride;  // xb's rows are the computed channels, in order
      for (int64_t j = 0; in_place && j < kc; ++j) in_place = from[static_cast<size_t>(j)] == j;
      const float* src = xb;
      if (!in_place) {  // runs of consecutive channels copied whole
        std::vector<std::array<int32_t, 3>> runs;  // (to, from, length)
        for (int32_t j = 0; j < static_cast<int32_t>(kc); ++j)
          if (!runs.empty() && runs.back()[1] + runs.back()[2] == from[static_cast<size_t>(j)])
            ++runs.back()[2];
          else
            runs.push_back({j, from[static_cast<size_t>(j)], 1});
        auto* xc = reinterpret_cast<float*>(scratch + x_off_);
        if (static_cast<int64_t>(runs.size()) * 8 > kc) {  // short runs: value by value
          const int32_t* at = from.data();
#pragma omp parallel for if (hw * kc > 65536)
          for (int64_t p = 0; p < hw; ++p) {
            const float* r = xb + p * x_stride;
            float* d = xc + p * kc;
            for (int64_t j = 0; j < kc; ++j) d[j] = r[at[j]];
          }
        } else {
#pragma omp parallel for if (hw * kc > 65536)
          for (int64_t p = 0; p < hw; ++p)
            for (const auto& [to, at, len] : runs) std::memcpy(xc + p * kc + to, xb + p * x_stride + at, floats(len));
        }
        src = xc;
      }
      const Prim& pr = compact_prim(kc, kc);
      auto* wc = reinterpret_cast<float*>(scratch + wc_off_);
      std::vector<float> bc(static_cast<size_t>(kc));
      for (int64_t j = 0; j < kc; ++j) {
        const int32_t o = act_out[static_cast<size_t>(run[static_cast<size_t>(j)])];
        std::memcpy(wc + j * taps, weights_.data() + static_cast<int64_t>(o) * taps, floats(taps));
        bc[static_cast<size_t>(j)] = bias_[static_cast<size_t>(o)];
      }
      std::vector<float> w_heap;
      void* wp = scratch + wp_off_;
      if (pr.pd.weights_desc().get_size() > sp_off_ - wp_off_) {
        w_heap.resize(pr.pd.weights_desc().get_size() / sizeof(float) + 1);
        wp = w_heap.data();
      }
      memory w_packed(pr.pd.weights_desc(), onednn::engine(), wp), w_plain(pr.w_plain, onednn::engine(), wc);
      dnnl::stream& st = onednn::thread_stream();
      pr.w_reorder.execute(st, w_plain, w_packed);
      st.wait();
      memory bias(pr.bias, onednn::engine(), bc.data());
      exec_conv(pr, src, w_packed, bias, dst, scratch, conv_scratch());
    }
    if (kc < ko) {  // the outputs whose input is zero: their bias; the computed ones in between
      std::vector<float> row(static_cast<size_t>(ko));
      for (int64_t j = 0; j < ko; ++j) row[static_cast<size_t>(j)] = bias_[static_cast<size_t>(act_out[static_cast<size_t>(j)])];
      const int32_t* at = run.data();
#pragma omp parallel for if (pixels * ko > 65536)
      for (int64_t p = 0; p < pixels; ++p) {
        float* r = yc + p * ko;
        std::memcpy(r, row.data(), floats(ko));
        const float* d = dst + p * kc;
        for (int64_t i = 0; i < kc; ++i) r[at[i]] = d[i];
      }
    }
    if (every_output)
      finish_every_output(yb, sb);
    else if (compact_out_)
      scale_compact(yb, pi, act_out);
    else
      fill_suppressed(yb, pi, yc, act_out, sb);
    return kc;
  }

  graph::GatedConvParams p_;
  bool depthwise_ = false;
  bool compact_out_ = false;
  int64_t batch_, c_, h_, w_, m_, oh_, ow_, kh_, kw_;
  std::vector<float> weights_, bias_, wg_, bg_, beta_, suppressed_, pre_suppressed_;
  std::vector<int32_t> dead_;  // pruned channels (all-zero filter and bias), run as suppressed
  Prim dense_;
  memory dense_w_, dense_b_;
  size_t x_off_ = 0, y_off_ = 0, wc_off_ = 0, wp_off_ = 0, sp_off_ = 0, sp_reserve_ = 0, dc_off_ = 0, dw_off_ = 0, bx_off_ = 0,
         by_off_ = 0, scratch_ = 0;
  bool blocked_ = false;     // convs on oneDNN's blocked activation layout (blocked_form)
  std::string layout_note_;  // what blocked_form measured
  bool plain_reserved_ = true;  // scratch holds a plain gathered copy (wc_off_) for the reorder path
  bool direct_ = false;
  std::unique_ptr<gated::InputListConv> input_list_;
  gated::DirectConvShape ds_{};
  int slots_ = 1;  // samples run at once (batch > 1), each with scratch_ bytes
  mutable std::mutex mu_;
  mutable std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Prim>> cache_;
};

}  // namespace

namespace {

// The input activity a gated conv will typically see: the k channels of the gated conv that
// feeds it (through ops that keep zero channels zero), spread over the channels; compact when
// that producer writes compact. No such producer (none, or one whose every channel is active,
// as a gated conv with a fused residual sum): empty (every channel is read). Timing the layers
// behind a residual block's gated sum on k channels made ResNet-18's 7x7 layers look 3x cheaper
// on the direct kernel than they are.
ChannelActivity typical_input_activity(const graph::Graph& g, const graph::Node& n) {
  ChannelActivity act;
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Node* prod = graph::gated_activity_source(g, n.inputs[0]);
  if (!prod) return act;
  const bool direct = x.producer >= 0 && &g.node(x.producer) == prod;
  const int64_t c = x.shape[1], k = std::clamp<int64_t>(prod->p<graph::GatedConvParams>().k, 1, c);
  std::vector<int32_t> spread(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) spread[static_cast<size_t>(j)] = static_cast<int32_t>(j * c / k);
  act.samples.assign(static_cast<size_t>(x.shape[0]), spread);
  act.compact = direct && writes_compact(g, *prod);
  return act;
}

}  // namespace

std::unique_ptr<Kernel> make_gated_conv_direct(const graph::Graph& g, const graph::Node& n) {
  if (!GatedConv::direct_applies(g, n)) return nullptr;
  return std::make_unique<GatedConv>(g, n, SmallMapPath::Direct);
}

std::unique_ptr<Kernel> make_gated_conv_onednn(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NHWC) return nullptr;
  return std::make_unique<GatedConv>(g, n, SmallMapPath::OneDnn);
}

std::unique_ptr<Kernel> make_gated_conv_blocked(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NHWC) return nullptr;
  auto k = std::make_unique<GatedConv>(g, n, SmallMapPath::OneDnn, ActLayout::Blocked);
  return k->name().find("blocked") == std::string::npos ? nullptr : std::move(k);
}

std::unique_ptr<Kernel> make_gated_conv_input_list(const graph::Graph& g, const graph::Node& n) {
  if (!GatedConv::input_list_applies(g, n)) return nullptr;
  return std::make_unique<GatedConv>(g, n, SmallMapPath::InputList);
}

std::unique_ptr<Kernel> make_gated_conv(const graph::Graph& g, const graph::Node& n) {
  auto onednn = make_gated_conv_onednn(g, n);
  if (!onednn) return onednn;
  // Candidates besides oneDNN on the active weights gathered per input: on small maps the
  // direct kernel (stride-2 layers and wide 14x14 maps can go to oneDNN; 7x7 maps to the
  // direct kernel); without a gate of its own, the input-list kernel on any map.
  std::vector<std::pair<const char*, std::unique_ptr<Kernel>>> cand;
  const Shape& y = g.value(n.outputs[0]).shape;
  if (y[2] * y[3] <= kDirectMaxPixels)
    if (auto direct = make_gated_conv_direct(g, n)) cand.emplace_back("direct", std::move(direct));
  if (auto list = make_gated_conv_input_list(g, n)) cand.emplace_back("input-list", std::move(list));
  if (cand.empty()) return onednn;
  cand.emplace_back("onednn", std::move(onednn));
  // Timed at the model's k, on the input activity the layer will see: the fastest of ~5
  // calls each, in turns.
  const ChannelActivity act = typical_input_activity(g, n);
  std::vector<const Kernel*> ks;
  for (const auto& c : cand) ks.push_back(c.second.get());
  const std::vector<double> t = time_kernels(ks, g, n, 5, &act);
  std::string note = "[measured:";
  size_t best = 0;
  for (size_t i = 0; i < cand.size(); ++i) {
    char one[48];
    std::snprintf(one, sizeof one, "%s %s %.3f ms", i ? "," : "", cand[i].first, t[i]);
    note += one;
    if (t[i] < t[best]) best = i;
  }
  return with_note(std::move(cand[best].second), note + "]");
}

}  // namespace sluice::ops
