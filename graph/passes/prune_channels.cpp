// Static channel pruning (design.md §6): remove the output channels of a Conv whose
// filters are all zero, and the matching input channels of its readers, exactly.
//
// A dead channel o of conv P (W[o] == 0) is the constant v = act(bias[o]) everywhere.
// Through any elementwise op it stays a constant, f(v): unary ops (Relu, Tanh, Gelu, Clip,
// ...), arithmetic with a scalar constant (x * 0.5, x + 3), and self-gating forms that
// combine the value with a function of itself (SiLU's x * sigmoid(x), hardswish written as
// x * clip(x + 3, 0, 6) / 6). Through MaxPool too (ONNX pads MaxPool with -inf), through
// an AveragePool (whose zero padding, with count_include_pad, passes only a channel that is 0),
// and through ops that only copy a channel's values (reflect, edge
// and wrap Pads, Resize: nearest, or linear and cubic for zero channels). A reader conv C then gets f(v) * sum_taps W_C[m, o] added at
// every output pixel whose window lies inside the input: exactly a bias term when C has no
// zero padding, so f(v) != 0 is folded only there. A Gemm head behind GlobalAveragePool ->
// Flatten reads the channel as the column f(v), folded into its bias. An FBS gated conv loses
// a channel that is 0 (its conv and its saliency read nothing from it). A Gemm (Linear) with an
// all-zero weight column o (ln_structured on a Linear's dim 0) is the same on [N, F] features:
// output feature o is act(beta * C[o]) for every row, and the Gemms reading it (through
// elementwise ops and Concats) lose that input, the constant folded into their biases. Anything else reading
// the channel (Add of two activations, gated convs, graph outputs, reshapes that mix
// channels) keeps it: removal across those needs the channel dead in the whole dependency
// group, which this pass does not attempt.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"
#include "ops/kernel.h"
#include "ops/op_registry.h"

