#include <algorithm>
#include <cmath>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// The activation `n` computes, if it can run as a conv/gemm epilogue.
std::optional<FusedActivation> as_epilogue(const Graph& g, const Node& n) {
  switch (n.op) {
    case OpType::Relu: return FusedActivation{Activation::Relu};
    case OpType::LeakyRelu: return FusedActivation{Activation::LeakyRelu, n.p<AlphaBetaParams>().alpha};
    case OpType::HardSwish: return FusedActivation{Activation::HardSwish};
    case OpType::Clip: {
      float lo = 0.f, hi = 0.f;
      if (!clip_bounds(g, n, lo, hi)) return std::nullopt;
      return FusedActivation{Activation::Clip, lo, hi};
    }
    default: return std::nullopt;
  }
}

FusedActivation* epilogue_slot(const Graph& g, Node& n) {
  // (A float64 Gemm, as torch exports a Linear behind a double tensor, runs on the reference
  // kernel in double, with no epilogue.)
  if (n.outputs.empty() || g.value(n.outputs[0]).dtype != DType::Float32) return nullptr;
  if (n.op == OpType::Conv) return &n.p<ConvParams>().activation;
  // A gated conv takes one only after a fused residual sum (its own ReLU is part of the gate).
  if (n.op == OpType::SluiceGatedConv && n.p<GatedConvParams>().fused_sum) return &n.p<GatedConvParams>().activation;
  if (n.op == OpType::Gemm) return &n.p<GemmParams>().activation;
  return nullptr;
}

// The one activation that computes `second(first(x))`, where there is one: a Relu followed by
// a Clip that stays above 0 (how torch exports F.relu6 at some versions: Relu, then Clip(0, 6)),
// a Relu twice, a Clip followed by a Relu.
std::optional<FusedActivation> compose(const FusedActivation& first, const FusedActivation& second) {
  // A Clip with min > max is legal ONNX (every value becomes max), but not an epilogue oneDNN
  // takes: it stays a node.
  if (second.kind == Activation::Clip && second.alpha > second.beta) return std::nullopt;
  if (first.kind == Activation::None) return second;
  if (first.kind == Activation::Relu && second.kind == Activation::Relu) return first;
  if (first.kind == Activation::Relu && second.kind == Activation::Clip && second.alpha >= 0.f && second.alpha <= second.beta)
    return second;
  if (first.kind == Activation::Clip && second.kind == Activation::Relu && first.alpha <= first.beta)
    return FusedActivation{Activation::Clip, std::max(first.alpha, 0.f), std::max(first.beta, 0.f)};
  return std::nullopt;
}

// A pad of at least the (dilated) kernel's extent on some side: oneDNN 2.6's brgconv with a
// sum post-op crashed on such a conv (3x3, pads [4, 1, 2, 1]) or, without a later Relu, gave
// sums off by ~2.6 (oneDNN issue 5942), so the residual Add stays a node there.
bool pads_reach_kernel(const ConvParams& p) {
  const size_t rank = p.kernel_shape.size();
  for (size_t i = 0; i < rank && i < p.pads.size() / 2; ++i) {
    const int64_t d = i < p.dilations.size() ? p.dilations[i] : 1, extent = (p.kernel_shape[i] - 1) * d + 1;
    if (p.pads[i] >= extent || p.pads[i + rank] >= extent) return true;
  }
  return false;
}

}  // namespace

