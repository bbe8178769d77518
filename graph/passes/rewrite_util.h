// Helpers shared by the rewrite passes.
#pragma once

#include "graph/graph.h"

namespace sluice::graph::passes {

// True when `v` is consumed by exactly one live node and is not a graph output.
inline bool single_use(const Graph& g, ValueId v) {
  const Value& val = g.value(v);
  return !val.is_output && val.consumers.size() == 1;
}

// Makes every live consumer read `to` instead of `from`.
inline void replace_uses(Graph& g, ValueId from, ValueId to) {
  for (Node& n : g.nodes)
    if (!n.dead)
      for (ValueId& in : n.inputs)
        if (in == from) in = to;
}

// The producer of v if it is a live node of type t, else -1.
inline NodeId producer_of_type(const Graph& g, ValueId v, OpType t) {
  NodeId p = g.value(v).producer;
  return p >= 0 && !g.node(p).dead && g.node(p).op == t ? p : -1;
}

}  // namespace sluice::graph::passes