namespace sluice::graph::passes {

namespace {

// One elementwise node between the producer and a reader: `node` reads the dead channel's
// value at input `pos`; other inputs are constants. A self-gating step (`inner` not empty)
// is node(x, inner(x)): `node` reads x at `pos` and the end of the chain `inner` at 1 - pos.
struct Step {
  NodeId node;
  int pos;
  std::vector<Step> inner;
  // Which input is a per-channel constant (PRelu's slopes, a Mul by [1, C, 1, 1]; -1: none;
  // kBatchNormParams: a BatchNormalization's four [C] parameters), and where P's channels start
  // in the node's input (behind a Concat).
  int per_channel = -1;
  int64_t offset = 0;
  // A squeeze-and-excitation scale: Mul(x, s), s [N, C, 1, 1] computed at run time, ending in a
  // bounded activation, from the conv `scale_conv` (whose output channels go with x's) through
  // the values `scale_vals` (their channel dims shrink too). 0 x s is 0; any other constant x
  // varies with s.
  NodeId scale_conv = -1;
  std::vector<ValueId> scale_vals = {};
};

struct Reader {
  NodeId node;              // Conv, SluiceGatedConv or Gemm
  std::vector<Step> chain;  // elementwise nodes between P and this reader, in order
  int64_t offset = 0;       // where P's channels start in the reader's input (behind a Concat)
  int64_t spread = 1;       // reader inputs per channel: H*W for a Gemm on a flattened map
  ValueId flat = kNoValue;  // that flattened value (its width shrinks by spread per channel)
  // Constant Pads on the way: (steps of `chain` before the Pad, its fill). A constant channel
  // stays one through a Pad only when it already holds the fill (a zero channel, zero padding).
  std::vector<std::pair<size_t, float>> fills;
};

constexpr int kBatchNormParams = -2;  // Step::per_channel: inputs 1-4 of a BatchNormalization

bool is_binary_elementwise(OpType t) {
  switch (t) {
    case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::Pow: case OpType::Max:
    case OpType::Min:
      return true;
    default:
      return false;
  }
}

// Whether constant c holds one value per channel of v (a 4-D map [N, C, H, W] or 2-D features
// [N, C]) and broadcasts onto v along the channel axis only: [C, 1, 1] or [1, C, 1, 1] (or
// [C], [1, C] for features).
bool per_channel_constant(const Value& c, const Value& v) {
  if (!c.is_constant() || c.dtype != DType::Float32 || v.shape.size() < 2 || c.constant.numel() != v.shape[1])
    return false;
  const int64_t ch = v.shape[1];
  if (v.shape.size() == 4) return c.shape == Shape{ch, 1, 1} || c.shape == Shape{1, ch, 1, 1};
  return v.shape.size() == 2 && (c.shape == Shape{ch} || c.shape == Shape{1, ch});
}

// Where node n reads `v` when n is an elementwise op that maps a constant channel of `v` to a
// constant channel of its (same-shaped, float) output: a unary op whose other inputs are
// constants, PRelu, or a binary op with a one-element constant; with a per-channel constant
// (PRelu's slopes, a Mul by [1, C, 1, 1]) too, whose input `per_channel` then names. -1 otherwise.
int elementwise_pos(const Graph& g, const Node& n, ValueId v, int* per_channel = nullptr) {
  if (per_channel) *per_channel = -1;
  if (n.outputs.size() != 1 || n.outputs[0] == kNoValue) return -1;
  if (g.value(n.outputs[0]).dtype != DType::Float32 || g.value(n.outputs[0]).shape != g.value(v).shape) return -1;
  if (is_unary_elementwise(n.op) || n.op == OpType::Clip) {  // Clip: its bounds are constants (checked below)
    if (n.inputs.empty() || n.inputs[0] != v) return -1;
    for (size_t i = 1; i < n.inputs.size(); ++i)
      if (n.inputs[i] != kNoValue && (n.inputs[i] == v || !g.value(n.inputs[i]).is_constant())) return -1;
    return 0;
  }
  // A BatchNormalization on its own (after a ReLU, or a Concat: it did not fold into a conv; or
  // a BatchNorm1d on Linear features) is a per-channel affine map: a constant channel stays one.
  if (n.op == OpType::BatchNormalization && per_channel && n.inputs.size() == 5 && n.inputs[0] == v &&
      n.p<BatchNormParams>().channels.empty() && (g.value(v).shape.size() == 4 || g.value(v).shape.size() == 2)) {
    for (size_t i = 1; i <= 4; ++i) {
      const Value& pv = g.value(n.inputs[i]);
      if (n.inputs[i] == v || !pv.is_constant() || pv.dtype != DType::Float32 || pv.shape != Shape{g.value(v).shape[1]})
        return -1;
    }
    *per_channel = kBatchNormParams;
    return 0;
  }
  const bool prelu = n.op == OpType::PRelu;
  if ((!is_binary_elementwise(n.op) && !prelu) || n.inputs.size() != 2) return -1;
  for (int pos = 0; pos < (prelu ? 1 : 2); ++pos) {
    const ValueId other = n.inputs[static_cast<size_t>(1 - pos)];
    if (n.inputs[static_cast<size_t>(pos)] == v && other != kNoValue && other != v) {
      const Value& ov = g.value(other);
      if (ov.is_constant() && ov.constant.numel() == 1 && ov.dtype == DType::Float32 && ov.shape.size() <= 4) return pos;
      if (per_channel && per_channel_constant(ov, g.value(v))) {
        *per_channel = 1 - pos;
        return pos;
      }
    }
  }
  return -1;
}

// A self-gating form that starts at consumer `c` of `v`: a chain of elementwise nodes, each
// output read only by the next, ending in a binary elementwise node that reads `v` and the
// chain's end (x * sigmoid(x); x * clip(x + 3, 0, 6) / 6). Returns that node, with the chain
// in `inner` and its values in `vals`, or -1.
NodeId self_gate(const Graph& g, ValueId v, NodeId c, std::vector<Step>& inner, std::vector<ValueId>& vals) {
  inner.clear();
  vals.clear();
  ValueId in = v;
  for (NodeId cur = c; inner.size() < 8;) {
    const Node& n = g.node(cur);
    int pc = -1;
    const int pos = elementwise_pos(g, n, in, &pc);
    if (pos < 0) return -1;
    inner.push_back({cur, pos, {}, pc});
    const ValueId out = n.outputs[0];
    const Value& ov = g.value(out);
    if (ov.is_output || ov.consumers.size() != 1) return -1;
    vals.push_back(out);
    const NodeId nid = ov.consumers[0];
    const Node& next = g.node(nid);
    if (is_binary_elementwise(next.op) && next.inputs.size() == 2 && next.outputs.size() == 1 &&
        ((next.inputs[0] == v && next.inputs[1] == out) || (next.inputs[1] == v && next.inputs[0] == out)) &&
        g.value(next.outputs[0]).shape == g.value(v).shape && g.value(next.outputs[0]).dtype == DType::Float32)
      return nid;
    cur = nid;
    in = out;
  }
  return -1;
}

// Whether node n is Mul(v, s) (either order) with s a squeeze-and-excitation scale of v's
// channels: s is [N, C, 1, 1] (C = v's channels), read only by n, and made by a Sigmoid,
// HardSigmoid or Clip (bounded: 0 x s stays 0) from a group-1 conv with constant weights
// through elementwise ops, each value read by the next only. Fills the step's fields.
bool se_scale(const Graph& g, const Node& n, ValueId v, Step& step) {
  if (n.op != OpType::Mul || n.inputs.size() != 2 || n.outputs.size() != 1 || n.inputs[0] == n.inputs[1]) return false;
  const Value& vv = g.value(v);
  if (vv.shape.size() != 4 || g.value(n.outputs[0]).shape != vv.shape || vv.dtype != DType::Float32) return false;
  const int pos = n.inputs[0] == v ? 0 : 1;
  ValueId cur = n.inputs[static_cast<size_t>(1 - pos)];
  const Value& sv = g.value(cur);
  if (sv.is_constant() || sv.dtype != DType::Float32 || sv.shape != Shape{vv.shape[0], vv.shape[1], 1, 1}) return false;
  std::vector<ValueId> vals;
  bool bounded = false;
  for (int depth = 0; depth < 8; ++depth) {
    const Value& cv = g.value(cur);
    if (cv.is_output || cv.is_input || cv.consumers.size() != 1 || cv.producer < 0) return false;
    const Node& p = g.node(cv.producer);
    if (p.dead || p.outputs.size() != 1 || p.outputs[0] != cur) return false;
    vals.push_back(cur);
    if (depth == 0) {
      // (A Clip right after the scale conv is its epilogue by now, fuse_activations having run.)
      const FusedActivation* epi = p.op == OpType::Conv ? &p.p<ConvParams>().activation : nullptr;
      auto finite_bound = [&](size_t i) {
        if (p.inputs.size() <= i || p.inputs[i] == kNoValue) return false;
        const Value& b = g.value(p.inputs[i]);
        return b.is_constant() && b.dtype == DType::Float32 && b.constant.numel() == 1 &&
               std::isfinite(b.constant.data<float>()[0]);
      };
      bounded = p.op == OpType::Sigmoid || p.op == OpType::HardSigmoid ||
                (p.op == OpType::Clip && finite_bound(1) && finite_bound(2)) ||
                (epi && epi->kind == Activation::Clip && std::isfinite(epi->alpha) && std::isfinite(epi->beta));
    }
    if (!bounded) return false;
    if (p.op == OpType::Conv) {
      const auto& cp = p.p<ConvParams>();
      if (cp.group != 1 || !cp.pre_shift.empty() || !g.value(p.inputs[1]).is_constant() ||
          g.value(p.inputs[1]).dtype != DType::Float32 || cp.fused_sum ||
          (p.inputs.size() > 2 && p.inputs[2] != kNoValue && !g.value(p.inputs[2]).is_constant()))
        return false;
      vals.pop_back();  // the conv's own output: compact_producer shrinks it
      step.node = g.value(n.outputs[0]).producer;
      step.pos = pos;
      step.scale_conv = cv.producer;
      step.scale_vals = std::move(vals);
      return true;
    }
    const ValueId in = p.inputs.empty() ? kNoValue : p.inputs[0];
    if (in == kNoValue || elementwise_pos(g, p, in) != 0) return false;
    cur = in;
  }
  return false;
}

// What node n computes from the one-element values `x` at the inputs `at` (other inputs: its
// constants; of a per-channel one, input `per_channel`, element `channel`), by its reference
// kernel.
float eval_node(const Graph& g, const Node& n, std::initializer_list<std::pair<int, float>> x, int per_channel = -1,
                int64_t channel = 0) {
  std::vector<float> vals(n.inputs.size(), 0.f);
  std::vector<ops::TensorView> in(n.inputs.size());
  for (size_t i = 0; i < n.inputs.size(); ++i)
    if (n.inputs[i] != kNoValue) {
      const Value& v = g.value(n.inputs[i]);
      if (static_cast<int>(i) == per_channel || (per_channel == kBatchNormParams && i >= 1))
        in[i] = {v.dtype, i >= 1 && per_channel == kBatchNormParams ? Shape{1} : Shape{1, 1, 1, 1},
                 const_cast<float*>(v.constant.data<float>() + channel)};
      else if (v.is_constant())
        in[i] = {v.dtype, v.shape, const_cast<void*>(v.constant.raw())};
    }
  for (auto [pos, val] : x) {
    vals[static_cast<size_t>(pos)] = val;
    in[static_cast<size_t>(pos)] = {DType::Float32, {1, 1, 1, 1}, &vals[static_cast<size_t>(pos)]};
  }
  float y = 0.f;
  ops::TensorView out{DType::Float32, {1, 1, 1, 1}, &y};
  ops::schema(n.op).reference(n, in, std::span<ops::TensorView>(&out, 1));
  return y;
}

// The constant a reader sees for dead channel o of constant value v, through `chain`.
float through(const Graph& g, const std::vector<Step>& chain, float v, int64_t o) {
  for (const Step& s : chain) {
    const Node& n = g.node(s.node);
    if (s.scale_conv >= 0) {  // times a run-time scale: 0 stays 0, anything else is no constant
      v = v == 0.f ? 0.f : std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (s.inner.empty())
      v = eval_node(g, n, {{s.pos, v}}, s.per_channel, s.offset + o);
    else
      v = eval_node(g, n, {{s.pos, v}, {1 - s.pos, through(g, s.inner, v, o)}}, s.per_channel, s.offset + o);
  }
  return v;
}

// A Flatten of a 4-D value into [N, C*H*W]: axis 1, or -3.
bool flattens_channels(const Node& n) { return n.p<AxisParams>().axis == 1 || n.p<AxisParams>().axis == -3; }

// A ReduceMean over H and W of a 4-D value (what torch's x.mean((2, 3)) exports).
bool spatial_mean(const Node& n) {
  const auto& p = n.p<ReduceParams>();
  if (p.axes.size() != 2 || p.noop_with_empty_axes) return false;
  std::set<int64_t> axes;
  for (int64_t a : p.axes) axes.insert((a + 4) % 4);
  return axes == std::set<int64_t>{2, 3};
}

// Why reader n (a Conv, ConvTranspose, gated conv or Gemm) cannot lose input channels: its
// weights hold an inf or a NaN, which times a removed zero channel is NaN (ONNX Runtime's
// answer); or "".
std::string nonfinite_weights(const Graph& g, const Node& n) {
  for (size_t i : {size_t{1}, size_t{3}}) {
    if (i == 3 && n.op != OpType::SluiceGatedConv) continue;
    const Value& w = g.value(n.inputs[i]);
    if (w.is_constant() && !ops::all_finite(w.constant))
      return "read by " + n.name + ", whose weights hold inf or NaN (0 x inf is NaN: a removed zero channel would change its output)";
  }
  return "";
}

// The value of a channel whose filter is all zero: its bias after the producer's fused
// activation, which maps NaN to 0 (or Clip's min) as oneDNN's post-op does. A NaN bias stays
// NaN here: ONNX Runtime's answer for the channel is NaN (Relu keeps it), so it must not pass
// for a zero channel (a probe's model, a slimmed BN with an inf running mean folded to a NaN
// bias, came out finite).
float dead_value(const FusedActivation& a, float bias) { return std::isnan(bias) ? bias : apply_activation(a, bias); }

// Whether output channel o (of m) of producer p, a Conv or a Gemm with constant float weights,
// has a finite filter (a Gemm's column of B, or row when transposed) and bias: an inf or NaN
// there makes the channel inf or NaN at run time, and 0 x inf is NaN in its readers.
bool channel_finite(const Graph& g, const Node& p, int64_t m, int64_t o) {
  const Tensor& w = g.value(p.inputs[1]).constant;
  const int64_t per = w.numel() / std::max<int64_t>(m, 1);
  const int64_t step = p.op == OpType::Gemm && !p.p<GemmParams>().trans_b ? m : 1;
  const float* W = w.data<float>() + (step == 1 ? o * per : o);
  for (int64_t i = 0; i < per; ++i)
    if (!std::isfinite(W[i * step])) return false;
  if (p.inputs.size() > 2 && p.inputs[2] != kNoValue) {
    const Tensor& b = g.value(p.inputs[2]).constant;
    if (b.numel() == m && !std::isfinite(b.data<float>()[o])) return false;
    if (b.numel() == 1 && !std::isfinite(b.data<float>()[0])) return false;
  }
  return true;
}

// Why Gemm `gid`, reading `features` as A, is not a classifier head this pass can rewrite
// (constant B, no transposed A, alpha 1, a constant bias vector), or "".
std::string gemm_head_problem(const Graph& g, NodeId gid, ValueId features) {
  const Node& gemm = g.node(gid);
  if (gemm.op != OpType::Gemm || gemm.inputs[0] != features) return "flattened, then read by " + gemm.name;
  const auto& gp = gemm.p<GemmParams>();
  if (gp.trans_a || gp.alpha != 1.f || !g.value(gemm.inputs[1]).is_constant() ||
      g.value(gemm.inputs[1]).dtype != DType::Float32)
    return "read by Gemm " + gemm.name + " in a form this pass does not rewrite";
  if (gemm.inputs.size() > 2 && gemm.inputs[2] != kNoValue &&
      (!g.value(gemm.inputs[2]).is_constant() || gp.beta != 1.f || g.value(gemm.inputs[2]).shape.size() > 1))
    return "read by Gemm " + gemm.name + " whose bias is not a constant vector";
  return nonfinite_weights(g, gemm);
}

// The readers of `v` when every path is a chain of elementwise ops, max / average pooling
// (a zero border noted in `fills`), Pads (a constant one noted in `fills`), nearest Resizes and channel Concats ending in a Conv
// (input 0) or a classifier head (GAP or a mean
// over H, W, then Flatten, then Gemm; or Flatten of the map, then Gemm); the values on the way
// (whose channel dim shrinks) go to `path`.
// Returns a reason when some reader is something else.
// A node reached twice (a Concat of y and maxpool(y), or of y and relu(y)) refuses too: each
// reader is rewritten once, for channels at one offset. Self-gating forms are the exception:
// they read the value twice by design, and are one step.
std::string collect_readers(const Graph& g, ValueId v, const std::vector<Step>& chain, std::vector<Reader>& readers,
                            std::vector<ValueId>& path, std::set<NodeId>& seen, int64_t offset = 0,
                            const std::vector<std::pair<size_t, float>>& fills = {}) {
  const Value& val = g.value(v);
  if (val.is_output) return "its output is a graph output";
  if (val.shape.size() != 4 && val.shape.size() != 2) return "its output is neither a 4-D map nor 2-D features";
  // The self-gating forms that start here, and the nodes that close them (met once, as a step).
  std::map<NodeId, std::pair<NodeId, std::vector<Step>>> gates;  // first node -> (closing node, chain)
  std::map<NodeId, std::vector<ValueId>> gate_vals;
  std::set<NodeId> closing;
  for (NodeId c : val.consumers) {
    std::vector<Step> inner;
    std::vector<ValueId> vals;
    const NodeId b = self_gate(g, v, c, inner, vals);
    if (b < 0 || closing.count(b)) continue;
    closing.insert(b);
    gates[c] = {b, std::move(inner)};
    gate_vals[c] = std::move(vals);
  }
  for (NodeId c : val.consumers) {
    const Node& n = g.node(c);
    if (closing.count(c) && !gates.count(c)) continue;  // reached through its gate's chain
    if (!seen.insert(c).second) return "reaches " + n.name + " along two paths";
    if (auto it = gates.find(c); it != gates.end()) {
      const NodeId b = it->second.first;
      const Node& bn = g.node(b);
      for (const Step& s : it->second.second) seen.insert(s.node);
      if (!seen.insert(b).second) return "reaches " + bn.name + " along two paths";
      for (ValueId pv : gate_vals[c]) path.push_back(pv);
      path.push_back(bn.outputs[0]);
      std::vector<Step> next = chain;
      std::vector<Step> inner = it->second.second;
      for (Step& s : inner) s.offset = offset;
      next.push_back({b, bn.inputs[0] == v ? 0 : 1, std::move(inner), -1, offset});
      std::string r = collect_readers(g, bn.outputs[0], next, readers, path, seen, offset, fills);
      if (!r.empty()) return r;
      continue;
    }
    if (Step se; se_scale(g, n, v, se)) {  // x * excite(squeeze(x)): the scale loses the channels too
      path.push_back(n.outputs[0]);
      se.offset = offset;
      std::vector<Step> next = chain;
      next.push_back(std::move(se));
      std::string r = collect_readers(g, n.outputs[0], next, readers, path, seen, offset, fills);
      if (!r.empty()) return r;
      continue;
    }
    int pc = -1;
    if (const int pos = elementwise_pos(g, n, v, &pc); pos >= 0) {
      path.push_back(n.outputs[0]);
      std::vector<Step> next = chain;
      next.push_back({c, pos, {}, pc, offset});
      std::string r = collect_readers(g, n.outputs[0], next, readers, path, seen, offset, fills);
      if (!r.empty()) return r;
      continue;
    }
    for (size_t i = 1; i < n.inputs.size() && n.op != OpType::Concat && n.op != OpType::Add; ++i) {
      if (n.inputs[i] != v) continue;
      if (n.op == OpType::Conv && i == 3)
        return "meets a residual Add (fused into " + n.name + "): not dead in every member of its residual group";
      return "read by " + n.name + " as a parameter";
    }
    if (val.shape.size() == 2 && n.op != OpType::Gemm && n.op != OpType::Concat) {  // features [N, F]
      // (A Gemm's C of a value per row and feature is such an Add after it: normalise_gemms.)
      if (n.op == OpType::Add && n.inputs.size() == 2) {
        const Value& other = g.value(n.inputs[0] == v ? n.inputs[1] : n.inputs[0]);
        if (other.shape.size() == 2 && other.shape[0] != 1)
          return "read by Add " + n.name + " of " + shape_str(other.shape) + ", not one value per feature (the same for every row)";
      }
      return "read by " + std::string(op_name(n.op)) + " " + n.name;
    }
    switch (n.op) {
      case OpType::Gemm: {  // a Linear reading the features [N, F]
        if (val.shape.size() != 2) return "read by " + n.name;
        if (std::string why = gemm_head_problem(g, c, v); !why.empty()) return why;
        readers.push_back({c, chain, offset, 1, kNoValue, fills});
        break;
      }
      case OpType::Conv: {
        const auto& cp = n.p<ConvParams>();
        // A grouped conv with more than one input channel per group loses as many in every group
        // (plan_removal evens the removal out); a depthwise one (one per group) goes with the
        // conv before it where it can (prune_through_depthwise).
        if (cp.group != 1 && (!g.value(n.inputs[1]).is_constant() || g.value(n.inputs[1]).shape.size() != 4 ||
                              g.value(n.inputs[1]).shape[1] < 2))
          return "read by grouped conv " + n.name;
        // A fused shift that moves each input channel to one place (a permutation of them: the
        // fused conv's weights have one column per input channel): only zero channels can go,
        // as through zero padding (plan_removal), with their columns.
        if (!cp.pre_shift.empty()) {
          const auto& src = cp.pre_shift.src;
          const int64_t cin = g.value(n.inputs[0]).shape[1];
          std::vector<bool> hit(static_cast<size_t>(std::max<int64_t>(cin, 0)), false);
          bool perm = static_cast<int64_t>(src.size()) == cin && g.value(n.inputs[1]).shape[1] == cin &&
                      cp.pre_shift.dy.size() == src.size() && cp.pre_shift.dx.size() == src.size();
          for (size_t j = 0; perm && j < src.size(); ++j) {
            perm = src[j] >= 0 && src[j] < cin && !hit[static_cast<size_t>(src[j])];
            if (perm) hit[static_cast<size_t>(src[j])] = true;
          }
          if (!perm) return "read through a shift by " + n.name + " that does not move each channel to one place";
        }
        if (!g.value(n.inputs[1]).is_constant()) return "read by conv " + n.name + " with run-time weights";
        if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && !g.value(n.inputs[2]).is_constant())
          return "read by conv " + n.name + " with a run-time bias";
        if (std::string why = nonfinite_weights(g, n); !why.empty()) return why;
        readers.push_back({c, chain, offset, 1, kNoValue, fills});
        break;
      }
      case OpType::ConvTranspose: {  // a decoder's upsampling conv: weights [C_in, C_out / group, kh, kw]
        const auto& tp = n.p<ConvTransposeParams>();
        if (tp.group != 1) return "read by grouped ConvTranspose " + n.name;
        if (!g.value(n.inputs[1]).is_constant() || g.value(n.inputs[1]).dtype != DType::Float32)
          return "read by ConvTranspose " + n.name + " with run-time weights";
        if (std::string why = nonfinite_weights(g, n); !why.empty()) return why;
        readers.push_back({c, chain, offset, 1, kNoValue, fills});
        break;
      }
      case OpType::SluiceGatedConv: {  // an FBS gated conv: its conv and its saliency read the channel
        const auto& gp = n.p<GatedConvParams>();
        if (gp.conv.group != 1 || !gp.conv.pre_shift.empty()) return "read by gated conv " + n.name + " in a form this pass does not rewrite";
        if (!g.value(n.inputs[1]).is_constant() || !g.value(n.inputs[3]).is_constant() ||
            g.value(n.inputs[1]).constant.dtype() != DType::Float32 || g.value(n.inputs[3]).constant.dtype() != DType::Float32)
          return "read by gated conv " + n.name + " with run-time weights";
        if (n.inputs[2] != kNoValue && !g.value(n.inputs[2]).is_constant())
          return "read by gated conv " + n.name + " with a run-time bias";
        if (std::string why = nonfinite_weights(g, n); !why.empty()) return why;
        readers.push_back({c, chain, offset, 1, kNoValue, fills});
        break;
      }
      case OpType::AveragePool:
      case OpType::MaxPool: {
        std::vector<std::pair<size_t, float>> more = fills;
        if (n.op == OpType::AveragePool) {
          // Windows that reach into the padding (pads, or ceil mode's last windows): with
          // count_include_pad they average zeros in, so a channel passes as itself only if it
          // is 0 (the fill, as a Pad's); without it they average the map's values only, and a
          // constant stays itself, unless a dilated window has no tap inside the map at all
          // (its output is 0): then too only a channel that is 0 passes.
          const auto& pp = n.p<PoolParams>();
          bool padded = pp.ceil_mode, dilated = false;
          for (int64_t pad : pp.pads) padded |= pad != 0;
          for (int64_t d : pp.dilations) dilated |= d != 1;
          if (padded && (pp.count_include_pad || dilated)) more.emplace_back(chain.size(), 0.f);
        }
        path.push_back(n.outputs[0]);
        if (n.outputs.size() > 1 && n.outputs[1] != kNoValue) return "read by " + n.name + " with indices output";
        std::string r = collect_readers(g, n.outputs[0], chain, readers, path, seen, offset, more);
        if (!r.empty()) return r;
        break;
      }
      case OpType::SluiceShift: {  // each channel translated in place, zero where it reads outside
        // Only a shift that keeps every channel where it is (a depthwise one-hot conv's, or one
        // whose strided 1x1 reader kept it a step of its own), of a value that starts at the
        // producer's first channel: its entries for the removed channels go (prune below).
        // Its border is zero: a dead channel passes only if it is zero (the fill, as a Pad's).
        const auto& sp = n.p<ShiftParams>();
        if (offset != 0)
          return "read by " + n.name + ", a shift step behind a Concat (its channels start at another producer's)";
        bool in_place = static_cast<int64_t>(sp.src.size()) == val.shape[1] &&
                        sp.dy.size() == sp.src.size() && sp.dx.size() == sp.src.size() &&
                        g.value(n.outputs[0]).shape.size() == 4 && g.value(n.outputs[0]).shape[1] == val.shape[1];
        for (size_t j = 0; in_place && j < sp.src.size(); ++j) in_place = sp.src[j] == static_cast<int32_t>(j);
        if (!in_place) return "read by " + n.name + ", a shift that moves channels to other places";
        std::vector<std::pair<size_t, float>> more = fills;
        more.emplace_back(chain.size(), 0.f);
        path.push_back(n.outputs[0]);
        std::string r = collect_readers(g, n.outputs[0], chain, readers, path, seen, offset, more);
        if (!r.empty()) return r;
        break;
      }
      case OpType::Pad:       // reflect / edge / wrap: every output value is one of the channel's own;
                              // constant: the channel's value must be the fill (checked per channel)
      case OpType::Upsample:  // (opsets 7-9's Resize: scales only, asymmetric coordinates)
      case OpType::Resize: {  // nearest (scales, not sizes, which name the channel count): copies
        const Shape& os = g.value(n.outputs[0]).shape;
        if (os.size() != 4 || os[0] != val.shape[0] || os[1] != val.shape[1])
          return "read by " + n.name + ", which changes the batch or channel count";
        std::vector<std::pair<size_t, float>> more = fills;
        if (n.op == OpType::Pad) {
          const auto& pp = n.p<PadParams>();
          if (pp.pads.size() != 8 || pp.pads[0] || pp.pads[1] || pp.pads[4] || pp.pads[5])
            return "read by " + n.name + ", a Pad of the batch or channel axis";
          if (pp.mode == "constant") {  // the border holds the fill (input 2, or 0)
            float fill = 0.f;
            if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {
              const Value& fv = g.value(n.inputs[2]);
              if (!fv.is_constant() || fv.dtype != DType::Float32 || fv.constant.numel() != 1)
                return "read by " + n.name + ", a Pad with a run-time fill";
              fill = fv.constant.data<float>()[0];
            }
            more.emplace_back(chain.size(), fill);
          }
        } else {
          // Axes 0 and 1 at scale 1 map index i to i exactly only in these coordinate modes
          // (tf_half_pixel_for_nn reads i + 0.5, which nearest_mode ceil rounds up).
          const auto& rp = n.p<ResizeParams>();
          const bool identity_nc = rp.resolved.size() == 4 && rp.resolved[0] == 1.0 && rp.resolved[1] == 1.0 &&
                                   (rp.coordinates == "asymmetric" || rp.coordinates == "half_pixel" ||
                                    rp.coordinates == "pytorch_half_pixel" ||
                                    (rp.mode != "nearest" && rp.coordinates == "align_corners"));
          if (!identity_nc || (n.inputs.size() > 3 && n.inputs[3] != kNoValue))
            return "read by " + n.name + ", a Resize that is given sizes or may move channels";
          // Linear or cubic (a decoder's bilinear upsampling): a weighted sum of the channel's own
          // pixels, so a zero channel stays exactly zero; another constant only up to rounding
          // (its weights sum to 1 in exact arithmetic), so such a channel must be 0 here.
          if (rp.mode != "nearest") more.emplace_back(chain.size(), 0.f);
        }
        path.push_back(n.outputs[0]);
        std::string r = collect_readers(g, n.outputs[0], chain, readers, path, seen, offset, more);
        if (!r.empty()) return r;
        break;
      }
      case OpType::ReduceMean:
      case OpType::GlobalAveragePool: {  // a classifier head: mean over H, W, (Flatten,) Gemm
        if (n.op == OpType::ReduceMean && !spatial_mean(n)) return "read by " + n.name + ", a ReduceMean over other axes";
        const ValueId pooled = n.outputs[0];
        const Value& pv = g.value(pooled);
        if (pv.is_output || pv.consumers.size() != 1) return "pooled output of " + n.name + " has other readers";
        path.push_back(pooled);
        ValueId features = pooled;
        if (pv.shape.size() == 4 && g.node(pv.consumers[0]).op != OpType::Flatten) {
          // [N, C, 1, 1] read as a map (a squeeze-and-excitation's 1x1 conv): the mean of a
          // constant channel is that constant.
          std::string r = collect_readers(g, pooled, chain, readers, path, seen, offset, fills);
          if (!r.empty()) return r;
          break;
        }
        if (pv.shape.size() == 4) {  // [N, C, 1, 1]: flattened first
          const Node& flat = g.node(pv.consumers[0]);
          if (flat.op != OpType::Flatten || !flattens_channels(flat)) return "pooled, then read by " + flat.name;
          const Value& fv = g.value(flat.outputs[0]);
          if (fv.is_output || fv.consumers.size() != 1) return "flattened output of " + flat.name + " has other readers";
          features = flat.outputs[0];
          path.push_back(features);
        }
        const NodeId gid = g.value(features).consumers[0];
        if (std::string why = gemm_head_problem(g, gid, features); !why.empty()) return why;
        readers.push_back({gid, chain, offset, 1, kNoValue, fills});
        break;
      }
      case OpType::Flatten: {  // [N, C, H, W] -> [N, C*H*W] read by a Gemm: channel c is H*W columns
        if (!flattens_channels(n)) return "flattened from axis " + std::to_string(n.p<AxisParams>().axis) + " by " + n.name;
        const Value& fv = g.value(n.outputs[0]);
        if (fv.is_output || fv.consumers.size() != 1) return "flattened output of " + n.name + " has other readers";
        const NodeId gid = fv.consumers[0];
        if (std::string why = gemm_head_problem(g, gid, n.outputs[0]); !why.empty()) return why;
        readers.push_back({gid, chain, offset, val.shape[2] * val.shape[3], n.outputs[0], fills});
        break;
      }
      case OpType::Concat: {  // P's channels are a slice of the concat: its readers lose them there
        const int64_t axis = n.p<AxisParams>().axis;
        if (axis != 1 && axis != 1 - static_cast<int64_t>(val.shape.size()))
          return "concatenated on axis " + std::to_string(axis) + " by " + n.name;
        int64_t at = 0, times = 0;
        for (ValueId in : n.inputs) {
          if (in == v) ++times;
          if (times == 0) at += g.value(in).shape[1];
        }
        if (times != 1) return "concatenated with itself by " + n.name;
        path.push_back(n.outputs[0]);
        std::string r = collect_readers(g, n.outputs[0], chain, readers, path, seen, offset + at, fills);
        if (!r.empty()) return r;
        break;
      }
      case OpType::Add:
        for (ValueId in : n.inputs)
          if (in != kNoValue && g.value(in).is_constant())
            return "meets Add " + n.name + " of a constant that did not fold into a conv's bias (it does only right behind a "
                   "conv with no other reader, and where the sum stays finite)";
        return "meets Add " + n.name + " of two activations: a residual group, whose channels go only where zero in every "
               "member";
      default:
        return "read by " + std::string(op_name(n.op)) + " " + n.name;
    }
  }
  return "";
}

bool has_zero_padding(const Node& conv) {
  for (int64_t p : conv.p<ConvParams>().pads)
    if (p != 0) return true;
  return false;
}

// A copy of the constant value `v` with a new tensor, so initializers shared with other
// plans of the model stay untouched.
ValueId new_constant(Graph& g, ValueId v, Tensor t, const std::string& suffix) {
  Value nv = g.value(v);
  nv.name += suffix;
  nv.shape = t.shape();
  nv.constant = std::move(t);
  nv.consumers.clear();
  nv.producer = -1;
  return g.add_value(std::move(nv));
}


// Keeps output channels `keep` of conv `pid` (filters and biases), and its output's shape.
void compact_producer(Graph& g, NodeId pid, const std::vector<int32_t>& keep) {
  const Node& p = g.node(pid);
  const Tensor& w = g.value(p.inputs[1]).constant;
  const int64_t m = w.shape()[0], per = w.numel() / m, k = static_cast<int64_t>(keep.size());
  // The model's input channels per group, as the MAC count takes them (all of them at group 1).
  const int64_t group_in = p.p<ConvParams>().group > 1 ? w.shape()[1] : g.value(p.inputs[0]).shape[1];
  const float* W = w.data<float>();
  Tensor wn(DType::Float32, [&] { Shape s = w.shape(); s[0] = k; return s; }());
  for (int64_t j = 0; j < k; ++j) std::copy_n(W + keep[static_cast<size_t>(j)] * per, per, wn.data<float>() + j * per);
  const ValueId w_old = p.inputs[1];
  const ValueId b_old = p.inputs.size() > 2 ? p.inputs[2] : kNoValue;
  ValueId w_id = new_constant(g, w_old, std::move(wn), "__pruned");
  ValueId b_id = kNoValue;
  if (b_old != kNoValue) {
    const float* B = g.value(b_old).constant.data<float>();
    Tensor bn(DType::Float32, {k});
    for (int64_t j = 0; j < k; ++j) bn.data<float>()[j] = B[keep[static_cast<size_t>(j)]];
    b_id = new_constant(g, b_old, std::move(bn), "__pruned");
  }
  Node& pn = g.node(pid);
  auto& cp = pn.p<ConvParams>();
  if (cp.dense_out == 0) cp.dense_out = m;
  if (cp.dense_in == 0) cp.dense_in = group_in, cp.dense_group = cp.group;
  pn.inputs[1] = w_id;
  if (b_id != kNoValue) pn.inputs[2] = b_id;
  g.value(pn.outputs[0]).shape[1] = k;
}

// Keeps output features `keep` of Gemm `pid` (columns of B, or rows when transposed, and of
// a bias vector C; a one-element C stays), and its output's shape.
void compact_gemm_producer(Graph& g, NodeId pid, const std::vector<int32_t>& keep) {
  const Node& p = g.node(pid);
  const auto& gp = p.p<GemmParams>();
  const Tensor& w = g.value(p.inputs[1]).constant;
  const int64_t m = gp.trans_b ? w.shape()[0] : w.shape()[1], kin = gp.trans_b ? w.shape()[1] : w.shape()[0];
  const int64_t k = static_cast<int64_t>(keep.size());
  const float* W = w.data<float>();
  Tensor wn(DType::Float32, gp.trans_b ? Shape{k, kin} : Shape{kin, k});
  for (int64_t j = 0; j < k; ++j) {
    const int64_t o = keep[static_cast<size_t>(j)];
    for (int64_t i = 0; i < kin; ++i)
      if (gp.trans_b) wn.data<float>()[j * kin + i] = W[o * kin + i];
      else wn.data<float>()[i * k + j] = W[i * m + o];
  }
  const ValueId w_id = new_constant(g, p.inputs[1], std::move(wn), "__pruned");
  ValueId c_id = kNoValue;
  if (p.inputs.size() > 2 && p.inputs[2] != kNoValue && g.value(p.inputs[2]).constant.numel() == m && m > 1) {
    const Tensor& c = g.value(p.inputs[2]).constant;
    Shape cs = c.shape();
    cs.back() = k;
    Tensor cn(DType::Float32, cs);
    for (int64_t j = 0; j < k; ++j) cn.data<float>()[j] = c.data<float>()[keep[static_cast<size_t>(j)]];
    c_id = new_constant(g, p.inputs[2], std::move(cn), "__pruned");
  }
  Node& pn = g.node(pid);
  auto& np = pn.p<GemmParams>();
  if (np.dense_n == 0) np.dense_n = m;
  pn.inputs[1] = w_id;
  if (c_id != kNoValue) pn.inputs[2] = c_id;
  g.value(pn.outputs[0]).shape[1] = k;
}

// A Gemm with constant float weights [K, N] (or [N, K]): "" when this pass can take output
// features from it (A not transposed, a finite alpha, a constant bias that is one value or one
// per output feature, the same for every row), else why not.
std::string gemm_producer_problem(const Graph& g, const Node& n) {
  const auto& gp = n.p<GemmParams>();
  const Value& w = g.value(n.inputs[1]);
  if (gp.trans_a) return "A is transposed";
  if (!std::isfinite(gp.alpha)) return "alpha is not finite";
  if (g.value(n.outputs[0]).shape.size() != 2) return "its output is not 2-D";
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {
    const Value& c = g.value(n.inputs[2]);
    const int64_t m = gp.trans_b ? w.shape[0] : w.shape[1];
    if (!c.is_constant() || c.dtype != DType::Float32) return "its bias is not a float constant";
    if ((c.constant.numel() != 1 && c.constant.numel() != m) ||
        (c.constant.numel() == m && m > 1 && !(c.shape.size() == 1 || (c.shape.size() == 2 && c.shape[0] == 1))))
      return "its bias " + shape_str(c.shape) + " is not one value per output feature (the same for every row)";
  }
  return "";
}

// Drops the input channels of reader `rid` (a conv, or a Gemm head) that are not in `keep`
// (of m); removed channels whose constant value[o] is not 0 are folded into its bias.
void compact_reader(Graph& g, NodeId rid, int64_t m, const std::vector<int32_t>& keep, const std::vector<bool>& remove,
                    const std::vector<float>& value) {
  const int64_t k = static_cast<int64_t>(keep.size());
  Node& rn = g.node(rid);
  if (rn.op == OpType::SluiceGatedConv) {
    // Only channels that are 0 (or that no weight reads) reach here: nothing to fold. The
    // conv's weights and the predictor's [M, C] lose the same input channels.
    const Tensor& cw = g.value(rn.inputs[1]).constant;
    const Tensor& wg = g.value(rn.inputs[3]).constant;
    const int64_t cm = cw.shape()[0], taps = cw.shape()[2] * cw.shape()[3];
    Tensor cwn(DType::Float32, {cm, k, cw.shape()[2], cw.shape()[3]});
    Tensor wgn(DType::Float32, {cm, k});
    for (int64_t mo = 0; mo < cm; ++mo)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = keep[static_cast<size_t>(j)];
        std::copy_n(cw.data<float>() + (mo * m + i) * taps, taps, cwn.data<float>() + (mo * k + j) * taps);
        wgn.data<float>()[mo * k + j] = wg.data<float>()[mo * m + i];
      }
    auto& gp = rn.p<GatedConvParams>();
    if (gp.conv.dense_in == 0) gp.conv.dense_in = m;
    const ValueId new_w = new_constant(g, rn.inputs[1], std::move(cwn), "__pruned_in");
    const ValueId new_wg = new_constant(g, g.node(rid).inputs[3], std::move(wgn), "__pruned_in");
    Node& rn2 = g.node(rid);
    set_input(rn2, 1, new_w);
    set_input(rn2, 3, new_wg);
    return;
  }
  if (rn.op == OpType::ConvTranspose) {
    // Only channels that are 0 (or that no weight reads) reach here: the kept slabs of W.
    const Tensor& tw = g.value(rn.inputs[1]).constant;
    const int64_t per = tw.numel() / std::max<int64_t>(tw.shape()[0], 1);
    Shape ns = tw.shape();
    ns[0] = k;
    Tensor twn(DType::Float32, ns);
    for (int64_t j = 0; j < k; ++j)
      std::copy_n(tw.data<float>() + keep[static_cast<size_t>(j)] * per, per, twn.data<float>() + j * per);
    auto& tp = rn.p<ConvTransposeParams>();
    if (tp.dense_in == 0) tp.dense_in = m;
    const ValueId new_w = new_constant(g, rn.inputs[1], std::move(twn), "__pruned_in");
    set_input(g.node(rid), 1, new_w);
    return;
  }
  if (rn.op == OpType::Conv) {
    // Group j's output channels lose the columns of its removed inputs, whose constants fold
    // into their biases. (A grouped conv keeps as many inputs in every group: plan_removal.)
    const Tensor& cw = g.value(rn.inputs[1]).constant;
    const int64_t groups = rn.p<ConvParams>().group, cm = cw.shape()[0], cg = cw.shape()[1];
    const int64_t og = cm / groups, kg = k / groups, taps = cw.shape()[2] * cw.shape()[3];
    const float* CW = cw.data<float>();
    Tensor cwn(DType::Float32, {cm, kg, cw.shape()[2], cw.shape()[3]});
    Tensor cb(DType::Float32, {cm});
    const bool had_bias = rn.inputs.size() > 2 && rn.inputs[2] != kNoValue;
    const float* CB = had_bias ? g.value(rn.inputs[2]).constant.data<float>() : nullptr;
    for (int64_t mo = 0; mo < cm; ++mo) {
      const int64_t j = mo / og;
      double extra = 0;
      for (int64_t i = j * cg; i < (j + 1) * cg; ++i) {
        const float v = value[static_cast<size_t>(i)];
        if (!remove[static_cast<size_t>(i)] || v == 0.f) continue;
        for (int64_t t = 0; t < taps; ++t) extra += static_cast<double>(v) * CW[(mo * cg + i - j * cg) * taps + t];
      }
      cb.data<float>()[mo] = static_cast<float>((CB ? CB[mo] : 0.f) + extra);
      for (int64_t jj = 0; jj < kg; ++jj) {
        const int64_t i = keep[static_cast<size_t>(j * kg + jj)];
        std::copy_n(CW + (mo * cg + i - j * cg) * taps, taps, cwn.data<float>() + (mo * kg + jj) * taps);
      }
    }
    auto& rp = rn.p<ConvParams>();
    if (rp.dense_in == 0) rp.dense_in = cg, rp.dense_group = groups;  // (per group, as the MAC count takes it)
    if (rp.dense_out == 0) rp.dense_out = cm;
    const ValueId new_w = new_constant(g, rn.inputs[1], std::move(cwn), "__pruned_in");
    const ValueId new_b = had_bias ? new_constant(g, g.node(rid).inputs[2], std::move(cb), "__pruned_in")
                                   : add_constant(g, g.node(rid).name + "__folded_bias", std::move(cb));
    Node& rn2 = g.node(rid);
    set_input(rn2, 1, new_w);
    set_input(rn2, 2, new_b);
  } else {  // Gemm head: rows (or columns) of B for the kept channels
    const auto& gp = rn.p<GemmParams>();
    const Tensor& bw = g.value(rn.inputs[1]).constant;
    const int64_t nout = gp.trans_b ? bw.shape()[0] : bw.shape()[1];
    const float* BW = bw.data<float>();
    auto at = [&](int64_t kk, int64_t j) { return gp.trans_b ? BW[j * m + kk] : BW[kk * nout + j]; };
    Tensor bwn(DType::Float32, gp.trans_b ? Shape{nout, k} : Shape{k, nout});
    Tensor cb(DType::Float32, {nout});
    const bool had_c = rn.inputs.size() > 2 && rn.inputs[2] != kNoValue;
    const Tensor* c0 = had_c ? &g.value(rn.inputs[2]).constant : nullptr;
    for (int64_t j = 0; j < nout; ++j) {
      double extra = 0;
      for (int64_t o = 0; o < m; ++o)
        if (remove[static_cast<size_t>(o)] && value[static_cast<size_t>(o)] != 0.f) extra += static_cast<double>(value[static_cast<size_t>(o)]) * at(o, j);
      const float cj = c0 ? c0->data<float>()[c0->numel() == 1 ? 0 : j] : 0.f;
      cb.data<float>()[j] = static_cast<float>(cj + extra);
      for (int64_t jj = 0; jj < k; ++jj) {
        const float val = at(keep[static_cast<size_t>(jj)], j);
        if (gp.trans_b) bwn.data<float>()[j * k + jj] = val; else bwn.data<float>()[jj * nout + j] = val;
      }
    }
    if (rn.p<GemmParams>().dense_k == 0) rn.p<GemmParams>().dense_k = m;
    const ValueId new_w = new_constant(g, rn.inputs[1], std::move(bwn), "__pruned_in");
    const ValueId new_b = add_constant(g, rn.name + "__pruned_bias", std::move(cb));
    Node& rn2 = g.node(rid);
    set_input(rn2, 1, new_w);
    set_input(rn2, 2, new_b);
    rn2.p<GemmParams>().beta = 1.f;
  }
}

// The readers of `out` (collect_readers), or false with the reason recorded in the report: a
// reader this pass cannot rewrite.
bool readers_or_report(Graph& g, ValueId out, PruneReport& report, std::vector<Reader>& readers,
                       std::vector<ValueId>& path) {
  std::set<NodeId> seen;
  std::string why = collect_readers(g, out, {}, readers, path, seen);
  if (why.empty()) return true;
  report.kept_reason = why;
  g.pruning.push_back(report);
  return false;
}

// Grouped convs lose as many channels in every group: the producer's output groups (when it is
// a grouped conv: `producer_groups` > 1) and each grouped reader's input groups. Channels that
// would go beyond the fewest of some group stay (each group also keeps one), until every group
// agrees. Returns how many stayed so.
int64_t even_out_groups(const Graph& g, const std::vector<Reader>& readers, int64_t producer_groups,
                        std::vector<bool>& remove) {
  const auto m = static_cast<int64_t>(remove.size());
  // Per grouping: the producer's channels in each group, and the group's size.
  struct Grouping {
    std::vector<std::vector<int64_t>> members;
    int64_t size;
  };
  std::vector<Grouping> groupings;
  if (producer_groups > 1) {
    Grouping gr{std::vector<std::vector<int64_t>>(static_cast<size_t>(producer_groups)), m / producer_groups};
    for (int64_t o = 0; o < m; ++o) gr.members[static_cast<size_t>(o / gr.size)].push_back(o);
    groupings.push_back(std::move(gr));
  }
  for (const Reader& r : readers) {
    const Node& rn = g.node(r.node);
    if (rn.op != OpType::Conv || rn.p<ConvParams>().group <= 1) continue;
    const int64_t groups = rn.p<ConvParams>().group, cg = g.value(rn.inputs[1]).shape[1];
    Grouping gr{std::vector<std::vector<int64_t>>(static_cast<size_t>(groups)), cg};
    for (int64_t o = 0; o < m; ++o) {
      const int64_t i = r.offset + o;
      if (i >= 0 && i < groups * cg) gr.members[static_cast<size_t>(i / cg)].push_back(o);
    }
    groupings.push_back(std::move(gr));
  }
  int64_t back = 0;
  for (bool changed = !groupings.empty(); changed;) {
    changed = false;
    for (const Grouping& gr : groupings) {
      int64_t fewest = gr.size - 1;
      for (const auto& mem : gr.members) {
        int64_t n = 0;
        for (int64_t o : mem) n += remove[static_cast<size_t>(o)];
        fewest = std::min(fewest, n);
      }
      for (const auto& mem : gr.members) {
        int64_t n = 0;
        for (int64_t o : mem)
          if (remove[static_cast<size_t>(o)] && ++n > fewest) {
            remove[static_cast<size_t>(o)] = false;
            ++back;
            changed = true;
          }
      }
    }
  }
  return back;
}

// Which of the dead channels (constant(o) everywhere) can go: a constant 0 always, v != 0 only
// when no reader pads over it, and only when every reader sees the same finite value (the ops
// on the way to a reader show it f(v)). Fills keep / remove / value (the constant each reader sees) and the
// report; false, with the report recorded, when none can.
bool plan_removal(Graph& g, const std::vector<Reader>& readers, const std::vector<bool>& dead,
                  const std::vector<bool>& unread, const std::function<float(int64_t)>& constant, PruneReport& report,
                  std::vector<int32_t>& keep, std::vector<bool>& remove, std::vector<float>& value,
                  const std::string& also_kept = "", int64_t producer_groups = 1) {
  const auto m = static_cast<int64_t>(dead.size());
  bool any_padding = false, any_gated = false, any_transposed = false, any_scaled = false;
  for (const Reader& r : readers) {
    // A fused shift reads zeros at its border: only a zero channel stays one through it.
    any_padding |= g.node(r.node).op == OpType::Conv &&
                   (has_zero_padding(g.node(r.node)) || !g.node(r.node).p<ConvParams>().pre_shift.empty());
    any_gated |= g.node(r.node).op == OpType::SluiceGatedConv;
    // A ConvTranspose spreads a constant input unevenly (windows overlap by the stride, fewer
    // reach the border): only a 0 can go.
    any_transposed |= g.node(r.node).op == OpType::ConvTranspose;
    for (const Step& st : r.chain) any_scaled |= st.scale_conv >= 0;  // behind an SE: only a 0 stays constant
  }
  value.assign(static_cast<size_t>(m), 0.f);
  remove.assign(static_cast<size_t>(m), false);
  keep.clear();
  int64_t kept_padded = 0, kept_differ = 0, kept_nonfinite = 0, kept_gated = 0, kept_pad_fill = 0, kept_transposed = 0,
          kept_scaled = 0;
  for (int64_t o = 0; o < m; ++o) {
    if (!unread.empty() && unread[static_cast<size_t>(o)]) {  // whatever it holds, nothing reads it
      remove[static_cast<size_t>(o)] = true;
      continue;
    }
    if (dead[static_cast<size_t>(o)]) {
      const float v = constant(o);
      if (std::isnan(v)) {  // NaN at run time, whatever the ops on the way make of it here
        ++kept_nonfinite;
        keep.push_back(static_cast<int32_t>(o));
        continue;
      }
      bool agree = true, first = true, finite = true, filled = true;
      float seen = 0.f;
      for (const Reader& r : readers) {
        for (const auto& [steps, fill] : r.fills)
          filled = filled &&
                   through(g, std::vector<Step>(r.chain.begin(), r.chain.begin() + static_cast<std::ptrdiff_t>(steps)),
                           v, o) == fill;
        const float rv = through(g, r.chain, v, o);
        finite = finite && std::isfinite(rv);
        if (!first && seen != rv) agree = false;
        seen = rv;
        first = false;
      }
      value[static_cast<size_t>(o)] = readers.empty() ? 0.f : seen;
      if (!finite && any_scaled && std::isfinite(v)) {
        ++kept_scaled;
      } else if (!finite) {  // inf or NaN everywhere: folding it into a bias would not be exact
        ++kept_nonfinite;
      } else if (!filled) {  // a constant Pad's border differs from the channel's value
        ++kept_pad_fill;
      } else if (agree && (value[static_cast<size_t>(o)] == 0.f || (!any_padding && !any_gated && !any_transposed))) {
        remove[static_cast<size_t>(o)] = true;
        continue;
      } else if (agree && any_transposed) {
        ++kept_transposed;
      } else if (agree && any_gated) {
        // A gated conv's saliency averages the channel: a non-zero constant would have to go
        // into the predictor's bias, rounded otherwise than the mean the gate computes, and a
        // near tie in its top-k could turn.
        ++kept_gated;
      } else {
        ++(agree ? kept_padded : kept_differ);
      }
    }
    keep.push_back(static_cast<int32_t>(o));
  }
  std::string why;
  if (kept_padded > 0) why = std::to_string(kept_padded) + " constant non-zero channels read through zero padding";
  if (kept_differ > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_differ) +
           " constant channels that readers see as different values (through different ops on the way)";
  if (kept_nonfinite > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_nonfinite) + " constant channels that are inf or NaN";
  if (kept_pad_fill > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_pad_fill) +
           " constant channels padded by a Pad, averaged with an AveragePool's zero padding (count_include_pad, or dilated windows wholly in it), "
           "read by a shift step, whose border holds another value (it would differ), or not 0 where a linear or cubic Resize "
           "interpolates them (exact for 0 only)";
  if (kept_gated > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_gated) + " constant non-zero channels read by a gated conv";
  if (kept_scaled > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_scaled) +
           " constant non-zero channels scaled at run time (squeeze-and-excitation)";
  if (kept_transposed > 0)
    why += (why.empty() ? "" : "; ") + std::to_string(kept_transposed) +
           " constant non-zero channels read by a ConvTranspose (it spreads them unevenly)";
  if (!also_kept.empty()) why += (why.empty() ? "" : "; ") + also_kept;
  if (const int64_t evened = even_out_groups(g, readers, producer_groups, remove); evened > 0) {
    keep.clear();
    for (int64_t o = 0; o < m; ++o)
      if (!remove[static_cast<size_t>(o)]) keep.push_back(static_cast<int32_t>(o));
    why += (why.empty() ? "" : "; ") + std::to_string(evened) +
           " dead or unread kept so that every group of a grouped conv loses as many (and keeps one)";
  }
  const auto k = static_cast<int64_t>(keep.size());
  if (k == m) {
    report.kept_reason = why;
    g.pruning.push_back(report);
    return false;
  }
  report.kept_reason = why;
  report.removed = m - k;
  for (int64_t o = 0; o < m; ++o) report.folded += remove[static_cast<size_t>(o)] && value[static_cast<size_t>(o)] != 0.f;
  return true;
}

// What removing the dead channels of the value `out` takes: its readers and the values on
// the way (collect_readers), and which channels go (plan_removal).
struct Removal {
  std::vector<Reader> readers;
  std::vector<ValueId> path;
  std::vector<int32_t> keep;
  std::vector<bool> remove;
  std::vector<float> value;
};

// readers_or_report, then plan_removal: false, with the report recorded, when nothing can go.
// `unread` (empty, or per channel): channels that every reader multiplies by zero weights
// only; they go whatever they hold, and count in `dead` here.
// When every channel is dead or unread, channel 0 stays (computed as before, its readers
// unchanged for it), so that the layer keeps a channel; the rest go.
bool plan_dead_channels(Graph& g, ValueId out, const std::vector<bool>& dead, int64_t n_dead,
                        const std::function<float(int64_t)>& constant, PruneReport& report, Removal& r,
                        const std::vector<bool>& unread = {}, int64_t producer_groups = 1) {
  if (!readers_or_report(g, out, report, r.readers, r.path)) return false;
  const bool all = n_dead == static_cast<int64_t>(dead.size()) && !dead.empty();
  std::vector<bool> d = dead, u = unread;
  if (all) {
    d[0] = false;
    if (!u.empty()) u[0] = false;
  }
  return plan_removal(g, r.readers, d, u, constant, report, r.keep, r.remove, r.value,
                      all ? "every channel is dead or unread: 1 stays, so that the layer keeps one" : "", producer_groups);
}

// Whether an op on the way can turn finite values into inf or NaN (then a reader's zero
// weight does not make the channel irrelevant: 0 * inf is NaN). Only the ops listed in
// keeps_finite are taken to keep a finite value finite (Reciprocal, the inverse trigonometric
// and hyperbolic ones, Exp, Log, Sqrt, Div, Pow can make inf or NaN from finite values: a
// reviewer's find was Reciprocal). So can a constant operand that is inf or NaN (a per-channel
// scale of inf at one channel: that channel is inf, and the dense model's 0 x inf in the
// reader is NaN).
bool keeps_finite(OpType t) {
  switch (t) {
    case OpType::Relu: case OpType::LeakyRelu: case OpType::PRelu: case OpType::Sigmoid: case OpType::Tanh:
    case OpType::Clip: case OpType::HardSigmoid: case OpType::HardSwish: case OpType::Abs: case OpType::Neg:
    case OpType::Erf: case OpType::Softsign: case OpType::Sin: case OpType::Cos: case OpType::Atan:
    case OpType::Floor: case OpType::Ceil: case OpType::Round: case OpType::Sign: case OpType::Add:
    case OpType::Sub: case OpType::Mul: case OpType::Max: case OpType::Min:
      return true;
    default:
      return false;
  }
}

bool may_make_nonfinite(const Graph& g, const std::vector<Step>& chain) {
  for (const Step& s : chain) {
    const Node& n = g.node(s.node);
    if (may_make_nonfinite(g, s.inner)) return true;
    if (n.op == OpType::BatchNormalization) {  // finite where every var + eps > 0 (its constants finite: below)
      const Tensor& var = g.value(n.inputs[4]).constant;
      const float eps = n.p<BatchNormParams>().epsilon;
      if (!std::all_of(var.data<float>(), var.data<float>() + var.numel(), [&](float e) { return e + eps > 0.f; }))
        return true;
    } else if (!keeps_finite(n.op)) {
      return true;
    }
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (static_cast<int>(i) == s.pos || n.inputs[i] == kNoValue) continue;
      const Value& c = g.value(n.inputs[i]);
      if (!c.is_constant() || c.dtype != DType::Float32) continue;
      const float* d = c.constant.data<float>();
      if (!std::all_of(d, d + c.constant.numel(), [](float e) { return std::isfinite(e); })) return true;
    }
  }
  return false;
}