int fuse_residual_add(Graph& g) {
  g.rebuild_links();
  int fused = 0;
  for (NodeId id : g.topological_order()) {
    Node& add = g.node(id);
    if (add.op != OpType::Add) continue;
    const Shape& out_shape = g.value(add.outputs[0]).shape;
    for (int side = 0; side < 2; ++side) {
      ValueId conv_out = add.inputs[side], other = add.inputs[1 - side];
      NodeId cid = producer_of_type(g, conv_out, OpType::Conv);
      if (cid < 0) cid = producer_of_type(g, conv_out, OpType::SluiceGatedConv);
      if (cid < 0 || !single_use(g, conv_out) || conv_out == other) continue;
      const Value& ov = g.value(other);
      if (ov.shape != out_shape || g.value(conv_out).shape != out_shape || ov.dtype != DType::Float32) continue;
      Node& conv = g.node(cid);
      if (conv.op == OpType::SluiceGatedConv) {  // gated output + dense shortcut (FBS ResNet)
        auto& gp = conv.p<GatedConvParams>();
        if (gp.fused_sum || gp.activation.kind != Activation::None) continue;
        conv.inputs.resize(kGatedSumInput + 1, kNoValue);
        conv.inputs[kGatedSumInput] = other;
        gp.fused_sum = true;
        conv.outputs[0] = add.outputs[0];
        add.dead = true;
        ++fused;
        g.rebuild_links();
        break;
      }
      auto& cp = conv.p<ConvParams>();
      if (cp.fused_sum || cp.activation.kind != Activation::None || pads_reach_kernel(cp)) continue;
      // The other operand must be computed before the conv runs: it is if it is not
      // downstream of the conv, which holds because the conv's output has one use.
      conv.inputs.resize(4, kNoValue);
      conv.inputs[3] = other;
      cp.fused_sum = true;
      conv.outputs[0] = add.outputs[0];
      add.dead = true;
      ++fused;
      g.rebuild_links();
      break;
    }
  }
  g.rebuild_links();
  return fused;
}

int fuse_activations(Graph& g) {
  g.rebuild_links();
  int fused = 0;
  // SiLU written as y * sigmoid(y) (EfficientNet's every conv): the conv's Swish epilogue, where
  // y and sigmoid(y) have no other readers. Three passes over the map become none. Likewise
  // hardswish written as y * HardSigmoid(y; 1/6, 0.5) (torch's export below opset 14, every
  // MobileNetV3 block): the HardSwish epilogue (and static pruning then goes through the
  // depthwise conv after it, as with opset 14's HardSwish op).
  for (NodeId id : g.topological_order()) {
    Node& mul = g.node(id);
    if (mul.dead || mul.op != OpType::Mul || mul.inputs.size() != 2 || mul.inputs[0] == mul.inputs[1]) continue;
    for (int side = 0; side < 2; ++side) {
      const ValueId y = mul.inputs[side], s = mul.inputs[1 - side];
      const NodeId sid = g.value(s).producer;
      if (sid < 0 || g.node(sid).inputs.empty() || g.node(sid).inputs[0] != y || !single_use(g, s)) continue;
      Activation kind = Activation::None;
      if (g.node(sid).op == OpType::Sigmoid) kind = Activation::Swish;
      if (g.node(sid).op == OpType::HardSigmoid) {
        const auto& hp = g.node(sid).p<AlphaBetaParams>();
        if (std::abs(hp.alpha - 1.f / 6.f) <= 1e-7f && hp.beta == 0.5f) kind = Activation::HardSwish;
      }
      if (kind == Activation::None) continue;
      const Value& yv = g.value(y);
      if (yv.is_output || yv.consumers.size() != 2 || g.value(mul.outputs[0]).shape != yv.shape) continue;
      const NodeId pid = yv.producer;
      if (pid < 0) continue;
      Node& prod = g.node(pid);
      FusedActivation* slot = epilogue_slot(g, prod);
      if (!slot || slot->kind != Activation::None) continue;
      slot->kind = kind;
      prod.outputs[0] = mul.outputs[0];
      g.node(sid).dead = true;
      mul.dead = true;
      ++fused;
      g.rebuild_links();
      break;
    }
  }
  for (NodeId id : g.topological_order()) {
    Node& act = g.node(id);
    auto epi = as_epilogue(g, act);
    if (!epi) continue;
    NodeId pid = g.value(act.inputs[0]).producer;
    if (pid < 0 || !single_use(g, act.inputs[0])) continue;
    Node& prod = g.node(pid);
    FusedActivation* slot = epilogue_slot(g, prod);
    // A gated conv without a residual sum takes a Clip (relu6 after the gate) into its own
    // activation: with_activation computes Clip, for the active and the suppressed channels.
    if (!slot && prod.op == OpType::SluiceGatedConv && g.value(prod.outputs[0]).dtype == DType::Float32 &&
        epi->kind == Activation::Clip)
      slot = &prod.p<GatedConvParams>().activation;
    if (!slot) continue;
    const auto both = compose(*slot, *epi);
    if (!both) continue;
    *slot = *both;
    prod.outputs[0] = act.outputs[0];
    act.dead = true;
    ++fused;
    g.rebuild_links();
  }
  g.rebuild_links();
  return fused;
}

}  // namespace sluice::graph::passes
