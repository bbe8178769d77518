// Plain convolutions that read a gated conv's output (design.md §4: "a consumer that understands
// compact input reads it directly"). FBS code often gates only some convs: the first conv of
// each residual block, every conv but the last, a gated body before a plain head. The conv
// after a gate then reads C channels of which only the k the gate kept (and those whose
// suppressed value is not zero) can be non-zero, and runs all C of them. Rewritten as a
// SluiceGatedConv with GateForm::All (no gate of its own, every output kept), it reads the
// producer's per-sample channel activity at run time and computes from the active input
// channels only: exactly the same sums, fewer of them.
#include "graph/passes/passes.h"
#include "ops/sparse/sparse.h"

namespace sluice::graph::passes {

namespace {

bool rewritable(const Graph& g, const Node& n, bool sparse_kernel) {
  if (n.dead || n.op != OpType::Conv || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const auto& cp = n.p<ConvParams>();
  if (!cp.pre_shift.empty() || cp.kernel_shape.size() != 2) return false;
  const Value& x = g.value(n.inputs[0]);
  const Value& w = g.value(n.inputs[1]);
  if (!x.shape_known || x.shape.size() != 4 || x.dtype != DType::Float32 || !w.is_constant() ||
      w.dtype != DType::Float32 || w.shape.size() != 4)
    return false;
  // Group 1, or depthwise (output channel c reads input channel c alone: a zero input channel
  // leaves its output the bias, which is not computed either).
  const bool depthwise = cp.group == x.shape[1] && w.shape[0] == x.shape[1] && w.shape[1] == 1 && cp.group > 1;
  if (!(cp.group == 1 && w.shape[1] == x.shape[1]) && !depthwise) return false;
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && !g.value(n.inputs[2]).is_constant()) return false;
  for (size_t i = 1; i < n.inputs.size(); ++i)
    if (n.inputs[i] == n.inputs[0]) return false;
  // Weights sparse enough for the sparse kernel keep it (where it may run): it skips their
  // zeros instead.
  return !sparse_kernel || ops::zero_fraction(w.constant) < ops::kMinSparsity;
}

}  // namespace

int read_gated_inputs(Graph& g, bool sparse_kernel) {
  g.rebuild_links();
  int rewritten = 0;
  for (NodeId id : g.topological_order()) {
    Node& n = g.node(id);
    if (!rewritable(g, n, sparse_kernel) || !gated_activity_source(g, n.inputs[0])) continue;
    const ConvParams cp = n.p<ConvParams>();
    GatedConvParams gp;
    gp.conv = cp;
    gp.conv.activation = {};
    gp.conv.fused_sum = false;
    gp.form = GateForm::All;
    gp.k = gp.k_exported = g.value(n.inputs[1]).shape[0];
    gp.activation = cp.activation;
    gp.fused_sum = cp.fused_sum;
    std::vector<ValueId> in{n.inputs[0], n.inputs[1], n.inputs.size() > 2 ? n.inputs[2] : kNoValue,
                            kNoValue, kNoValue, kNoValue};
    if (cp.fused_sum) in.push_back(n.inputs[3]);
    n.inputs = std::move(in);
    n.op = OpType::SluiceGatedConv;
    n.params = gp;
    ++rewritten;
  }
  g.rebuild_links();
  return rewritten;
}

}  // namespace sluice::graph::passes