// Per channel of a value m channels wide: whether every reader (there is at least one) has
// only zero weights for it (torch.nn.utils.prune.ln_structured on dim 1 zeroes input channels
// of a conv; the channel its producer computes for them is then never used).
std::vector<bool> unread_channels(const Graph& g, const std::vector<Reader>& readers, int64_t m) {
  std::vector<bool> un(static_cast<size_t>(m), !readers.empty());
  for (const Reader& r : readers) {
    if (may_make_nonfinite(g, r.chain)) return std::vector<bool>(static_cast<size_t>(m), false);
    const Node& rn = g.node(r.node);
    const Tensor& w = g.value(rn.inputs[1]).constant;
    if (w.dtype() != DType::Float32) return std::vector<bool>(static_cast<size_t>(m), false);
    const float* W = w.data<float>();
    if (rn.op == OpType::ConvTranspose) {  // input channel i: weight slab [i, ...]
      const int64_t per = w.numel() / std::max<int64_t>(w.shape()[0], 1);
      for (int64_t o = 0; o < m; ++o) {
        const float* slab = W + (r.offset + o) * per;
        if (std::any_of(slab, slab + per, [](float e) { return e != 0.f; })) un[static_cast<size_t>(o)] = false;
      }
    } else if (rn.op == OpType::Conv && !rn.p<ConvParams>().pre_shift.empty()) {
      // A fused shift: source channel i feeds the weight columns j with src[j] = i.
      const auto& src = rn.p<ConvParams>().pre_shift.src;
      const int64_t cm = w.shape()[0], ci = w.shape()[1], taps = w.numel() / std::max<int64_t>(cm * ci, 1);
      for (int64_t j = 0; j < ci; ++j) {
        const int64_t o = src[static_cast<size_t>(j)] - r.offset;
        if (o < 0 || o >= m || !un[static_cast<size_t>(o)]) continue;
        for (int64_t mo = 0; mo < cm && un[static_cast<size_t>(o)]; ++mo)
          for (int64_t t = 0; t < taps; ++t)
            if (W[(mo * ci + j) * taps + t] != 0.f) {
              un[static_cast<size_t>(o)] = false;
              break;
            }
      }
    } else if (rn.op == OpType::Conv && rn.p<ConvParams>().group > 1) {
      // Input channel i is column i % cg of the output channels of group i / cg.
      const int64_t groups = rn.p<ConvParams>().group, cm = w.shape()[0], cg = w.shape()[1];
      const int64_t og = cm / groups, taps = w.numel() / std::max<int64_t>(cm * cg, 1);
      for (int64_t o = 0; o < m; ++o) {
        const int64_t i = r.offset + o, j = i / cg;
        for (int64_t mo = j * og; mo < (j + 1) * og && un[static_cast<size_t>(o)]; ++mo)
          for (int64_t t = 0; t < taps; ++t)
            if (W[(mo * cg + i % cg) * taps + t] != 0.f) {
              un[static_cast<size_t>(o)] = false;
              break;
            }
      }
    } else if (rn.op == OpType::Conv || rn.op == OpType::SluiceGatedConv) {
      const int64_t cm = w.shape()[0], ci = w.shape()[1], taps = w.numel() / std::max<int64_t>(cm * ci, 1);
      // A gated conv's saliency reads the channel too: its predictor column [M, C] must be zero as well.
      const float* WG = rn.op == OpType::SluiceGatedConv ? g.value(rn.inputs[3]).constant.data<float>() : nullptr;
      for (int64_t o = 0; o < m; ++o) {
        const int64_t i = r.offset + o;
        for (int64_t mo = 0; mo < cm && un[static_cast<size_t>(o)]; ++mo) {
          if (WG && WG[mo * ci + i] != 0.f) un[static_cast<size_t>(o)] = false;
          for (int64_t t = 0; t < taps; ++t)
            if (W[(mo * ci + i) * taps + t] != 0.f) {
              un[static_cast<size_t>(o)] = false;
              break;
            }
        }
      }
    } else {  // Gemm head: row (or column) i of B
      const bool tb = rn.p<GemmParams>().trans_b;
      const int64_t k = tb ? w.shape()[1] : w.shape()[0], nout = tb ? w.shape()[0] : w.shape()[1];
      for (int64_t o = 0; o < m; ++o)
        for (int64_t i = (r.offset + o) * r.spread; i < (r.offset + o + 1) * r.spread && un[static_cast<size_t>(o)]; ++i)
          for (int64_t j = 0; j < nout && un[static_cast<size_t>(o)]; ++j)
            if ((tb ? W[j * k + i] : W[i * nout + j]) != 0.f) un[static_cast<size_t>(o)] = false;
    }
  }
  return un;
}

