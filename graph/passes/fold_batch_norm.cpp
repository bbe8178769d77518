#include <algorithm>
#include <cmath>
#include <functional>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// Rewrites conv `cid`'s filters and bias per output channel o: W[o] *= a[o] (filters kept as
// they are when a is empty), b[o] = bias(o, the old b[o] or 0), in new tensors (initializers
// may be shared with other plans of the model).
void scale_conv_channels(Graph& g, NodeId cid, const std::vector<float>& a, const std::function<float(int64_t, float)>& bias,
                         const std::string& weight_suffix, const std::string& bias_name) {
  const Node& conv = g.node(cid);
  const Value& wv = g.value(conv.inputs[1]);
  const int64_t m = wv.shape[0], per = wv.constant.numel() / m;
  Tensor b(DType::Float32, {m});
  const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] != kNoValue;
  const float* b0 = has_bias ? g.value(conv.inputs[2]).constant.data<float>() : nullptr;
  for (int64_t oc = 0; oc < m; ++oc) b.data<float>()[oc] = bias(oc, b0 ? b0[oc] : 0.f);
  ValueId wid = kNoValue;
  if (!a.empty()) {
    Tensor w(DType::Float32, wv.shape);
    const float* w0 = wv.constant.data<float>();
    for (int64_t oc = 0; oc < m; ++oc)
      for (int64_t i = 0; i < per; ++i) w.data<float>()[oc * per + i] = w0[oc * per + i] * a[static_cast<size_t>(oc)];
    Value wn = wv;
    wn.name = wv.name + weight_suffix;
    wn.constant = w;
    wn.consumers.clear();
    wid = g.add_value(std::move(wn));
  }
  const ValueId bid = add_constant(g, bias_name, b);
  Node& c = g.node(cid);
  if (wid != kNoValue) set_input(c, 1, wid);
  set_input(c, 2, bid);
}

// A BatchNormalization of a Linear's [N, F] output (BatchNorm1d in an MLP head, as network
// slimming trains them) folds into the Gemm: output feature f's weights (row f of B with
// transB, else column f) times a[f], its bias (c[f] - mean[f]) * a[f] + beta[f]. Its dead
// features are then zero weights with a zero bias, which prune_channels removes as it does a
// conv's. False (nothing changed) where the Gemm is not in that form.
bool fold_into_gemm(Graph& g, NodeId bn_id, NodeId gid) {
  const Node& bn = g.node(bn_id);
  const Node& gemm = g.node(gid);
  const auto& p = gemm.p<GemmParams>();
  if (p.alpha != 1.f || p.beta != 1.f || p.trans_a || p.activation.kind != Activation::None || gemm.inputs.size() < 2)
    return false;
  const Value& y = g.value(gemm.outputs[0]);
  const Value& wv = g.value(gemm.inputs[1]);
  if (!y.shape_known || y.shape.size() != 2 || g.value(bn.inputs[0]).shape != y.shape || !wv.is_constant() ||
      wv.dtype != DType::Float32 || wv.shape.size() != 2)
    return false;
  const int64_t f = y.shape[1], k = p.trans_b ? wv.shape[1] : wv.shape[0];
  if ((p.trans_b ? wv.shape[0] : wv.shape[1]) != f) return false;
  const ValueId cid = gemm.inputs.size() > 2 ? gemm.inputs[2] : kNoValue;
  const float* c = nullptr;
  if (cid != kNoValue) {
    const Value& cv = g.value(cid);
    if (!cv.is_constant() || cv.dtype != DType::Float32 || cv.constant.numel() != f ||
        !(cv.shape == Shape{f} || cv.shape == Shape{1, f}))
      return false;
    c = cv.constant.data<float>();
  }
  for (size_t i = 1; i <= 4; ++i)
    if (g.value(bn.inputs[i]).constant.numel() != f) return false;
  const float eps = bn.p<BatchNormParams>().epsilon;
  const float* scale = g.value(bn.inputs[1]).constant.data<float>();
  const float* beta = g.value(bn.inputs[2]).constant.data<float>();
  const float* mean = g.value(bn.inputs[3]).constant.data<float>();
  const float* var = g.value(bn.inputs[4]).constant.data<float>();
  Tensor w(DType::Float32, wv.shape), b(DType::Float32, {f});
  const float* w0 = wv.constant.data<float>();
  for (int64_t o = 0; o < f; ++o) {
    const float a = scale[o] / std::sqrt(var[o] + eps);
    b.data<float>()[o] = ((c ? c[o] : 0.f) - mean[o]) * a + beta[o];
    for (int64_t i = 0; i < k; ++i) {
      const int64_t at = p.trans_b ? o * k + i : i * f + o;
      w.data<float>()[at] = w0[at] * a;
    }
  }
  const std::string name = bn.name;
  const ValueId wid = add_constant(g, wv.name + "__bnfolded", std::move(w));
  const ValueId bid = add_constant(g, name + "__folded_bias", std::move(b));
  Node& gm = g.node(gid);
  set_input(gm, 1, wid);
  set_input(gm, 2, bid);
  gm.outputs[0] = g.node(bn_id).outputs[0];  // the Gemm now produces the BN's output
  g.node(bn_id).dead = true;
  return true;
}

}  // namespace

