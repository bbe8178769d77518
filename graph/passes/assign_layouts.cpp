// Layout assignment. oneDNN's fast convolutions want NHWC activations (NCHW falls back
// to slower paths), so convolutions run NHWC, and so do the ops around them whose
// semantics do not care about memory order (elementwise, broadcast with per-channel
// operands, pooling, concat/split, batch-norm; a spatial ReduceMean becomes a global average
// pool first). A reorder is inserted only where a
// consumer needs the other order. Values with H*W == 1 or C == 1 have the same bytes
// in both layouts and never need one.
#include <algorithm>
#include <map>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"
#include "ops/kernel.h"

namespace sluice::graph::passes {

namespace {

enum class Kind { Conv, Elementwise, Pool, Axis, ChannelAffine, Other };

Kind kind_of(OpType t) {
  switch (t) {
    case OpType::Conv: case OpType::SluiceGatedConv: return Kind::Conv;
    case OpType::Abs: case OpType::Neg: case OpType::Relu: case OpType::Sigmoid: case OpType::Tanh: case OpType::Softplus:
    case OpType::Sqrt: case OpType::LeakyRelu: case OpType::HardSigmoid: case OpType::HardSwish: case OpType::Clip:
    case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::Max: case OpType::Min:
    case OpType::PRelu:
      return Kind::Elementwise;
    case OpType::MaxPool: case OpType::AveragePool: case OpType::GlobalAveragePool: case OpType::GlobalMaxPool:
    case OpType::SluiceShift:
      return Kind::Pool;
    case OpType::Concat: case OpType::Split: return Kind::Axis;
    case OpType::BatchNormalization: return Kind::ChannelAffine;
    default: return Kind::Other;
  }
}

Shape pad_to_4d(const Shape& s) {
  Shape r(4 - std::min<size_t>(4, s.size()), 1);
  r.insert(r.end(), s.begin(), s.end());
  return r;
}

// Whether NCHW and NHWC byte orders of this (4-D padded) shape differ.
bool orders_differ(const Shape& s) {
  if (s.size() > 4) return true;
  Shape p = pad_to_4d(s);
  return p[1] > 1 && (p[2] > 1 || p[3] > 1);
}

bool is_activation(const Value& v) { return !v.is_constant() && v.dtype == DType::Float32 && v.shape.size() == 4; }

class LayoutAssigner {
 public:
  explicit LayoutAssigner(Graph& g) : g_(g) {}

  int run() {
    spatial_means_to_pools();
    g_.rebuild_links();
    for (NodeId id : g_.topological_order()) assign(id);
    fix_outputs();
    g_.rebuild_links();
    return reorders_;
  }

 private:
  // A Gather of channels (constant indices on axis 1) is an axis op like Concat.
  // A Resize of H and W alone (the fast kernel's) is a spatial op like a pool; but one that
  // writes a model output stays NCHW, so that the reorder is the (smaller, for an upsampling)
  // input's.
  Kind kind_of_node(const Node& n) const {
    if (n.op == OpType::Gather && ops::is_channel_gather(g_, n)) return Kind::Axis;
    // A strided 2-D ConvTranspose runs on NHWC: as a 1x1 conv where the stride is its kernel,
    // else split into one conv per output phase.
    if (n.op == OpType::ConvTranspose &&
        (ops::stride_kernel_deconv_applies(g_, n) || ops::phase_split_deconv_applies(g_, n)))
      return Kind::Conv;
    if (n.op == OpType::DepthToSpace && ops::nhwc_depth_to_space_applies(g_, n)) return Kind::Pool;  // (spatial, per pixel)
    if ((n.op == OpType::Resize || n.op == OpType::Upsample) && ops::fast_resize_applies(g_, n) &&
        !g_.value(n.outputs[0]).is_output)
      return Kind::Pool;
    return kind_of(n.op);
  }

