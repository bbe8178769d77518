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

// The bounds of Clip node n: its attributes (opset < 11) or its constant scalar inputs 1, 2
// (opset >= 11). False when a bound is given at run time (or is not a float scalar).
inline bool clip_bounds(const Graph& g, const Node& n, float& lo, float& hi) {
  ClipParams cp = n.p<ClipParams>();
  for (size_t i = 1; i <= 2 && i < n.inputs.size(); ++i) {
    if (n.inputs[i] == kNoValue) continue;
    const Value& b = g.value(n.inputs[i]);
    if (!b.is_constant() || b.dtype != DType::Float32 || b.constant.numel() != 1) return false;
    (i == 1 ? cp.min : cp.max) = b.constant.data<float>()[0];
  }
  lo = cp.min, hi = cp.max;
  return true;
}

// Input i of node n as integers when it is a constant int64/int32 tensor (Slice bounds, Pad
// pads), else empty.
inline std::vector<int64_t> const_ints(const Graph& g, const Node& n, size_t i) {
  if (i >= n.inputs.size() || n.inputs[i] == kNoValue) return {};
  const Value& v = g.value(n.inputs[i]);
  if (!v.is_constant()) return {};
  std::vector<int64_t> r;
  const Tensor& t = v.constant;
  for (int64_t k = 0; k < t.numel(); ++k)
    r.push_back(t.dtype() == DType::Int64 ? t.data<int64_t>()[k] : t.dtype() == DType::Int32 ? t.data<int32_t>()[k] : 0);
  return r;
}

// A new constant value holding `t` (its dtype and shape), named `name`.
inline ValueId add_constant(Graph& g, std::string name, Tensor t) {
  Value v;
  v.name = std::move(name);
  v.dtype = t.dtype();
  v.shape = t.shape();
  v.shape_known = true;
  v.constant = std::move(t);
  return g.add_value(std::move(v));
}

// Sets input i of node n to v, growing its input list (absent inputs between) as needed.
inline void set_input(Node& n, size_t i, ValueId v) {
  if (n.inputs.size() <= i) n.inputs.resize(i + 1, kNoValue);
  n.inputs[i] = v;
}

// The producer of v if it is a live node of type t, else -1.
inline NodeId producer_of_type(const Graph& g, ValueId v, OpType t) {
  NodeId p = g.value(v).producer;
  return p >= 0 && !g.node(p).dead && g.node(p).op == t ? p : -1;
}

}  // namespace sluice::graph::passes