int fold_batch_norm(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) {
    Node& bn = g.node(id);
    if (bn.op != OpType::BatchNormalization) continue;
    bool params_const = true;
    for (size_t i = 1; i <= 4; ++i) params_const = params_const && g.value(bn.inputs[i]).is_constant();
    if (!params_const || !single_use(g, bn.inputs[0])) continue;
    if (const NodeId gid = producer_of_type(g, bn.inputs[0], OpType::Gemm); gid >= 0) {
      if (fold_into_gemm(g, id, gid)) {
        ++folded;
        g.rebuild_links();
      }
      continue;
    }
    NodeId cid = producer_of_type(g, bn.inputs[0], OpType::Conv);
    if (cid < 0) continue;
    Node& conv = g.node(cid);
    const auto& cp = conv.p<ConvParams>();
    if (cp.activation.kind != Activation::None || cp.fused_sum) continue;
    const Value& wv = g.value(conv.inputs[1]);
    if (!wv.is_constant() || (conv.inputs.size() > 2 && conv.inputs[2] != kNoValue && !g.value(conv.inputs[2]).is_constant()))
      continue;
    const float eps = bn.p<BatchNormParams>().epsilon;
    const int64_t m = wv.shape[0];
    const float* scale = g.value(bn.inputs[1]).constant.data<float>();
    const float* beta = g.value(bn.inputs[2]).constant.data<float>();
    const float* mean = g.value(bn.inputs[3]).constant.data<float>();
    const float* var = g.value(bn.inputs[4]).constant.data<float>();
    std::vector<float> a(static_cast<size_t>(m));
    for (int64_t oc = 0; oc < m; ++oc) a[static_cast<size_t>(oc)] = scale[oc] / std::sqrt(var[oc] + eps);
    scale_conv_channels(g, cid, a, [&](int64_t oc, float b0) { return (b0 - mean[oc]) * a[static_cast<size_t>(oc)] + beta[oc]; },
                        "__bnfolded", g.node(id).name + "__folded_bias");
    Node& c = g.node(cid);
    ValueId bn_out = g.node(id).outputs[0];
    c.outputs[0] = bn_out;  // the conv now produces the BN's output directly
    g.node(id).dead = true;
    ++folded;
    g.rebuild_links();
  }
  g.rebuild_links();
  return folded;
}


// A constant per-channel Mul behind a Conv, directly or through a Relu when no scale is
// negative (relu(y) * s == relu(y * s) for s >= 0), scales the conv's filters and bias
// instead: W[o] *= s[o], b[o] *= s[o]. A pruning mask multiplied into the activations (the
// way mask-based pruning tools keep shapes) thus leaves all-zero filters with a zero bias,
// which prune_channels removes like any other dead channel.
namespace {

// Conv cid's c output channels can take a per-channel rewrite of its filters and bias: no
// epilogue yet, constant weights with c filters, a constant bias if any.
bool rewritable_per_channel(const Graph& g, NodeId cid, int64_t c) {
  const Node& conv = g.node(cid);
  const auto& cp = conv.p<ConvParams>();
  const Value& wv = g.value(conv.inputs[1]);
  const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] != kNoValue;
  // (A shift fused into its input read moves input channels: scaling output channels is as for any conv.)
  return cp.activation.kind == Activation::None && !cp.fused_sum && wv.is_constant() &&
         !wv.shape.empty() && wv.shape[0] == c && (!has_bias || g.value(conv.inputs[2]).is_constant());
}