// The channels of `out` that are not dead but that no reader uses (unread_channels), when its
// readers can be rewritten at all (else empty); their count in n_unread.
std::vector<bool> live_unread_channels(const Graph& g, ValueId out, const std::vector<bool>& dead, int64_t& n_unread) {
  std::vector<Reader> rd;
  std::vector<ValueId> path;
  std::set<NodeId> seen;
  std::vector<bool> unread;
  if (collect_readers(g, out, {}, rd, path, seen).empty()) unread = unread_channels(g, rd, static_cast<int64_t>(dead.size()));
  // A channel whose filter or bias holds an inf or a NaN stays, zero weights in every reader or
  // not: it is inf or NaN at run time, and 0 x inf is NaN in the readers (ONNX Runtime's answer).
  const Node& p = g.node(g.value(out).producer);
  const auto m = static_cast<int64_t>(unread.size());
  for (int64_t o = 0; o < m; ++o)
    if (unread[static_cast<size_t>(o)]) unread[static_cast<size_t>(o)] = channel_finite(g, p, m, o);
  n_unread = 0;
  for (size_t o = 0; o < unread.size(); ++o) {
    unread[o] = unread[o] && !dead[o];
    n_unread += unread[o];
  }
  return unread;
}

// A shift's entries without those that read a removed channel (source src - offset is channel
// o of the producer's, remove[o]); the others read their source at its new index. dropped
// (if given): per entry, whether it went.
ShiftParams without_removed_sources(const ShiftParams& sp, int64_t offset, const std::vector<bool>& remove,
                                    std::vector<bool>* dropped) {
  const auto m = static_cast<int64_t>(remove.size());
  std::vector<int32_t> before(static_cast<size_t>(m + 1), 0);  // removed channels below o
  for (int64_t o = 0; o < m; ++o) before[static_cast<size_t>(o + 1)] = before[static_cast<size_t>(o)] + remove[static_cast<size_t>(o)];
  if (dropped) dropped->assign(sp.src.size(), false);
  ShiftParams kept = sp;
  kept.src.clear(), kept.dy.clear(), kept.dx.clear();
  for (size_t j = 0; j < sp.src.size(); ++j) {
    const int64_t src = sp.src[j], o = src - offset;
    if (o >= 0 && o < m && remove[static_cast<size_t>(o)]) {
      if (dropped) (*dropped)[j] = true;
      continue;
    }
    kept.src.push_back(static_cast<int32_t>(src - (o < 0 ? 0 : before[static_cast<size_t>(std::min(o, m))])));
    kept.dy.push_back(sp.dy[j]);
    kept.dx.push_back(sp.dx[j]);
  }
  return kept;
}