  // x.mean((2, 3)) (ReduceMean over H and W of a 4-D float x) is a GlobalAveragePool, then a
  // Flatten when it drops the axes: ops that run on NHWC, where the ReduceMean took a reorder
  // and the generic reduction (0.2 ms of ShuffleNetV2's 2 ms).
  void spatial_means_to_pools() {
    for (NodeId id = 0; id < static_cast<NodeId>(g_.nodes.size()); ++id) {
      Node& n = g_.node(id);
      if (n.dead || n.op != OpType::ReduceMean || n.inputs.empty() || n.outputs.size() != 1) continue;
      const Value& x = g_.value(n.inputs[0]);
      const ReduceParams rp = n.p<ReduceParams>();
      if (!is_activation(x) || rp.axes != std::vector<int64_t>{2, 3}) continue;
      const Shape pooled_shape{x.shape[0], x.shape[1], 1, 1};
      const ValueId y = n.outputs[0];
      n.op = OpType::GlobalAveragePool;
      n.params = NoParams{};
      n.inputs.resize(1);  // ReduceMean's axes input (opset 18), if any
      if (rp.keepdims) continue;
      Value pooled = g_.value(y);
      pooled.name += "__pooled";
      pooled.shape = pooled_shape;
      pooled.is_input = pooled.is_output = false;
      pooled.consumers.clear();
      const ValueId pv = g_.add_value(std::move(pooled));
      g_.node(id).outputs = {pv};
      Node f;
      f.op = OpType::Flatten;
      f.name = g_.node(id).name + "__flatten";
      f.inputs = {pv};
      f.outputs = {y};
      f.params = AxisParams{1};
      g_.add_node(std::move(f));
    }
  }

  bool wants_nhwc(const Node& n) {
    Kind k = kind_of_node(n);
    if (k == Kind::Other) return false;
    if (n.inputs.empty() || n.inputs[0] == kNoValue || !is_activation(g_.value(n.inputs[0]))) {
      if (k != Kind::Elementwise) return false;
    }
    for (ValueId o : n.outputs)
      if (o != kNoValue && g_.value(o).shape.size() != 4) return false;
    bool any_nhwc = k == Kind::Conv;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      ValueId in = n.inputs[i];
      if (in == kNoValue) continue;
      const Value& v = g_.value(in);
      if (k == Kind::Conv || k == Kind::ChannelAffine) {
        if (i == 0 && !is_activation(v)) return false;
        // Weights, bias, BN statistics: the fast kernels pack them once, so they must be constants.
        const bool gated = n.op == OpType::SluiceGatedConv;
        if (i == 0 && k == Kind::ChannelAffine && v.layout == Layout::NHWC && orders_differ(v.shape)) any_nhwc = true;
        const bool gated_sum = gated && i == kGatedSumInput;  // a residual operand, like input 3 of a conv
        if ((k == Kind::Conv ? (i == 1 || i == 2 || (gated && i >= 3 && !gated_sum)) : i >= 1) && !v.is_constant())
          return false;
        if (gated_sum && !is_activation(v)) return false;
        if (i == 3 && k == Kind::Conv && !gated && !is_activation(v)) return false;  // fused sum operand
        continue;
      }
      if (k == Kind::Elementwise && n.op == OpType::Clip && i > 0) continue;  // scalar bounds
      if (v.is_constant()) {
        if (v.shape.size() > 4) return false;
        continue;
      }
      if (v.shape.size() == 4) {
        if (v.layout == Layout::NHWC && orders_differ(v.shape)) any_nhwc = true;
        continue;
      }
      if (orders_differ(v.shape)) return false;  // a computed lower-rank operand we cannot re-lay cheaply
    }
    return any_nhwc;
  }

  ValueId reordered(ValueId v, Layout to) {
    auto& cache = to == Layout::NHWC ? to_nhwc_ : to_nchw_;
    if (auto it = cache.find(v); it != cache.end()) return it->second;
    Value nv = g_.value(v);
    nv.name += to == Layout::NHWC ? "__nhwc" : "__nchw";
    nv.layout = to;
    nv.is_input = nv.is_output = false;
    nv.consumers.clear();
    ValueId id = g_.add_value(std::move(nv));
    Node r;
    r.op = OpType::SluiceReorder;
    r.name = g_.value(v).name + (to == Layout::NHWC ? "__to_nhwc" : "__to_nchw");
    r.inputs = {v};
    r.outputs = {id};
    r.params = ReorderParams{to == Layout::NHWC ? Layout::NCHW : Layout::NHWC, to};
    r.layout = to;
    g_.add_node(std::move(r));
    ++reorders_;
    cache[v] = id;
    return id;
  }