// A constant Add (or a Sub of a constant) behind a Conv with no epilogue yet, per channel
// ([C, 1, 1] or [1, C, 1, 1]) or one value, added to the conv's bias instead. With the Mul
// above, a BatchNorm lowered to x * scale + shift after a conv without bias (torchvision's
// FrozenBatchNorm2d, other exporters' BN lowerings) folds whole, so its dead channels are
// zero filters with a zero bias, which prune_channels removes.
int fold_channel_shifts(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) {
    const Node& add = g.node(id);
    if (add.dead || (add.op != OpType::Add && add.op != OpType::Sub) || add.inputs.size() != 2) continue;
    const int ci = g.value(add.inputs[1]).is_constant()                                 ? 1
                   : add.op == OpType::Add && g.value(add.inputs[0]).is_constant() ? 0
                                                                                     : -1;
    if (ci < 0) continue;
    const ValueId y = add.inputs[static_cast<size_t>(1 - ci)];
    const Value &yv = g.value(y), &bv = g.value(add.inputs[static_cast<size_t>(ci)]);
    if (yv.is_constant() || yv.dtype != DType::Float32 || bv.dtype != DType::Float32 || yv.shape.size() != 4) continue;
    const int64_t c = yv.shape[1];
    const bool one = bv.constant.numel() == 1 && bv.shape.size() <= 4;
    if (!one && bv.shape != Shape{c, 1, 1} && bv.shape != Shape{1, c, 1, 1}) continue;
    if (g.value(add.outputs[0]).shape != yv.shape || !single_use(g, y)) continue;
    const NodeId cid = producer_of_type(g, y, OpType::Conv);
    if (cid < 0 || !rewritable_per_channel(g, cid, c)) continue;
    const Node& conv = g.node(cid);
    const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] != kNoValue;
    const float* b0 = has_bias ? g.value(conv.inputs[2]).constant.data<float>() : nullptr;
    const float sign = add.op == OpType::Sub ? -1.f : 1.f;
    std::vector<float> shift(static_cast<size_t>(c));
    bool finite = true;
    for (int64_t o = 0; o < c; ++o) {
      shift[static_cast<size_t>(o)] = sign * bv.constant.data<float>()[one ? 0 : o];
      finite = finite && std::isfinite((b0 ? b0[o] : 0.f) + shift[static_cast<size_t>(o)]);
    }
    if (!finite) continue;
    const ValueId out = add.outputs[0];
    scale_conv_channels(g, cid, {}, [&](int64_t o, float b) { return b + shift[static_cast<size_t>(o)]; }, "",
                        add.name + "__folded_bias");
    g.node(cid).outputs[0] = out;  // the conv now produces the Add's output
    g.node(id).dead = true;
    ++folded;
    g.rebuild_links();
  }
  g.rebuild_links();
  return folded;
}

// The per-channel values of a constant v that broadcasts onto [N, c, H, W] (a float scale or a
// bool mask, as floats): v's shape right-aligned against 4 dimensions, 1 or c on the channel
// axis, anything on the others as long as each channel holds one value (a mask expanded to the
// activation's shape, batch included, once the session's shapes are known). Empty when v is not
// such a constant.
std::vector<float> channel_values(const Value& v, int64_t c) {
  const Shape& sh = v.shape;
  if (sh.size() > 4 || (v.dtype != DType::Float32 && v.dtype != DType::Bool)) return {};
  Shape d(4 - sh.size(), 1);
  d.insert(d.end(), sh.begin(), sh.end());
  if (c <= 0 || (d[1] != 1 && d[1] != c)) return {};
  const int64_t per = d[2] * d[3];
  auto at = [&](int64_t i) {
    return v.dtype == DType::Bool ? (v.constant.data<bool>()[i] ? 1.f : 0.f) : v.constant.data<float>()[i];
  };
  auto same = [](float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); };
  std::vector<float> s(static_cast<size_t>(d[1]));
  for (int64_t o = 0; o < d[1]; ++o) {
    const float first = at(o * per);
    for (int64_t n = 0; n < d[0]; ++n)
      for (int64_t i = 0; i < per; ++i)
        if (!same(at((n * d[1] + o) * per + i), first)) return {};
    s[static_cast<size_t>(o)] = first;
  }
  s.resize(static_cast<size_t>(c), s[0]);  // one value for every channel when d[1] is 1
  return s;
}

