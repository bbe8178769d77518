#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// Whether v is a constant float vector of n entries, as [n] or [1, n]: a bias Gemm broadcasts
// over the rows exactly as Add does.
bool bias_vector(const Value& v, int64_t n) {
  if (!v.is_constant() || v.dtype != DType::Float32) return false;
  return (v.shape.size() == 1 && v.shape[0] == n) || (v.shape.size() == 2 && v.shape[0] == 1 && v.shape[1] == n);
}

}  // namespace

int linear_as_gemm(Graph& g) {
  g.rebuild_links();
  int rewritten = 0;
  for (NodeId id : g.topological_order()) {
    Node& mm = g.node(id);
    if (mm.dead || mm.op != OpType::MatMul || mm.inputs.size() != 2) continue;
    const Value& a = g.value(mm.inputs[0]);  // (references into g.values: not used past add_constant)
    const Value& b = g.value(mm.inputs[1]);
    if (a.dtype != DType::Float32 || !a.shape_known || a.shape.size() != 2 || a.is_constant()) continue;
    if (!b.is_constant() || b.dtype != DType::Float32 || b.shape.size() != 2 || b.shape[0] != a.shape[1]) continue;
    const int64_t n = b.shape[1];
    // A constant bias added to the product, the MatMul's only reader, joins it as Gemm's C.
    const ValueId out = mm.outputs[0];
    ValueId bias = kNoValue;
    NodeId add_id = -1;
    if (single_use(g, out)) {
      const NodeId r = g.value(out).consumers[0];
      const Node& add = g.node(r);
      if (add.op == OpType::Add && add.inputs.size() == 2) {
        const ValueId other = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
        if (other != out && bias_vector(g.value(other), n)) bias = other, add_id = r;
      }
    }
    mm.op = OpType::Gemm;
    mm.params = GemmParams{};
    if (add_id >= 0) {
      // As [N]: the form static pruning's Gemm readers rewrite ([1, N] is the same row).
      if (g.value(bias).shape.size() == 2)
        bias = add_constant(g, g.value(bias).name + "_row", g.value(bias).constant.reshaped({n}));
      Node& add = g.node(add_id);
      mm.inputs.push_back(bias);
      mm.outputs[0] = add.outputs[0];
      add.dead = true;
    }
    ++rewritten;
    g.rebuild_links();
  }
  return rewritten;
}

}  // namespace sluice::graph::passes
