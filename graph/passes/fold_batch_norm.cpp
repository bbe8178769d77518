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

}  // namespace sluice::graph::passes