// The elementwise activation producing x, when A(0) = 0 and its only run-time input is the
// value it activates: Relu, LeakyRelu, PRelu, Clip with min <= 0 <= max (ReLU6, Hardtanh),
// HardSwish, Elu, Tanh, Softsign, Gelu, or SiLU / hardswish written as y * sigmoid(y) / y *
// hardsigmoid(y). -1 otherwise.
// y: the value it activates.
NodeId zero_preserving_activation(const Graph& g, ValueId x, ValueId& y) {
  const NodeId id = g.value(x).producer;
  if (id < 0 || g.node(id).dead) return -1;
  const Node& n = g.node(id);
  if (n.inputs.empty() || n.inputs[0] == kNoValue || g.value(n.inputs[0]).shape != g.value(x).shape) return -1;
  y = n.inputs[0];
  switch (n.op) {
    case OpType::Relu: case OpType::LeakyRelu: case OpType::HardSwish: case OpType::Elu: case OpType::Tanh:
    case OpType::Softsign: case OpType::Gelu:
      return n.inputs.size() == 1 ? id : -1;
    case OpType::PRelu:
      return n.inputs.size() == 2 && g.value(n.inputs[1]).is_constant() ? id : -1;
    case OpType::Clip: {
      float lo = 0.f, hi = 0.f;
      return clip_bounds(g, n, lo, hi) && lo <= 0.f && hi >= 0.f ? id : -1;
    }
    case OpType::Mul: {  // y * sigmoid(y) or y * hardsigmoid(y) (hardswish below opset 14), either order
      if (n.inputs.size() != 2) return -1;
      for (size_t side = 0; side < 2; ++side) {
        NodeId sig = producer_of_type(g, n.inputs[side], OpType::Sigmoid);
        if (sig < 0) sig = producer_of_type(g, n.inputs[side], OpType::HardSigmoid);
        if (sig >= 0 && g.node(sig).inputs[0] == n.inputs[1 - side] && single_use(g, n.inputs[side])) {
          y = n.inputs[1 - side];
          return id;
        }
      }
      return -1;
    }
    default: return -1;
  }
}