// Drops channels `remove` (of m, the producer's) from everything on `path` and from every
// reader's input, folding the removed channels' constants `value` into the readers' biases.
// Call after the producer's compaction.
void compact_readers(Graph& g, const std::vector<Reader>& readers, const std::vector<ValueId>& path, int64_t m,
                     const std::vector<bool>& remove, const std::vector<float>& value) {
  int64_t removed = 0;
  for (bool r : remove) removed += r;
  // Readers' input-channel counts before anything shrinks (more than m behind a Concat).
  std::vector<int64_t> totals;
  for (const Reader& r : readers) {
    const Node& rn = g.node(r.node);
    const Tensor& rw = g.value(rn.inputs[1]).constant;
    totals.push_back(rn.op == OpType::Conv                                      ? rw.shape()[1] * rn.p<ConvParams>().group
                     : rn.op == OpType::SluiceGatedConv                        ? rw.shape()[1]
                     : rn.op == OpType::ConvTranspose                          ? rw.shape()[0]
                     : (rn.p<GemmParams>().trans_b ? rw.shape()[1] : rw.shape()[0]));
  }
  // The per-channel constants of the ops on the way lose the removed channels too (each node
  // once: readers behind a branch share the steps before it).
  std::set<NodeId> compacted;
  std::function<void(const std::vector<Step>&)> compact_steps = [&](const std::vector<Step>& steps) {
    for (const Step& s : steps) {
      compact_steps(s.inner);
      if (s.scale_conv >= 0 && compacted.insert(s.node).second) {  // the scale's conv and values
        const int64_t total = g.value(g.node(s.scale_conv).outputs[0]).shape[1];
        std::vector<int32_t> keep_s;
        for (int64_t i = 0; i < total; ++i) {
          const int64_t o = i - s.offset;
          if (o < 0 || o >= m || !remove[static_cast<size_t>(o)]) keep_s.push_back(static_cast<int32_t>(i));
        }
        compact_producer(g, s.scale_conv, keep_s);
        for (ValueId sv : s.scale_vals) g.value(sv).shape[1] = static_cast<int64_t>(keep_s.size());
        continue;
      }
      if (s.per_channel == -1 || !compacted.insert(s.node).second) continue;
      std::vector<size_t> inputs{static_cast<size_t>(s.per_channel)};
      if (s.per_channel == kBatchNormParams) inputs = {1, 2, 3, 4};
      for (size_t in : inputs) {
        const ValueId cv = g.node(s.node).inputs[in];
        const Tensor& ct = g.value(cv).constant;
        const int64_t total = ct.numel();
        std::vector<float> kept;
        for (int64_t i = 0; i < total; ++i) {
          const int64_t o = i - s.offset;
          if (o < 0 || o >= m || !remove[static_cast<size_t>(o)]) kept.push_back(ct.data<float>()[i]);
        }
        Shape shape = ct.shape();
        shape[shape.size() == 3 || shape.size() == 1 ? 0 : 1] = static_cast<int64_t>(kept.size());
        Tensor t(DType::Float32, shape);
        std::copy(kept.begin(), kept.end(), t.data<float>());
        g.node(s.node).inputs[in] = new_constant(g, cv, std::move(t), "__pruned");
      }
    }
  };
  for (const Reader& r : readers) compact_steps(r.chain);
  std::set<ValueId> shrunk;
  for (ValueId v : path)
    if (shrunk.insert(v).second) {
      g.value(v).shape[1] -= removed;
      // A shift on the way (in place, from channel 0: collect_readers) loses the removed
      // channels' entries; the others keep theirs, in place again.
      if (const NodeId pid = g.value(v).producer; pid >= 0 && g.node(pid).op == OpType::SluiceShift) {
        ShiftParams& sp = g.node(pid).p<ShiftParams>();
        sp = without_removed_sources(sp, 0, remove, nullptr);
      }
    }
  for (size_t ri = 0; ri < readers.size(); ++ri) {
    const Reader& r = readers[ri];
    const int64_t total = totals[ri];
    if (g.node(r.node).op == OpType::Conv && !g.node(r.node).p<ConvParams>().pre_shift.empty()) {
      // A fused shift (a permutation of the channels, collect_readers): the weight column j that
      // reads a removed source channel goes (it is 0, and so is all the shift reads of it); the
      // others read their source at its new index. (At least one channel stays: so does its column.)
      std::vector<bool> remove_r;
      const ShiftParams kept = without_removed_sources(g.node(r.node).p<ConvParams>().pre_shift, r.offset, remove, &remove_r);
      std::vector<int32_t> keep_r;
      for (int64_t j = 0; j < total; ++j)
        if (!remove_r[static_cast<size_t>(j)]) keep_r.push_back(static_cast<int32_t>(j));
      compact_reader(g, r.node, total, keep_r, remove_r, std::vector<float>(static_cast<size_t>(total), 0.f));
      g.node(r.node).p<ConvParams>().pre_shift = kept;
      continue;
    }
    if (r.flat != kNoValue && shrunk.insert(r.flat).second) g.value(r.flat).shape[1] -= removed * r.spread;
    std::vector<int32_t> keep_r;
    std::vector<bool> remove_r(static_cast<size_t>(total), false);
    std::vector<float> value_r(static_cast<size_t>(total), 0.f);
    for (int64_t i = 0; i < total; ++i) {
      const int64_t o = i / r.spread - r.offset;
      if (o >= 0 && o < m && remove[static_cast<size_t>(o)]) {
        remove_r[static_cast<size_t>(i)] = true;
        value_r[static_cast<size_t>(i)] = value[static_cast<size_t>(o)];
      } else {
        keep_r.push_back(static_cast<int32_t>(i));
      }
    }
    compact_reader(g, r.node, total, keep_r, remove_r, value_r);
  }
}

