// Plain convolutions that read a gated conv's output (design.md §4: "a consumer that understands
// compact input reads it directly"). FBS code often gates only some convs: the first conv of
// each residual block, every conv but the last, a gated body before a plain head. The conv
// after a gate then reads C channels of which only the k the gate kept (and those whose
// suppressed value is not zero) can be non-zero, and runs all C of them. Rewritten as a
// SluiceGatedConv with GateForm::All (no gate of its own, every output kept), it reads the
// producer's per-sample channel activity at run time and computes from the active input
// channels only: exactly the same sums, fewer of them.
#include <algorithm>

#include "graph/passes/passes.h"
#include "ops/sparse/sparse.h"

namespace sluice::graph::passes {

namespace {

// The gated conv whose channel activity reaches value v (through ops that keep a zero channel
// zero), if any, and if its gate can leave some channel exactly zero.
const Node* gating_producer(const Graph& g, ValueId v) {
  const Node* prod = g.value(v).producer >= 0 ? &g.node(g.value(v).producer) : nullptr;
  while (prod && prod->op != OpType::SluiceGatedConv && keeps_zero_channels(g, *prod))
    prod = g.value(prod->inputs[0]).producer >= 0 ? &g.node(g.value(prod->inputs[0]).producer) : nullptr;
  if (!prod || prod->op != OpType::SluiceGatedConv) return nullptr;
  const auto& gp = prod->p<GatedConvParams>();
  // Every channel active: no gate of its own, the gate off, a residual sum over every
  // channel, or k = C_out (density 1; but g > its C-th largest drops the smallest g).
  const int64_t m = g.value(prod->outputs[0]).shape[1];
  if (gp.form == GateForm::All || !gp.gating || gp.fused_sum || (gp.k >= m && gp.form != GateForm::Threshold))
    return nullptr;
  // A suppressed channel is act(beta_c) with an unmasked beta, else act(0): some must be 0.
  const float* beta = prod->inputs.size() > 5 && prod->inputs[5] != kNoValue
                          ? g.value(prod->inputs[5]).constant.data<float>()
                          : nullptr;
  for (int64_t o = 0; o < m; ++o) {
    const float pre = gp.beta == BetaMode::Unmasked && beta ? beta[o] : 0.f;
    if (apply_activation(gp.activation, pre) == 0.f) return prod;
  }
  return nullptr;
}

bool rewritable(const Graph& g, const Node& n, bool sparse_kernel) {
  if (n.dead || n.op != OpType::Conv || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const auto& cp = n.p<ConvParams>();
  if (cp.group != 1 || !cp.pre_shift.empty() || cp.kernel_shape.size() != 2) return false;
  const Value& x = g.value(n.inputs[0]);
  const Value& w = g.value(n.inputs[1]);
  if (!x.shape_known || x.shape.size() != 4 || x.dtype != DType::Float32 || !w.is_constant() ||
      w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[1] != x.shape[1])
    return false;
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
    if (!rewritable(g, n, sparse_kernel) || !gating_producer(g, n.inputs[0])) continue;
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