int fold_channel_muls(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) {
    const Node& mul = g.node(id);
    if (mul.dead) continue;
    // The per-channel scale s and the activation x it multiplies: Mul(x, s), or a constant
    // channel mask applied with Where: Where(mask, x, 0) is x * mask, Where(mask, 0, x) is
    // x * !mask (torch.where(mask, x, 0)).
    // The operands may also be full-size: a mask expanded over the map, zeros_like(x) (as
    // torch.where(mask > 0, x, torch.zeros_like(x)) exports), as long as each channel's values
    // are one value.
    std::vector<float> s;
    ValueId x = kNoValue;
    int64_t c = 0;
    auto per_channel = [&](const Value& v, const Value& of) {
      if (of.shape.size() != 4 || !v.is_constant()) return false;
      c = of.shape[1];
      s = channel_values(v, c);
      return !s.empty();
    };
    if (mul.op == OpType::Mul && mul.inputs.size() == 2) {
      const int ci = g.value(mul.inputs[1]).is_constant() ? 1 : g.value(mul.inputs[0]).is_constant() ? 0 : -1;
      if (ci < 0) continue;
      const Value& sv = g.value(mul.inputs[static_cast<size_t>(ci)]);
      x = mul.inputs[static_cast<size_t>(1 - ci)];
      if (sv.dtype != DType::Float32 || !per_channel(sv, g.value(x))) continue;
    } else if (mul.op == OpType::Div && mul.inputs.size() == 2 && g.value(mul.inputs[1]).is_constant()) {
      // x / d (a BatchNorm lowered as (x - mean) / sqrt(var + eps) * gamma + beta): x * (1 / d),
      // within a rounding of the division, as folding any BatchNorm is.
      const Value& dv = g.value(mul.inputs[1]);
      x = mul.inputs[0];
      if (dv.dtype != DType::Float32 || !per_channel(dv, g.value(x))) continue;
      bool nonzero = true;
      for (float& e : s) nonzero = nonzero && e != 0.f, e = 1.f / e;
      if (!nonzero) continue;
    } else if (mul.op == OpType::Where && mul.inputs.size() == 3) {
      const Value& mv = g.value(mul.inputs[0]);
      auto zero = [&](ValueId v) {
        const Value& z = g.value(v);
        if (!z.is_constant() || z.dtype != DType::Float32) return false;
        const float* d = z.constant.data<float>();
        return std::all_of(d, d + z.constant.numel(), [](float e) { return e == 0.f; });
      };
      const int xi = zero(mul.inputs[2]) ? 1 : zero(mul.inputs[1]) ? 2 : -1;
      if (xi < 0 || mv.dtype != DType::Bool) continue;
      x = mul.inputs[static_cast<size_t>(xi)];
      if (g.value(x).is_constant() || !per_channel(mv, g.value(x))) continue;
      for (float& e : s) e = (e != 0.f) == (xi == 1) ? 1.f : 0.f;
    } else {
      continue;
    }
    const Value& xv = g.value(x);
    if (xv.dtype != DType::Float32 || g.value(mul.outputs[0]).shape != xv.shape || !single_use(g, x)) continue;
    // Between the conv and the Mul: nothing, a Relu (relu(y) * s = relu(y * s) for s >= 0), or,
    // for a 0/1 mask (MobileNet's masks after ReLU6, hardswish, SiLU...), an activation A with
    // A(0) = 0: A(y) * m = A(y * m).
    // A chain of them (relu6 exported as Relu, then Clip): the last one (making x) is `act`.
    // Every value on the chain is read by the next step alone (twice by y * sigmoid(y)) and is
    // no graph output: the conv's rescaled channels reach nothing else.
    ValueId y = x;
    NodeId act = -1;
    int acts = 0;
    bool chain_ok = true;
    for (ValueId in = kNoValue; acts < 8 && chain_ok; ++acts) {
      const NodeId a = zero_preserving_activation(g, y, in);
      if (a < 0) break;
      chain_ok = !g.value(in).is_output && g.value(in).consumers.size() == (g.node(a).op == OpType::Mul ? 2u : 1u);
      if (act < 0) act = a;
      y = in;
    }
    if (!chain_ok) continue;
    const bool relu = acts == 1 && g.node(act).op == OpType::Relu;
    bool ok = true;
    for (int64_t o = 0; o < c; ++o)
      ok = ok && std::isfinite(s[o]) && (act < 0 || (relu ? s[o] >= 0.f : s[o] == 0.f || s[o] == 1.f));
    const NodeId cid = producer_of_type(g, y, OpType::Conv);
    if (!ok || cid < 0 || g.value(y).is_output || !rewritable_per_channel(g, cid, c)) continue;
    const std::vector<float> a = s;
    const ValueId out = g.node(id).outputs[0];
    scale_conv_channels(g, cid, a, [&](int64_t o, float b0) { return b0 * s[o]; }, "__scaled",
                        g.node(id).name + "__folded_bias");
    g.node(act >= 0 ? act : cid).outputs[0] = out;  // the chain now produces the Mul's output
    g.node(id).dead = true;
    ++folded;
    g.rebuild_links();
  }
  g.rebuild_links();
  return folded;
}

}  // namespace

int fold_channel_scales(Graph& g) {
  // In turns until neither folds: x * s + b folds the Mul, then the Add; (x + b) * s the other way.
  int folded = 0;
  for (;;) {
    const int n = fold_channel_muls(g) + fold_channel_shifts(g);
    if (n == 0) return folded;
    folded += n;
  }
}

}  // namespace sluice::graph::passes
