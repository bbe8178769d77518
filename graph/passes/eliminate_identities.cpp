#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

int eliminate_identities(Graph& g) {
  g.rebuild_links();
  int removed = 0;
  for (NodeId id : g.topological_order()) {
    Node& n = g.node(id);
    if (n.op != OpType::Identity && n.op != OpType::Dropout) continue;
    ValueId in = n.inputs.at(0), out = n.outputs.at(0);
    // A graph output must keep its name: only rewire when the output is internal.
    if (g.value(out).is_output) continue;
    if (n.op == OpType::Dropout && n.outputs.size() > 1 && n.outputs[1] != kNoValue &&
        !g.value(n.outputs[1]).consumers.empty())
      continue;  // the mask is used: keep the node, its kernel produces it
    replace_uses(g, out, in);
    n.dead = true;
    ++removed;
  }
  g.rebuild_links();
  return removed;
}

int remove_dead_nodes(Graph& g) {
  g.rebuild_links();
  std::vector<bool> needed(g.values.size(), false);
  for (ValueId o : g.outputs) needed[static_cast<size_t>(o)] = true;
  auto order = g.topological_order();
  int removed = 0;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node& n = g.node(*it);
    bool used = false;
    for (ValueId o : n.outputs) used = used || (o != kNoValue && needed[static_cast<size_t>(o)]);
    if (!used) {
      n.dead = true;
      ++removed;
      continue;
    }
    for (ValueId in : n.inputs)
      if (in != kNoValue) needed[static_cast<size_t>(in)] = true;
  }
  g.rebuild_links();
  return removed;
}

}  // namespace sluice::graph::passes
