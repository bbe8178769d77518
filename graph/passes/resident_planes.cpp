// Resident planes (passes.h: keep_planes_resident). The direct conv kernel works on planar,
// zero-bordered copies of its input and output; between two thin convs that both run on it, the
// NHWC tensor in the middle is only a detour (the producer transposes its planar results into
// it, the reader packs it back). Such values stay planar instead.
//
// A value is kept planar only if everything around it can do without NHWC:
//   - its producer is a conv that may run on the direct kernel (the caller says which) or on
//     another kernel that takes planes (the sparse convs; the caller says which), a max pool
//     whose input is kept planar, or an NHWC max or average pool whose readers are all sparse
//     convs;
//   - each reader is such a conv reading it as its input (a 3x3, stride-1, pad-1
//     conv on the same map reads the planes as they are, others copy rows out of them) or as
//     its fused residual, or a max pool (which writes planes or NHWC) after a conv on the
//     direct kernel;
//   - a conv with a fused residual writes planar output only if the residual is planar (the
//     direct kernel adds no NHWC residual into planes; a planar one into NHWC output, and the
//     sparse convs both);
//   - it is not a graph output.
// Between sparse convs, a value's rows may be wide (below).
// The largest set with these properties: start from every candidate and drop values that break
// a rule until none does.
#include <algorithm>
#include <vector>

#include "graph/passes/passes.h"
#include "ops/conv/planar.h"
#include "ops/kernel.h"

namespace sluice::graph::passes {

namespace {

bool fused_sum(const Node& n) {
  return n.op == OpType::Conv && n.p<ConvParams>().fused_sum && n.inputs.size() > 3 && n.inputs[3] != kNoValue;
}

}  // namespace

int keep_planes_resident(Graph& g, const std::function<bool(NodeId)>& direct,
                         const std::function<bool(NodeId)>& takes_planes) {
  g.rebuild_links();
  // From scratch: what an earlier run kept planar is NHWC again.
  for (Value& v : g.values) {
    if (v.layout == Layout::Planar) v.layout = Layout::NHWC;
    v.wide_rows = false;
  }
  for (Node& n : g.nodes)
    if (n.layout == Layout::Planar) n.layout = Layout::NHWC;
  const size_t nv = g.values.size();
  std::vector<char> conv(g.nodes.size(), 0), takes(g.nodes.size(), 0), pool(g.nodes.size(), 0), npool(g.nodes.size(), 0),
      planar(nv, 0);
  for (NodeId id = 0; id < static_cast<NodeId>(g.nodes.size()); ++id) {
    const Node& n = g.node(id);
    if (n.dead || n.layout != Layout::NHWC) continue;
    takes[id] = n.op == OpType::Conv && !(direct(id) && ops::resident_conv(g, n)) && takes_planes && takes_planes(id);
    conv[id] = n.op == OpType::Conv && ((direct(id) && ops::resident_conv(g, n)) || takes[id]);
    pool[id] = ops::resident_pool(g, n);
    // An NHWC max or average pool, which writes planes for sparse convs (below).
    npool[id] = (n.op == OpType::MaxPool || n.op == OpType::AveragePool) && n.inputs.size() == 1 &&
                std::all_of(n.outputs.begin() + 1, n.outputs.end(), [](ValueId o) { return o == kNoValue; }) &&
                g.value(n.outputs[0]).shape.size() == 4 && g.value(n.outputs[0]).shape_known;
    if (!conv[id] && !pool[id] && !npool[id]) continue;
    const Value& y = g.value(n.outputs[0]);
    if (!y.is_output && !y.is_constant() && y.layout == Layout::NHWC) planar[n.outputs[0]] = 1;
  }
  // (A pool reads planes from the direct kernel only: the NHWC pool, on all channels at once, was
  // faster after a sparse conv of 64 channels, 0.054 against 0.086 ms.)
  auto reads_ok = [&](NodeId c, size_t i, NodeId producer) {
    const Node& n = g.node(c);
    if (conv[c]) return i == 0 || (i == 3 && fused_sum(n));
    return pool[c] && i == 0 && !takes[producer];
  };
  auto from_nhwc_pool = [&](NodeId id) { return npool[id] && !planar[g.node(id).inputs[0]]; };
  for (bool changed = true; changed;) {
    changed = false;
    for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
      if (!planar[v]) continue;
      const Node& p = g.node(g.value(v).producer);
      const NodeId pid = g.value(v).producer;
      // A pool writes planes from planes (the resident pool), or from NHWC for sparse convs alone.
      const bool nhwc_pool = from_nhwc_pool(pid);
      bool ok = !((pool[pid] || npool[pid]) && !planar[p.inputs[0]] && !nhwc_pool) &&
                !(fused_sum(p) && !planar[p.inputs[3]] && !takes[pid]);
      for (NodeId c : g.value(v).consumers)
        for (size_t i = 0; ok && i < g.node(c).inputs.size(); ++i)
          if (g.node(c).inputs[i] == v) ok = reads_ok(c, i, g.value(v).producer) && (!nhwc_pool || takes[c]);
      if (!ok) planar[v] = 0, changed = true;
    }
  }
  // Wide rows (ops::planar::resident(h, w, true)) for a value that only sparse convs write and
  // read, where they pay (wide_rows_pay): the readers with aligned rows take the planes as they
  // are instead of packing them. A conv's planar residual and planar output have the same rows
  // (the one is written where the other is read, in place): where they differ, neither is wide.
  std::vector<char> wide(nv, 0);
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = g.value(v);
    if (!planar[v] || !(takes[val.producer] || from_nhwc_pool(val.producer)) || !ops::planar::wide_rows_pay(val.shape[3]))
      continue;
    wide[v] = std::all_of(val.consumers.begin(), val.consumers.end(), [&](NodeId c) { return takes[c] != 0; });
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (const Node& n : g.nodes) {
      if (n.dead || !fused_sum(n) || !planar[n.inputs[3]] || !planar[n.outputs[0]]) continue;
      if (wide[n.inputs[3]] != wide[n.outputs[0]]) wide[n.inputs[3]] = wide[n.outputs[0]] = 0, changed = true;
    }
  }
  int kept = 0;
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    if (!planar[v]) continue;
    g.value(v).wide_rows = wide[v] != 0;
    g.value(v).layout = Layout::Planar;
    ++kept;
    // A pool runs on the planes it reads (its output planar or not; a planar output needs a
    // planar input, above, or sparse readers alone).
    for (NodeId c : g.value(v).consumers)
      if (pool[c]) g.node(c).layout = Layout::Planar;
  }
  return kept;
}

}  // namespace sluice::graph::passes