// The readers' side of a planned removal (after the producer's own compaction), then the
// report. Returns the channels removed.
int finish_removal(Graph& g, const Removal& r, int64_t m, const PruneReport& report) {
  compact_readers(g, r.readers, r.path, m, r.remove, r.value);
  g.pruning.push_back(report);
  g.rebuild_links();
  return static_cast<int>(m - static_cast<int64_t>(r.keep.size()));
}

// A depthwise conv D behind a conv P whose output only D reads (MobileNet's expansion conv
// and its depthwise conv): a dead channel o of P that is the constant 0 makes D's input
// channel o zero, so D's output channel o is the constant act_D(b_D[o]) whatever D's filter.
// Both go: P's filter o, D's channel o (D stays depthwise with fewer groups), and D's
// readers' input channel o, with that constant folded into their biases where no padding
// reads it. Returns the channels removed; `tried` gets every D with such channels (inspect has
// an entry for them, removed or kept).
int prune_through_depthwise(Graph& g, std::set<NodeId>& tried) {
  g.rebuild_links();
  int removed_total = 0;
  for (NodeId did : g.topological_order()) {
    const Node& d = g.node(did);
    if (d.op != OpType::Conv || d.dead) continue;
    const auto& dp = d.p<ConvParams>();
    const Value& dw = g.value(d.inputs[1]);
    const Value& dx = g.value(d.inputs[0]);
    const int64_t c = dx.shape.size() == 4 ? dx.shape[1] : 0;
    const bool d_bias = d.inputs.size() > 2 && d.inputs[2] != kNoValue;
    if (c < 2 || dp.group != c || !dw.is_constant() || dw.shape.size() != 4 || dw.shape[0] != c || dw.shape[1] != 1 ||
        dp.fused_sum || !dp.pre_shift.empty() || (d_bias && !g.value(d.inputs[2]).is_constant()) || dx.is_output ||
        dx.consumers.size() != 1 || dx.producer < 0)
      continue;
    const NodeId pid = dx.producer;
    const Node& p = g.node(pid);
    if (p.op != OpType::Conv) continue;
    const auto& pp = p.p<ConvParams>();
    const bool p_bias = p.inputs.size() > 2 && p.inputs[2] != kNoValue;
    if (pp.group != 1 || pp.fused_sum || !pp.pre_shift.empty() || !g.value(p.inputs[1]).is_constant() ||
        (p_bias && !g.value(p.inputs[2]).is_constant()) || g.value(p.inputs[1]).constant.dtype() != DType::Float32)
      continue;
    const Tensor& pw = g.value(p.inputs[1]).constant;
    const int64_t per = pw.numel() / c;
    const float* PW = pw.data<float>();
    const float* PB = p_bias ? g.value(p.inputs[2]).constant.data<float>() : nullptr;
    const float* DB = d_bias ? g.value(d.inputs[2]).constant.data<float>() : nullptr;
    // Channel o of D is its bias (after D's activation) when P's channel o is zero, or when D's
    // own filter o is (then P's channel o, read by D alone, is unread).
    const float* DW = dw.constant.data<float>();
    const int64_t taps = dw.shape[2] * dw.shape[3];
    std::vector<bool> zero_in(static_cast<size_t>(c), false);
    int64_t n_zero = 0;
    for (int64_t o = 0; o < c; ++o) {
      bool zero = dead_value(pp.activation, PB ? PB[o] : 0.f) == 0.f;
      for (int64_t i = 0; i < per && zero; ++i) zero = PW[o * per + i] == 0.f;
      bool d_zero = true, d_finite = true;  // (a conv's weights are float32: shape inference checks)
      for (int64_t t = 0; t < taps && d_zero; ++t) d_zero = DW[o * taps + t] == 0.f;
      for (int64_t t = 0; t < taps; ++t) d_finite = d_finite && std::isfinite(DW[o * taps + t]);
      // 0 x inf is NaN (ONNX Runtime's answer) both ways: a zero channel into an inf tap, and an
      // inf or NaN filter of P (or its bias) into a zero filter of D.
      zero = zero && d_finite;
      d_zero = d_zero && channel_finite(g, p, c, o);
      zero_in[static_cast<size_t>(o)] = zero || d_zero;
      n_zero += zero || d_zero;
    }
    if (n_zero == 0) continue;
    tried.insert(did);
    PruneReport report{p.name + " through depthwise " + d.name, c, n_zero, 0, 0, ""};
    Removal r;
    if (!plan_dead_channels(g, d.outputs[0], zero_in, n_zero,
                            [&](int64_t o) { return dead_value(dp.activation, DB ? DB[o] : 0.f); }, report, r))
      continue;
    const auto& keep = r.keep;
    const auto k = static_cast<int64_t>(keep.size());
    compact_producer(g, pid, keep);
    // D: its own channels `keep` (filters, bias, groups), input and output.
    compact_producer(g, did, keep);
    Node& dn = g.node(did);
    dn.p<ConvParams>().group = k;
    dn.p<ConvParams>().dense_in = 1;  // a depthwise filter reads one channel: dense MACs stay the model's
    removed_total += finish_removal(g, r, c, report);
  }
  g.rebuild_links();
  return removed_total;
}


