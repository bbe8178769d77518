// 1-D convolutions, transposed ones and pools (Conv1d, ConvTranspose1d, MaxPool1d, AvgPool1d:
// [N, C, L] activations) run as 2-D
// ones on [N, C, 1, L], so that every kernel and pass written for images takes them.
//
// lift_1d (before shape inference) rewrites each such node to its 2-D form between an Unsqueeze
// and a Squeeze of axis 2. sink_squeezes (once shapes are known) then moves each Squeeze down
// past the ops that work the same on [N, C, 1, L] (elementwise ops, BatchNormalization, global
// pools, channel Concat, Pad, Slice, reductions, Flatten) until it meets the next Unsqueeze and both vanish: a
// Conv1d -> BN -> ReLU -> MaxPool1d -> Conv1d stack becomes the 2-D stack, which then folds,
// fuses and prunes like one exported from Conv2d.
#include <algorithm>
#include <map>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"
#include "ops/util.h"

namespace sluice::graph::passes {

namespace {

constexpr int64_t kAxis = 2;  // the inserted height axis

ValueId add_like(Graph& g, const Value& like, const std::string& suffix, Shape shape) {
  Value v;
  v.name = like.name + suffix;
  v.dtype = like.dtype;
  v.shape = std::move(shape);
  v.shape_known = like.shape_known;
  return g.add_value(std::move(v));
}

// A node Unsqueeze or Squeeze of axis 2 (axes as an attribute), from `in` to `out`.
void add_axis_node(Graph& g, OpType op, const std::string& name, ValueId in, ValueId out) {
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = {in};
  n.outputs = {out};
  n.params = AxesParams{{kAxis}, true};
  g.add_node(std::move(n));
}

// The window attributes of a 1-D node as 2-D ones over [1, L].
template <class P>
void lift_window(P& p) {
  if (!p.kernel_shape.empty()) p.kernel_shape.insert(p.kernel_shape.begin(), 1);  // empty: from the weight
  if (p.strides.size() == 1) p.strides.insert(p.strides.begin(), 1);
  if (p.dilations.size() == 1) p.dilations.insert(p.dilations.begin(), 1);
  if (p.pads.size() == 2) p.pads = {0, p.pads[0], 0, p.pads[1]};
}

// Whether node n is a Squeeze or Unsqueeze of exactly axis 2 between ranks 4 and 3.
bool axis2_node(const Graph& g, const Node& n, OpType op) {
  if (n.dead || n.op != op || n.inputs.empty() || n.outputs.size() != 1) return false;
  std::vector<int64_t> axes;
  if (n.inputs.size() > 1 && n.inputs[1] != kNoValue) {
    axes = const_ints(g, n, 1);
    if (axes.empty()) return false;
  } else {
    const auto& p = n.p<AxesParams>();
    if (!p.has_axes) return false;
    axes = p.axes;
  }
  const Value& in = g.value(n.inputs[0]);
  const auto rank = static_cast<int64_t>(in.shape.size());
  const int64_t rank4 = op == OpType::Squeeze ? rank : rank + 1;
  if (axes.size() != 1 || rank4 != 4 || !in.shape_known) return false;
  const int64_t a = axes[0] < 0 ? axes[0] + 4 : axes[0];
  return a == kAxis && (op == OpType::Unsqueeze || in.shape[kAxis] == 1);
}

// Where a value of [N, C, L] shape-rank 3 sits in 4-D: a constant operand of rank r <= 3
// broadcast against it gets the 1 before its last dim (its dims align from the right).
Shape lifted(Shape s) {
  if (!s.empty()) s.insert(s.end() - 1, 1);
  return s;
}

// Axis a (0..2, or Flatten's split point 0..3) of a 3-D value, on its 4-D form: the inserted
// axis comes before L. (A split right before or after the inserted axis of size 1 gives the
// same two products.)
int64_t axis_in_4d(int64_t a) { return a < kAxis ? a : a + 1; }

bool sinkable(const Node& n) {
  switch (n.op) {
    case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::PRelu:
    case OpType::Clip: case OpType::BatchNormalization: case OpType::InstanceNormalization:
    case OpType::GlobalAveragePool: case OpType::GlobalMaxPool: case OpType::Concat: case OpType::Identity:
    case OpType::Dropout:
      return true;
    default: return is_unary_elementwise(n.op);
  }
}

bool is_reduce(OpType t) {
  switch (t) {
    case OpType::ReduceMean: case OpType::ReduceMax: case OpType::ReduceMin: case OpType::ReduceSum:
    case OpType::ReduceL1: case OpType::ReduceL2: case OpType::ReduceProd: case OpType::ReduceSumSquare:
    case OpType::ReduceLogSum: case OpType::ReduceLogSumExp:
      return true;
    default: return false;
  }
}

// Node r reads x4 (if given) instead of its input 0, and `pads` (if given) as its input 1; its
// 3-D output becomes a 4-D value that a new Squeeze of axis 2 turns back into it.
void sink_through(Graph& g, NodeId r, ValueId x4, ValueId pads) {
  const ValueId o3 = g.node(r).outputs[0];
  const ValueId o4 = add_like(g, g.value(o3), ":2d", lifted(g.value(o3).shape));
  Node& n = g.node(r);
  if (x4 != kNoValue) n.inputs[0] = x4;
  if (pads != kNoValue) {
    n.inputs[1] = pads;
    if (n.inputs.size() > 3) n.inputs.resize(3);  // opset 18's axes: the amounts cover every axis now
    n.p<PadParams>().pads = const_ints(g, n, 1);
  }
  n.outputs[0] = o4;
  add_axis_node(g, OpType::Squeeze, n.name + ":to_1d", o4, o3);
}

}  // namespace

int lift_1d(Graph& g, size_t first) {
  int lifted_nodes = 0;
  const size_t count = g.nodes.size();
  for (size_t i = first; i < count; ++i) {
    Node& n = g.nodes[i];
    if (n.dead || n.inputs.empty() || n.inputs[0] == kNoValue || n.outputs.empty() || n.outputs[0] == kNoValue)
      continue;
    bool conv = false;
    if (n.op == OpType::Conv) {
      // 1-D: kernel_shape [k]; or, without kernel_shape, 1-D strides, dilations or pads
      // (parse_window took the rank from them), or none of them and a 3-D initializer weight.
      // (A computed weight's rank is not known yet: such a conv needs one of the attributes.)
      ConvParams& cp = n.p<ConvParams>();
      const bool weight_1d = n.inputs.size() > 1 && n.inputs[1] != kNoValue && g.value(n.inputs[1]).is_constant() &&
                             g.value(n.inputs[1]).shape.size() == 3;
      if (cp.kernel_shape.empty()) {
        const bool defaults = cp.strides == std::vector<int64_t>{1, 1} && cp.dilations == std::vector<int64_t>{1, 1} &&
                              cp.pads == std::vector<int64_t>{0, 0, 0, 0};
        if (defaults && weight_1d) cp.strides = {1}, cp.dilations = {1}, cp.pads = {0, 0};
        if (cp.strides.size() != 1 || cp.dilations.size() != 1 || cp.pads.size() != 2) continue;
      } else if (cp.kernel_shape.size() != 1) {
        continue;
      }
      conv = true;
    } else if (n.op == OpType::MaxPool || n.op == OpType::AveragePool || n.op == OpType::LpPool) {
      if (n.p<PoolParams>().kernel_shape.size() != 1) continue;
    } else if (n.op == OpType::ConvTranspose) {
      // 1-D: kernel_shape [k], a 3-D initializer weight, or 1-D strides, dilations, pads or
      // output_padding (its attributes are kept as given: inference sizes the missing ones). An
      // input of known rank other than 3 is left to inference, which names what disagrees.
      const ConvTransposeParams& tp = n.p<ConvTransposeParams>();
      const bool weight_1d = n.inputs.size() > 1 && n.inputs[1] != kNoValue && g.value(n.inputs[1]).is_constant() &&
                             g.value(n.inputs[1]).shape.size() == 3;
      const bool attrs_1d = tp.kernel_shape.size() == 1 || tp.strides.size() == 1 || tp.dilations.size() == 1 ||
                            tp.pads.size() == 2 || tp.output_padding.size() == 1;
      const bool attrs_2d = tp.kernel_shape.size() == 2 || tp.strides.size() == 2 || tp.dilations.size() == 2 ||
                            tp.pads.size() == 4 || tp.output_padding.size() == 2;
      const Value& xv = g.value(n.inputs[0]);
      if (!(attrs_1d || (weight_1d && !attrs_2d)) || attrs_2d || n.inputs.size() < 2 ||
          (xv.shape_known && xv.shape.size() != 3))
        continue;
      conv = true;
    } else {
      continue;
    }
    // The attributes say 1-D; an input of known rank other than 3 says otherwise (lifted, a
    // 4-D input became a 5-D one that the message then showed).
    if (const Value& xv = g.value(n.inputs[0]); n.op != OpType::ConvTranspose && xv.shape_known && xv.shape.size() != 3) {
      std::string attrs;
      if (conv) {
        const ConvParams& cp = n.p<ConvParams>();
        attrs = "kernel_shape " + ops::ints_str(cp.kernel_shape) + ", strides " + ops::ints_str(cp.strides) + ", dilations " +
                ops::ints_str(cp.dilations) + ", pads " + ops::ints_str(cp.pads);
      } else {
        const PoolParams& pp = n.p<PoolParams>();
        attrs = "kernel_shape " + ops::ints_str(pp.kernel_shape) + ", strides " + ops::ints_str(pp.strides) + ", pads " +
                ops::ints_str(pp.pads);
      }
      g.fail(static_cast<NodeId>(i), "its attributes (" + attrs + ") are those of a 1-D window, but its input is " +
                                         std::to_string(xv.shape.size()) + "-D " + shape_str(xv.shape) +
                                         ": a 2-D window takes 2 kernel sizes, strides and dilations and 4 pads");
    }
    const std::string name = n.name;
    const ValueId x = n.inputs[0], y = n.outputs[0];
    const ValueId x4 = add_like(g, g.value(x), ":2d", {});
    const ValueId y4 = add_like(g, g.value(y), ":2d", {});
    Node& node = g.nodes[i];  // add_value does not move nodes, add_node does: re-taken below
    if (conv) {
      if (node.op == OpType::ConvTranspose) {
        ConvTransposeParams& tp = node.p<ConvTransposeParams>();
        lift_window(tp);
        if (tp.output_padding.size() == 1) tp.output_padding.insert(tp.output_padding.begin(), 0);
        if (tp.output_shape.size() == 1) tp.output_shape.insert(tp.output_shape.begin(), 1);  // [L] -> [1, L]
        if (tp.output_shape.size() == 3) tp.output_shape.insert(tp.output_shape.begin() + kAxis, 1);  // [N, C, L]
      } else {
        lift_window(node.p<ConvParams>());
      }
      const ValueId w = node.inputs[1];
      const ValueId w4 = add_like(g, g.value(w), ":2d", {});
      g.nodes[i].inputs[1] = w4;
      add_axis_node(g, OpType::Unsqueeze, name + ":weight_2d", w, w4);
    } else {
      lift_window(node.p<PoolParams>());
    }
    g.nodes[i].inputs[0] = x4;
    g.nodes[i].outputs[0] = y4;
    add_axis_node(g, OpType::Unsqueeze, name + ":to_2d", x, x4);
    add_axis_node(g, OpType::Squeeze, name + ":to_1d", y4, y);
    ++lifted_nodes;
  }
  if (lifted_nodes > 0) g.rebuild_links();
  return lifted_nodes;
}

int sink_squeezes(Graph& g) {
  int moved = 0;
  // Several lifted nodes reading the same value each have an Unsqueeze of it: they read the
  // first one's output, so that a gate's pool and its conv read one value whatever the order
  // of the nodes (with a plain Conv1d on the input first, the gate's pool went to that conv's
  // copy and the gate was said to read "a different tensor").
  g.rebuild_links();
  std::map<ValueId, ValueId> first_4d;
  for (NodeId id : g.topological_order()) {
    if (!axis2_node(g, g.node(id), OpType::Unsqueeze)) continue;
    const ValueId x3 = g.node(id).inputs[0], x4 = g.node(id).outputs[0];
    const auto [it, added] = first_4d.emplace(x3, x4);
    if (!added && !g.value(x4).is_output) {
      replace_uses(g, x4, it->second);
      g.node(id).dead = true;
    }
  }
  // A 3-D value that no Squeeze makes (the model's input) and that a lifted node reads through
  // that Unsqueeze: its other readers that the loop below moves Squeezes past read it as a
  // Squeeze of the 4-D form, so that they go 4-D too. A gate's pool over the length of the
  // input a gated Conv1d reads (ReduceMean over axis 2 of x, or of |x|) then averages over H and
  // W of the conv's own input, as recognise_gates requires; it was not recognised there.
  g.rebuild_links();
  for (NodeId id : g.topological_order()) {
    if (!axis2_node(g, g.node(id), OpType::Unsqueeze)) continue;
    const ValueId x3 = g.node(id).inputs[0], x4 = g.node(id).outputs[0];
    if (const NodeId p = g.value(x3).producer; p >= 0 && axis2_node(g, g.node(p), OpType::Squeeze)) continue;
    std::vector<NodeId> readers;
    for (NodeId r : g.value(x3).consumers) {
      const Node& n = g.node(r);
      if (r != id && !n.dead && !n.inputs.empty() && n.inputs[0] == x3 && (is_reduce(n.op) || sinkable(n)))
        readers.push_back(r);
    }
    if (readers.empty()) continue;
    const ValueId x3b = add_like(g, g.value(x3), ":from_2d", g.value(x3).shape);
    for (NodeId r : readers)
      for (ValueId& in : g.node(r).inputs)
        if (in == x3) in = x3b;
    add_axis_node(g, OpType::Squeeze, g.value(x3).name + ":to_1d", x4, x3b);
  }
  // In rounds: each round moves every Squeeze of the round's start one step down, on the links
  // of the round's start (a move only rewires the node it moves past, and a Squeeze made in a
  // round waits for the next). Starting over after every move made deep nets plan in cubic
  // time (800 layers: 73 s).
  for (bool again = true; again;) {
    again = false;
    g.rebuild_links();
    for (NodeId id : g.topological_order()) {
      if (!axis2_node(g, g.node(id), OpType::Squeeze)) continue;
      const ValueId x4 = g.node(id).inputs[0], y3 = g.node(id).outputs[0];
      const std::vector<NodeId> readers = g.value(y3).consumers;
      for (NodeId r : readers) {
        Node& n = g.node(r);
        if (n.dead || std::find(n.inputs.begin(), n.inputs.end(), y3) == n.inputs.end()) continue;  // moved already
        if (axis2_node(g, n, OpType::Unsqueeze) && n.inputs[0] == y3) {  // Squeeze then Unsqueeze: x4 itself
          if (g.value(n.outputs[0]).is_output) continue;
          replace_uses(g, n.outputs[0], x4);
          n.dead = true;
          ++moved, again = true;
          continue;
        }
        if (n.op == OpType::Flatten && n.inputs[0] == y3) {  // the products left and right of the axis are the same
          int64_t& axis = n.p<AxisParams>().axis;
          if (axis < -3 || axis > 3) continue;
          if (axis < 0) axis += 3;
          axis = axis_in_4d(axis);
          n.inputs[0] = x4;
          ++moved, again = true;
          continue;
        }
        if (n.op == OpType::Pad && n.inputs[0] == y3 && n.outputs.size() == 1) {
          // The amounts, resolved by inference over the 3 axes, get 0 for the inserted one.
          const std::vector<int64_t> p3 = n.p<PadParams>().pads;
          if (p3.size() != 6 || (n.inputs.size() > 2 && n.inputs[2] != kNoValue && !g.value(n.inputs[2]).is_constant()))
            continue;
          const std::vector<int64_t> p4 = {p3[0], p3[1], 0, p3[2], p3[3], p3[4], 0, p3[5]};
          const ValueId pads = add_constant(g, n.name + ":pads_2d", Tensor::from_vector<int64_t>({8}, p4));
          sink_through(g, r, x4, pads);
          ++moved, again = true;
          continue;
        }
        if (n.op == OpType::Slice && n.inputs[0] == y3 && n.outputs.size() == 1 && n.inputs.size() >= 3) {
          // Constant starts, ends (and axes, steps): the same slice of the 4-D form, its axes
          // past the inserted one moved up by one (a 1-D shift's Pad + Slice + Concat then
          // meets recognise_shifts in 2-D).
          // (const_ints is empty for an absent input, and for one that is not constant.)
          const std::vector<int64_t> starts = const_ints(g, n, 1), ends = const_ints(g, n, 2);
          const bool has_axes = n.inputs.size() > 3 && n.inputs[3] != kNoValue;
          const bool has_steps = n.inputs.size() > 4 && n.inputs[4] != kNoValue;
          std::vector<int64_t> axes = const_ints(g, n, 3);
          if (starts.empty() || ends.size() != starts.size() || (has_axes && axes.size() != starts.size()) ||
              (has_steps && const_ints(g, n, 4).size() != starts.size()))
            continue;
          if (!has_axes)
            for (size_t k = 0; k < starts.size(); ++k) axes.push_back(static_cast<int64_t>(k));
          if (std::any_of(axes.begin(), axes.end(), [](int64_t a) { return a < -3 || a > 2; })) continue;
          for (int64_t& a : axes) a = axis_in_4d(a < 0 ? a + 3 : a);
          const Shape as{static_cast<int64_t>(axes.size())};
          const bool i32 = g.value(n.inputs[1]).dtype == DType::Int32;  // (the same type as starts)
          const ValueId axes4 = add_constant(g, n.name + ":axes_2d",
                                             i32 ? Tensor::from_vector<int32_t>(as, std::vector<int32_t>(axes.begin(), axes.end()))
                                                 : Tensor::from_vector<int64_t>(as, axes));
          sink_through(g, r, x4, kNoValue);
          Node& sl = g.node(r);
          if (sl.inputs.size() < 4) sl.inputs.resize(4, kNoValue);
          sl.inputs[3] = axes4;
          ++moved, again = true;
          continue;
        }
        if (is_reduce(n.op) && n.inputs[0] == y3 && n.outputs.size() == 1 &&
            !n.p<ReduceParams>().noop_with_empty_axes) {
          // Axes resolved by inference. Without keepdims the 4-D form also reduces the inserted
          // axis (size 1: the same values) and gives the 3-D result itself.
          ReduceParams& rp = g.node(r).p<ReduceParams>();
          std::vector<int64_t> axes;
          for (int64_t a : rp.axes) axes.push_back(axis_in_4d(a));
          if (!rp.keepdims) axes.insert(std::lower_bound(axes.begin(), axes.end(), kAxis), kAxis);
          rp.axes = axes;
          rp.has_axes = true;
          Node& red = g.node(r);
          red.inputs.resize(1);  // the axes input, if any: params hold them
          red.inputs[0] = x4;
          if (rp.keepdims) sink_through(g, r, kNoValue, kNoValue);
          ++moved, again = true;
          continue;
        }
        if (!sinkable(n) || n.outputs.empty() || n.outputs[0] == kNoValue) continue;
        if (std::any_of(n.outputs.begin() + 1, n.outputs.end(), [&](ValueId o) {
              return o != kNoValue && (g.value(o).is_output || !g.value(o).consumers.empty());
            }))
          continue;  // BN's training outputs, Dropout's mask
        const Value& out = g.value(n.outputs[0]);
        if (out.shape.size() != 3 || !out.shape_known) continue;
        // Its inputs in 4-D: other Squeezes' inputs, and (the operands of elementwise ops only)
        // constants of rank <= 3 and run-time values of rank 3 (a gate's [N, C, 1] on a Conv1d's
        // output: an Unsqueeze of axis 2 of their own, so that recognise_gates sees the conv's
        // output multiplied as a Conv2d's is). Per-channel parameters (BN's, Clip's bounds) stay
        // as they are.
        const bool elementwise = n.op == OpType::Add || n.op == OpType::Sub || n.op == OpType::Mul ||
                                 n.op == OpType::Div || n.op == OpType::PRelu;
        std::vector<ValueId> ins = n.inputs;
        std::vector<size_t> unsqueeze;  // operands that get an Unsqueeze
        bool ok = true;
        const size_t data_inputs = n.op == OpType::Concat || elementwise ? ins.size() : 1;
        for (size_t k = 0; k < data_inputs && ok; ++k) {
          const ValueId v = ins[k];
          if (v == kNoValue) continue;
          const NodeId p = g.value(v).producer;
          if (p >= 0 && axis2_node(g, g.node(p), OpType::Squeeze)) {
            ins[k] = g.node(p).inputs[0];
          } else if (elementwise && g.value(v).is_constant() && g.value(v).shape.size() <= 3) {
            const Value& c = g.value(v);
            ins[k] = c.shape.empty() ? v : add_constant(g, c.name + ":2d", c.constant.reshaped(lifted(c.shape)));
          } else if (elementwise && g.value(v).shape_known && g.value(v).shape.size() == 3) {
            unsqueeze.push_back(k);
          } else {
            ok = false;
          }
        }
        if (!ok) continue;
        for (size_t k : unsqueeze) {  // add_node moves the nodes: `n` is not used below
          const ValueId v4 = add_like(g, g.value(ins[k]), ":2d", lifted(g.value(ins[k]).shape));
          add_axis_node(g, OpType::Unsqueeze, g.value(ins[k]).name + ":to_2d", ins[k], v4);
          ins[k] = v4;
        }
        if (g.node(r).op == OpType::Concat) {
          int64_t& axis = g.node(r).p<AxisParams>().axis;
          if (axis < -3 || axis > 2) continue;
          if (axis < 0) axis += 3;
          axis = axis_in_4d(axis);
        }
        g.node(r).inputs = ins;
        sink_through(g, r, kNoValue, kNoValue);
        ++moved, again = true;
      }
    }
  }
  // Squeezes and Unsqueezes left with no reader (their readers now read the 4-D values).
  g.rebuild_links();
  for (Node& n : g.nodes)
    if (!n.dead && (n.op == OpType::Squeeze || n.op == OpType::Unsqueeze) && n.outputs.size() == 1 &&
        !g.value(n.outputs[0]).is_output && g.value(n.outputs[0]).consumers.empty())
      n.dead = true;
  g.rebuild_links();
  return moved;
}

}  // namespace sluice::graph::passes
