#include <cmath>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

int fold_batch_norm(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) {
    Node& bn = g.node(id);
    if (bn.op != OpType::BatchNormalization) continue;
    bool params_const = true;
    for (size_t i = 1; i <= 4; ++i) params_const = params_const && g.value(bn.inputs[i]).is_constant();
    NodeId cid = producer_of_type(g, bn.inputs[0], OpType::Conv);
    if (!params_const || cid < 0 || !single_use(g, bn.inputs[0])) continue;
    Node& conv = g.node(cid);
    const auto& cp = conv.p<ConvParams>();
    if (cp.activation.kind != Activation::None || cp.fused_sum) continue;
    const Value& wv = g.value(conv.inputs[1]);
    if (!wv.is_constant() || (conv.inputs.size() > 2 && conv.inputs[2] != kNoValue && !g.value(conv.inputs[2]).is_constant()))
      continue;
    const float eps = bn.p<BatchNormParams>().epsilon;
    const int64_t m = wv.shape[0], per = wv.constant.numel() / m;
    const float* scale = g.value(bn.inputs[1]).constant.data<float>();
    const float* beta = g.value(bn.inputs[2]).constant.data<float>();
    const float* mean = g.value(bn.inputs[3]).constant.data<float>();
    const float* var = g.value(bn.inputs[4]).constant.data<float>();
    // New tensors: initializers may be shared with other plans of the model.
    Tensor w(DType::Float32, wv.shape), b(DType::Float32, {m});
    const float* w0 = wv.constant.data<float>();
    const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] != kNoValue;
    const float* b0 = has_bias ? g.value(conv.inputs[2]).constant.data<float>() : nullptr;
    for (int64_t oc = 0; oc < m; ++oc) {
      const float a = scale[oc] / std::sqrt(var[oc] + eps);
      for (int64_t i = 0; i < per; ++i) w.data<float>()[oc * per + i] = w0[oc * per + i] * a;
      b.data<float>()[oc] = ((b0 ? b0[oc] : 0.f) - mean[oc]) * a + beta[oc];
    }
    Value wn = wv;
    wn.name = wv.name + "__bnfolded";
    wn.constant = w;
    wn.consumers.clear();
    Value bnv;
    bnv.name = g.node(id).name + "__folded_bias";
    bnv.dtype = DType::Float32;
    bnv.shape = {m};
    bnv.shape_known = true;
    bnv.constant = b;
    ValueId wid = g.add_value(std::move(wn)), bid = g.add_value(std::move(bnv));
    Node& c = g.node(cid);  // re-fetch: add_value may not move nodes, but keep it obvious
    c.inputs.resize(3);
    c.inputs[1] = wid;
    c.inputs[2] = bid;
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
int fold_channel_scales(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) {
    const Node& mul = g.node(id);
    if (mul.dead || mul.op != OpType::Mul || mul.inputs.size() != 2) continue;
    const int ci = g.value(mul.inputs[1]).is_constant() ? 1 : g.value(mul.inputs[0]).is_constant() ? 0 : -1;
    if (ci < 0) continue;
    const Value& sv = g.value(mul.inputs[static_cast<size_t>(ci)]);
    const ValueId x = mul.inputs[static_cast<size_t>(1 - ci)];
    const Value& xv = g.value(x);
    if (xv.shape.size() != 4 || xv.dtype != DType::Float32 || sv.dtype != DType::Float32 ||
        g.value(mul.outputs[0]).shape != xv.shape)
      continue;
    const int64_t c = xv.shape[1];
    const Shape& ss = sv.shape;
    const bool per_channel = (ss == Shape{c, 1, 1}) || (ss == Shape{1, c, 1, 1});
    if (!per_channel) continue;
    const float* s = sv.constant.data<float>();
    const NodeId relu = producer_of_type(g, x, OpType::Relu);
    const ValueId y = relu >= 0 ? g.node(relu).inputs[0] : x;
    if (!single_use(g, x) || (relu >= 0 && !single_use(g, y))) continue;
    bool ok = true;
    for (int64_t o = 0; o < c; ++o) ok = ok && std::isfinite(s[o]) && (relu < 0 || s[o] >= 0.f);
    const NodeId cid = producer_of_type(g, y, OpType::Conv);
    if (!ok || cid < 0) continue;
    const Node& conv = g.node(cid);
    const auto& cp = conv.p<ConvParams>();
    const Value& wv = g.value(conv.inputs[1]);
    const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] != kNoValue;
    if (cp.activation.kind != Activation::None || cp.fused_sum || !cp.pre_shift.empty() || !wv.is_constant() ||
        wv.shape.empty() || wv.shape[0] != c || (has_bias && !g.value(conv.inputs[2]).is_constant()))
      continue;
    const int64_t per = wv.constant.numel() / c;
    Tensor w(DType::Float32, wv.shape), b(DType::Float32, {c});
    const float* w0 = wv.constant.data<float>();
    const float* b0 = has_bias ? g.value(conv.inputs[2]).constant.data<float>() : nullptr;
    for (int64_t o = 0; o < c; ++o) {
      for (int64_t i = 0; i < per; ++i) w.data<float>()[o * per + i] = w0[o * per + i] * s[o];
      b.data<float>()[o] = (b0 ? b0[o] : 0.f) * s[o];
    }
    Value wn = wv;
    wn.name = wv.name + "__scaled";
    wn.constant = w;
    wn.consumers.clear();
    Value bn;
    bn.name = mul.name + "__folded_bias";
    bn.dtype = DType::Float32;
    bn.shape = {c};
    bn.shape_known = true;
    bn.constant = b;
    const ValueId wid = g.add_value(std::move(wn)), bid = g.add_value(std::move(bn));
    const ValueId out = g.node(id).outputs[0];
    Node& cv = g.node(cid);
    cv.inputs.resize(3);
    cv.inputs[1] = wid;
    cv.inputs[2] = bid;
    g.node(relu >= 0 ? relu : cid).outputs[0] = out;  // the chain now produces the Mul's output
    g.node(id).dead = true;
    ++folded;
    g.rebuild_links();
  }
  g.rebuild_links();
  return folded;
}

}  // namespace sluice::graph::passes