// An Add of two activations of one 4-D shape (no broadcast, no constant): a residual sum that
// no conv took as its fused sum.
bool residual_add(const Graph& g, const Node& n) {
  if (n.op != OpType::Add || n.inputs.size() != 2 || n.outputs.size() != 1) return false;
  const Value &a = g.value(n.inputs[0]), &b = g.value(n.inputs[1]), &y = g.value(n.outputs[0]);
  return !a.is_constant() && !b.is_constant() && a.dtype == DType::Float32 && a.shape.size() == 4 && a.shape == b.shape &&
         a.shape == y.shape && n.inputs[0] != n.inputs[1];
}

// A conv whose output channels this pass can rewrite as a writer into a residual group: group
// 1, constant weights and bias, an activation that keeps 0 at 0. "" or why not. (A shift fused
// into its input read moves input channels: its output channels go as any conv's.)
std::string group_writer_problem(const Graph& g, const Node& pn) {
  const auto& cp = pn.p<ConvParams>();
  if (cp.group != 1 || !g.value(pn.inputs[1]).is_constant() ||
      (pn.inputs.size() > 2 && pn.inputs[2] != kNoValue && !g.value(pn.inputs[2]).is_constant()) ||
      apply_activation(cp.activation, 0.f) != 0.f)
    return "written by conv " + pn.name + " in a form this pass does not rewrite";
  return "";
}

// Whether output channel o of conv n is exactly 0: filter and bias zero.
bool zero_filter(const Graph& g, const Node& n, int64_t o) {
  const Tensor& w = g.value(n.inputs[1]).constant;
  const int64_t per = w.numel() / w.shape()[0];
  const float* W = w.data<float>() + o * per;
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && g.value(n.inputs[2]).constant.data<float>()[o] != 0.f) return false;
  return std::all_of(W, W + per, [](float v) { return v == 0.f; });
}

// A member written by a channel Concat: each input must be a conv that only the Concat reads
// (its output channels then go with the member's), and `part` gets (conv, where its channels
// start, how many). "" or why not.
std::string concat_parts(const Graph& g, const Node& cat, const std::function<void(NodeId, int64_t, int64_t)>& part) {
  const int64_t axis = cat.p<AxisParams>().axis;
  if (axis != 1 && axis != -3) return "written by " + cat.name + ", a Concat on another axis";
  int64_t at = 0;
  for (ValueId in : cat.inputs) {
    if (std::count(cat.inputs.begin(), cat.inputs.end(), in) > 1)  // (its consumers list the Concat once)
      return "written by " + cat.name + ", a Concat that reads one conv's output twice";
    const Value& iv = g.value(in);
    const NodeId pid = iv.producer;
    if (pid < 0 || g.node(pid).op != OpType::Conv || iv.is_output || iv.consumers.size() != 1 || iv.shape.size() != 4)
      return "written by " + cat.name + ", a Concat of something other than convs only it reads";
    const Node& pn = g.node(pid);
    if (pn.p<ConvParams>().fused_sum) return "written by " + cat.name + ", a Concat of a conv with a fused residual sum";
    if (std::string why = group_writer_problem(g, pn); !why.empty()) return why;
    if (std::string why = nonfinite_weights(g, pn); !why.empty()) return why;
    part(pid, at, iv.shape[1]);
    at += iv.shape[1];
  }
  return "";
}

// Residual groups (design.md §6, the DepGraph idea): the values a residual stream passes
// through, tied channel by channel by the fused residual sums (a conv with fused_sum adds
// input 3 to its output, channel c to channel c), by Adds of two activations not fused into a
// conv, and by Relu/MaxPool. Channel c can go only if it is exactly zero in every member:
// every conv writing into the group has filter c and bias c zero (and its activation keeps 0
// at 0), and a member written by a channel Concat of convs (a + cat(conv1(a), conv2(a))) has
// it zero in the conv it comes from. Then it is removed from those convs' outputs and from
// every reader's input. Returns the channels removed.
int prune_groups(Graph& g) {
  g.rebuild_links();
  std::vector<ValueId> parent(g.values.size());
  for (size_t v = 0; v < parent.size(); ++v) parent[v] = static_cast<ValueId>(v);
  std::function<ValueId(ValueId)> find = [&](ValueId v) {
    while (parent[static_cast<size_t>(v)] != v) v = parent[static_cast<size_t>(v)] = parent[static_cast<size_t>(parent[static_cast<size_t>(v)])];
    return v;
  };
  auto unite = [&](ValueId a, ValueId b) { parent[static_cast<size_t>(find(a))] = find(b); };
  std::vector<NodeId> order = g.topological_order();
  std::vector<NodeId> sum_convs;  // and Adds of two activations, the same tie
  for (NodeId id : order) {
    const Node& n = g.node(id);
    if (n.op == OpType::Conv && n.p<ConvParams>().fused_sum && n.inputs.size() > 3) {
      unite(n.outputs[0], n.inputs[3]);
      sum_convs.push_back(id);
    } else if (residual_add(g, n)) {
      unite(n.outputs[0], n.inputs[0]);
      unite(n.outputs[0], n.inputs[1]);
      sum_convs.push_back(id);
    }
  }
  if (sum_convs.empty()) return 0;
  for (NodeId id : order) {  // pass-through ops join the group of their input, if it has one
    const Node& n = g.node(id);
    if ((n.op == OpType::Relu || n.op == OpType::MaxPool) && n.outputs.size() == 1 && g.value(n.inputs[0]).shape.size() == 4)
      unite(n.outputs[0], n.inputs[0]);
  }
  std::map<ValueId, std::vector<ValueId>> groups;
  for (NodeId id : sum_convs) groups[find(g.node(id).outputs[0])];
  for (size_t v = 0; v < g.values.size(); ++v)
    if (auto it = groups.find(find(static_cast<ValueId>(v))); it != groups.end()) it->second.push_back(static_cast<ValueId>(v));
  int removed_total = 0;
  for (auto& [root, members] : groups) {
    std::set<ValueId> in_group(members.begin(), members.end());
    std::vector<NodeId> writers;  // convs whose output is a member
    struct Part {
      NodeId conv;
      int64_t at, m;  // its channels are the member's [at, at + m)
    };
    std::vector<Part> parts;  // convs writing a member through a channel Concat
    std::vector<Reader> readers;
    std::vector<ValueId> path;
    std::string why;
    int64_t c = -1;
    for (ValueId v : members) {
      const Value& val = g.value(v);
      if (val.shape.size() != 4) { why = "a member is not 4-D"; break; }
      if (c >= 0 && val.shape[1] != c) { why = "members differ in channels"; break; }
      c = val.shape[1];
      if (val.is_output || val.is_input || val.is_constant()) { why = "a member is a graph input or output"; break; }
      const Node& pn = g.node(val.producer);
      if (pn.op == OpType::Conv) {
        why = group_writer_problem(g, pn);
        if (!why.empty()) break;
        writers.push_back(val.producer);
      } else if (pn.op == OpType::Concat) {
        why = concat_parts(g, pn, [&](NodeId conv, int64_t at, int64_t m) { parts.push_back({conv, at, m}); });
        if (!why.empty()) break;
      } else if (pn.op != OpType::Relu && pn.op != OpType::MaxPool && !residual_add(g, pn)) {
        why = "written by " + std::string(op_name(pn.op)) + " " + pn.name;
        break;
      }
      for (NodeId cid : val.consumers) {  // readers outside the group
        const Node& cn = g.node(cid);
        if (in_group.count(cn.outputs[0])) {  // a member's writer (fused sum or pass-through)
          // A conv writing into the group that also reads a member as its data input
          // (y + conv(y)) loses those input channels too.
          if (cn.op == OpType::Conv && cn.inputs[0] == v) {
            why = nonfinite_weights(g, cn);
            if (!why.empty()) break;
            readers.push_back({cid, {}, 0, 1, kNoValue, {}});
          }
          continue;
        }
        if (cn.op == OpType::Conv && cn.inputs[0] == v && cn.p<ConvParams>().group == 1 && cn.p<ConvParams>().pre_shift.empty() &&
            g.value(cn.inputs[1]).is_constant() &&
            !(cn.inputs.size() > 2 && cn.inputs[2] != kNoValue && !g.value(cn.inputs[2]).is_constant())) {
          bool other_use = false;
          for (size_t i = 1; i < cn.inputs.size(); ++i) other_use |= cn.inputs[i] == v;
          if (other_use) { why = "read by " + cn.name + " as a parameter"; break; }
          why = nonfinite_weights(g, cn);
          if (!why.empty()) break;
          readers.push_back({cid, {}, 0, 1, kNoValue, {}});
          continue;
        }
        if (cn.op == OpType::GlobalAveragePool) {
          const Value& pv = g.value(cn.outputs[0]);
          const Node* flat = pv.consumers.size() == 1 ? &g.node(pv.consumers[0]) : nullptr;
          const bool head = flat && !pv.is_output && flat->op == OpType::Flatten && flattens_channels(*flat) &&
                            !g.value(flat->outputs[0]).is_output && g.value(flat->outputs[0]).consumers.size() == 1 &&
                            gemm_head_problem(g, g.value(flat->outputs[0]).consumers[0], flat->outputs[0]).empty();
          if (head) {
            path.push_back(cn.outputs[0]);
            path.push_back(flat->outputs[0]);
            readers.push_back({g.value(flat->outputs[0]).consumers[0], {}, 0, 1, kNoValue, {}});
            continue;
          }
        }
        why = "read by " + std::string(op_name(cn.op)) + " " + cn.name;
        break;
      }
      if (!why.empty()) break;
    }
    if (writers.empty() && parts.empty()) continue;
    // Channels zero in every writer.
    std::vector<bool> dead(static_cast<size_t>(c), true);
    for (const Part& pt : parts)
      for (int64_t o = 0; o < pt.m; ++o)
        dead[static_cast<size_t>(pt.at + o)] = dead[static_cast<size_t>(pt.at + o)] && zero_filter(g, g.node(pt.conv), o);
    for (NodeId wid : writers)
      for (int64_t o = 0; o < c; ++o) dead[static_cast<size_t>(o)] = dead[static_cast<size_t>(o)] && zero_filter(g, g.node(wid), o);
    std::vector<int32_t> keep;
    std::vector<bool> remove(static_cast<size_t>(c), false);
    for (int64_t o = 0; o < c; ++o) {
      if (dead[static_cast<size_t>(o)]) remove[static_cast<size_t>(o)] = true;
      else keep.push_back(static_cast<int32_t>(o));
    }
    const int64_t k = static_cast<int64_t>(keep.size());
    std::string names;
    for (NodeId wid : writers) names += (names.empty() ? "" : ", ") + g.node(wid).name;
    for (const Part& pt : parts) names += (names.empty() ? "" : ", ") + g.node(pt.conv).name;
    PruneReport report{"residual group {" + names + "}", c, c - k, 0, 0, ""};
    if (k == c) continue;  // nothing dead in every member: the per-conv pass reports the rest
    std::vector<std::vector<int32_t>> part_keep(parts.size());
    for (size_t i = 0; i < parts.size() && why.empty(); ++i) {
      for (int32_t o : keep)
        if (o >= parts[i].at && o < parts[i].at + parts[i].m) part_keep[i].push_back(static_cast<int32_t>(o - parts[i].at));
      if (part_keep[i].empty()) why = "every channel of " + g.node(parts[i].conv).name + ", a part of a Concat in it, is dead";
    }
    if (!why.empty() || k == 0) {
      report.removed = 0;
      report.kept_reason = k == 0 ? "every channel is dead (the stream would vanish)" : why;
      g.pruning.push_back(report);
      continue;
    }
    // The model's input channels of every conv involved, before any of them shrinks a member
    // that another reads (a writer or part reading a member, y + conv(y)).
    auto note_dense_in = [&](NodeId id) {
      Node& n = g.node(id);
      if (n.op == OpType::Conv && n.p<ConvParams>().dense_in == 0) n.p<ConvParams>().dense_in = g.value(n.inputs[0]).shape[1];
    };
    for (NodeId wid : writers) note_dense_in(wid);
    for (const Part& pt : parts) note_dense_in(pt.conv);
    for (const Reader& r : readers) note_dense_in(r.node);
    for (NodeId wid : writers) compact_producer(g, wid, keep);
    for (size_t i = 0; i < parts.size(); ++i) compact_producer(g, parts[i].conv, part_keep[i]);
    for (ValueId v : members) g.value(v).shape[1] = k;
    for (ValueId v : path) g.value(v).shape[1] = k;
    const std::vector<float> zeros(static_cast<size_t>(c), 0.f);
    for (const Reader& r : readers) compact_reader(g, r.node, c, keep, remove, zeros);
    report.removed = c - k;
    g.pruning.push_back(report);
    removed_total += static_cast<int>(c - k);
    g.rebuild_links();
  }
  g.rebuild_links();
  return removed_total;
}

