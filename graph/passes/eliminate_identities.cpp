#include <algorithm>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// A node whose output is its input, element for element: Identity and Dropout, and the no-op
// forms PyTorch's dynamo exporter writes (x[:, :] as Slices over the whole extent, a Reshape or
// Expand to the same shape, a Cast to the same dtype; TorchScript's zero Pad before an
// avg_pool2d). A Slice over the whole extent with a step of -1 reverses, so every step must be
// 1; a Pad that keeps the shape may still move the data (-1 before, +1 after), so every amount
// must be 0.
bool is_identity(const Graph& g, const Node& n) {
  if (n.op == OpType::Identity || n.op == OpType::Dropout) return true;
  if (n.inputs.empty() || n.inputs[0] == kNoValue || n.outputs.size() != 1) return false;
  const Value& x = g.value(n.inputs[0]);
  const Value& y = g.value(n.outputs[0]);
  if (!x.shape_known || !y.shape_known || x.shape != y.shape || x.dtype != y.dtype) return false;
  switch (n.op) {
    case OpType::Cast: case OpType::CastLike: case OpType::Reshape: case OpType::Expand: return true;
    case OpType::Slice: {
      if (n.inputs.size() <= 4 || n.inputs[4] == kNoValue) return true;
      const auto steps = const_ints(g, n, 4);
      return !steps.empty() && std::all_of(steps.begin(), steps.end(), [](int64_t s) { return s == 1; });
    }
    case OpType::Pad: {
      const auto& pads = n.p<PadParams>().pads;  // resolved by shape inference
      return !pads.empty() && std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; });
    }
    default: return false;
  }
}

}  // namespace

int eliminate_identities(Graph& g) {
  g.rebuild_links();
  int removed = 0;
  for (NodeId id : g.topological_order()) {
    Node& n = g.node(id);
    if (!is_identity(g, n)) continue;
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