  // A constant in NHWC byte order, 4-D logical shape.
  ValueId transposed_constant(ValueId v) {
    if (auto it = const_nhwc_.find(v); it != const_nhwc_.end()) return it->second;
    Value nv = g_.value(v);
    Shape s = pad_to_4d(nv.shape);
    Tensor src = nv.constant.reshaped(s);
    Tensor dst(src.dtype(), s);
    const size_t es = dtype_size(src.dtype());
    const auto* a = static_cast<const std::byte*>(src.raw());
    auto* b = static_cast<std::byte*>(dst.raw());
    for (int64_t n = 0; n < s[0]; ++n)
      for (int64_t c = 0; c < s[1]; ++c)
        for (int64_t h = 0; h < s[2]; ++h)
          for (int64_t w = 0; w < s[3]; ++w)
            std::copy_n(a + (((n * s[1] + c) * s[2] + h) * s[3] + w) * es, es,
                        b + (((n * s[2] + h) * s[3] + w) * s[1] + c) * es);
    nv.name += "__nhwc";
    nv.shape = s;
    nv.constant = dst;
    nv.layout = Layout::NHWC;
    nv.consumers.clear();
    ValueId id = g_.add_value(std::move(nv));
    const_nhwc_[v] = id;
    return id;
  }

  void assign(NodeId id) {
    const bool nhwc = wants_nhwc(g_.node(id));
    Kind k = kind_of_node(g_.node(id));
    for (size_t i = 0; i < g_.node(id).inputs.size(); ++i) {
      ValueId in = g_.node(id).inputs[i];
      if (in == kNoValue) continue;
      const Value& v = g_.value(in);
      ValueId repl = in;
      if (nhwc) {
        if (k == Kind::Conv && (i == 1 || i == 2)) continue;        // weights/bias: the kernel packs them
        if (g_.node(id).op == OpType::SluiceGatedConv && i >= 3 && i != kGatedSumInput) continue;  // gate weights, beta
        if (k == Kind::ChannelAffine && i > 0) continue;              // per-channel vectors
        if (k == Kind::Elementwise && g_.node(id).op == OpType::Clip && i > 0) continue;
        if (v.is_constant()) {
          if (orders_differ(v.shape)) repl = transposed_constant(in);
        } else if (v.shape.size() == 4 && v.layout == Layout::NCHW && orders_differ(v.shape)) {
          repl = reordered(in, Layout::NHWC);
        }
      } else if (!v.is_constant() && v.layout == Layout::NHWC && orders_differ(v.shape)) {
        repl = reordered(in, Layout::NCHW);
      }
      g_.node(id).inputs[i] = repl;
    }
    Node& n = g_.node(id);
    n.layout = nhwc ? Layout::NHWC : Layout::NCHW;
    for (ValueId o : n.outputs)
      if (o != kNoValue) g_.value(o).layout = n.layout;
  }

  void fix_outputs() {
    bool removed = false;
    for (ValueId& out : g_.outputs) {
      Value& v = g_.value(out);
      if (v.layout != Layout::NHWC || !orders_differ(v.shape) || v.is_constant()) {
        v.layout = Layout::NCHW;  // same bytes
        continue;
      }
      // Producer writes an internal NHWC value; a reorder writes the output itself.
      g_.rebuild_links();
      Value inner = v;
      inner.name += "__nhwc";
      inner.is_output = false;
      inner.consumers.clear();
      ValueId inner_id = g_.add_value(std::move(inner));
      replace_uses(g_, out, inner_id);
      for (ValueId& o : g_.node(g_.value(out).producer).outputs)
        if (o == out) o = inner_id;
      g_.value(out).layout = Layout::NCHW;
      Node r;
      r.op = OpType::SluiceReorder;
      r.name = g_.value(out).name + "__to_nchw";
      r.inputs = {inner_id};
      r.outputs = {out};
      r.params = ReorderParams{Layout::NHWC, Layout::NCHW};
      g_.add_node(std::move(r));
      ++reorders_;
      // An NCHW copy made earlier for the output's NCHW readers is the same data: they read
      // the output itself instead, and that reorder goes.
      if (auto it = to_nchw_.find(out); it != to_nchw_.end()) {
        g_.rebuild_links();
        replace_uses(g_, it->second, out);
        g_.node(g_.value(it->second).producer).dead = true;
        to_nchw_.erase(it);
        --reorders_;
        removed = true;
      }
    }
    if (removed) g_.remove_dead_nodes();
  }

  Graph& g_;
  std::map<ValueId, ValueId> to_nhwc_, to_nchw_, const_nhwc_;
  int reorders_ = 0;
};

}  // namespace

int assign_layouts(Graph& g) { return LayoutAssigner(g).run(); }

}  // namespace sluice::graph::passes