// A BatchNormalization left standing because its input has other readers (pre-activation
// ResNets and DenseNets, the network-slimming paper's own architectures, put BN -> ReLU before
// each conv, reading the residual stream or the concatenation): a channel whose BN scale is 0
// outputs its shift everywhere, which is a dead channel like a zero filter's. The BN keeps
// computing only the other channels (BatchNormParams::channels) and its readers lose it, the
// constant folded into their biases where no padding reads it.
int prune_after_batch_norm(Graph& g) {
  g.rebuild_links();
  int removed_total = 0;
  for (NodeId bid : g.topological_order()) {
    const Node& b = g.node(bid);
    if (b.op != OpType::BatchNormalization || b.dead || !b.p<BatchNormParams>().channels.empty()) continue;
    bool params_const = true;
    for (size_t i = 1; i <= 4; ++i) params_const = params_const && g.value(b.inputs[i]).is_constant();
    if (!params_const || g.value(b.inputs[0]).shape.size() != 4) continue;
    const float eps = b.p<BatchNormParams>().epsilon;
    const float *S = g.value(b.inputs[1]).constant.data<float>(), *B = g.value(b.inputs[2]).constant.data<float>();
    const float *M = g.value(b.inputs[3]).constant.data<float>(), *V = g.value(b.inputs[4]).constant.data<float>();
    const int64_t m = g.value(b.inputs[1]).shape[0];
    std::vector<bool> dead(static_cast<size_t>(m));
    std::vector<float> shift(static_cast<size_t>(m));
    int64_t n_dead = 0;
    for (int64_t o = 0; o < m; ++o) {  // the arithmetic of the kernel: y = a x + (B - a M), a = S / sqrt(V + eps)
      const float a = S[o] / std::sqrt(V[o] + eps);
      dead[static_cast<size_t>(o)] = a == 0.f;
      shift[static_cast<size_t>(o)] = B[o] - a * M[o];
      n_dead += a == 0.f;
    }
    if (n_dead == 0) continue;
    PruneReport report{b.name, m, n_dead, 0, 0, ""};
    Removal r;
    if (!plan_dead_channels(g, b.outputs[0], dead, n_dead, [&](int64_t o) { return shift[static_cast<size_t>(o)]; }, report,
                            r))
      continue;
    g.node(bid).p<BatchNormParams>().channels = r.keep;
    g.value(g.node(bid).outputs[0]).shape[1] = static_cast<int64_t>(r.keep.size());
    removed_total += finish_removal(g, r, m, report);
  }
  return removed_total;
}

}  // namespace

int prune_channels(Graph& g) {
  int removed_total = prune_groups(g);
  std::set<NodeId> through_depthwise;
  removed_total += prune_through_depthwise(g, through_depthwise);
  removed_total += prune_after_batch_norm(g);
  g.rebuild_links();
  for (NodeId pid : g.topological_order()) {
    if (g.node(pid).op != OpType::Conv) continue;
    const Node& p = g.node(pid);
    const auto& pp = p.p<ConvParams>();
    if (!g.value(p.inputs[1]).is_constant()) continue;
    if (p.inputs.size() > 2 && p.inputs[2] != kNoValue && !g.value(p.inputs[2]).is_constant()) continue;
    const Tensor& w = g.value(p.inputs[1]).constant;
    if (w.dtype() != DType::Float32 || w.numel() == 0) continue;
    const int64_t m = w.shape()[0], per = w.numel() / m;
    const float* W = w.data<float>();
    std::vector<bool> dead(static_cast<size_t>(m));
    int64_t n_dead = 0;
    for (int64_t o = 0; o < m; ++o) {
      bool zero = true;
      for (int64_t i = 0; i < per && zero; ++i) zero = W[o * per + i] == 0.f;
      dead[static_cast<size_t>(o)] = zero;
      n_dead += zero;
    }
    // A depthwise conv's zero filters go with the conv before it (prune_through_depthwise), where
    // they can; another grouped conv's as many from every group (plan_removal).
    const bool depthwise = pp.group > 1 && w.shape()[1] == 1 && m == pp.group;  // (one filter per input channel)
    if (pp.group != 1 && (depthwise || !pp.pre_shift.empty() || m % pp.group != 0)) {
      if (n_dead > 0 && !through_depthwise.count(pid))  // (tried with the conv before it: that entry says why it stayed)
        g.pruning.push_back({p.name, m, n_dead, 0, 0,
                             "a grouped conv (group " + std::to_string(pp.group) +
                                 "): its own zero filters stay (a depthwise conv's go together with the conv before it, "
                                 "where that conv's channels can)"});
      continue;
    }
    // Live channels that no reader uses also go (when the readers can be rewritten at all).
    int64_t n_unread = 0;
    const std::vector<bool> unread = pp.fused_sum ? std::vector<bool>{} : live_unread_channels(g, p.outputs[0], dead, n_unread);
    if (n_dead + n_unread == 0) continue;
    PruneReport report{p.name, m, n_dead, 0, 0, ""};
    report.unread = n_unread;
    if (pp.fused_sum) {  // its output is a residual sum: the channel is dead only if dead in the other operand too
      report.kept_reason = "its output is a residual Add's sum: dead here but not in every member of its residual group";
      g.pruning.push_back(report);
      continue;
    }
    std::vector<bool> gone = dead;
    for (size_t o = 0; o < unread.size(); ++o) gone[o] = gone[o] || unread[o];
    const float* B = p.inputs.size() > 2 && p.inputs[2] != kNoValue ? g.value(p.inputs[2]).constant.data<float>() : nullptr;
    Removal r;
    if (!plan_dead_channels(g, p.outputs[0], gone, n_dead + n_unread,
                            [&](int64_t o) { return dead_value(pp.activation, B ? B[o] : 0.f); }, report, r, unread,
                            pp.group))
      continue;
    compact_producer(g, pid, r.keep);
    removed_total += finish_removal(g, r, m, report);
  }
  // Linear layers: output features whose weight column is all zero.
  for (NodeId pid : g.topological_order()) {
    const Node& p = g.node(pid);
    if (p.dead || p.op != OpType::Gemm) continue;
    const Value& wv = g.value(p.inputs[1]);
    if (!wv.is_constant() || wv.dtype != DType::Float32 || wv.shape.size() != 2) continue;
    const auto& gp = p.p<GemmParams>();
    const Tensor& w = g.value(p.inputs[1]).constant;
    const int64_t m = gp.trans_b ? w.shape()[0] : w.shape()[1], kin = gp.trans_b ? w.shape()[1] : w.shape()[0];
    const float* W = w.data<float>();
    std::vector<bool> dead(static_cast<size_t>(m));
    int64_t n_dead = 0;
    for (int64_t o = 0; o < m; ++o) {
      bool zero = true;
      for (int64_t i = 0; i < kin && zero; ++i) zero = (gp.trans_b ? W[o * kin + i] : W[i * m + o]) == 0.f;
      dead[static_cast<size_t>(o)] = zero;
      n_dead += zero;
    }
    if (const std::string why = gemm_producer_problem(g, p); !why.empty()) {
      if (n_dead > 0) {
        PruneReport report{p.name, m, n_dead, 0, 0, why};
        report.features = true;
        g.pruning.push_back(report);
      }
      continue;
    }
    int64_t n_unread = 0;
    const std::vector<bool> unread = live_unread_channels(g, p.outputs[0], dead, n_unread);
    if (n_dead + n_unread == 0) continue;
    PruneReport report{p.name, m, n_dead, 0, 0, ""};
    report.unread = n_unread;
    report.features = true;
    std::vector<bool> gone = dead;
    for (size_t o = 0; o < unread.size(); ++o) gone[o] = gone[o] || unread[o];
    const Tensor* c = p.inputs.size() > 2 && p.inputs[2] != kNoValue ? &g.value(p.inputs[2]).constant : nullptr;
    const auto constant = [&](int64_t o) {
      const float b = c ? c->data<float>()[c->numel() == 1 ? 0 : o] : 0.f;
      return dead_value(gp.activation, gp.beta * b);
    };
    Removal r;
    if (!plan_dead_channels(g, p.outputs[0], gone, n_dead + n_unread, constant, report, r, unread)) continue;
    compact_gemm_producer(g, pid, r.keep);
    removed_total += finish_removal(g, r, m, report);
  }
  g.rebuild_links();
  return removed_total;
}

}  // namespace sluice::graph::passes
