#include <algorithm>
#include <cstring>
#include <optional>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// A Transpose's permutation over `rank` axes (none given: reversed).
std::vector<int64_t> perm_of(const Node& n, size_t rank) {
  std::vector<int64_t> p = n.p<TransposeParams>().perm;
  if (p.empty())
    for (size_t i = 0; i < rank; ++i) p.push_back(static_cast<int64_t>(rank - 1 - i));
  return p;
}

bool is_identity_perm(const std::vector<int64_t>& p) {
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != static_cast<int64_t>(i)) return false;
  return true;
}

// A node whose output is its input, element for element: Identity and Dropout, and the no-op
// forms PyTorch's dynamo exporter writes (x[:, :] as Slices over the whole extent, a Reshape or
// Expand to the same shape, a Cast to the same dtype; TorchScript's zero Pad before an
// avg_pool2d). A Slice over the whole extent with a step of -1 reverses, so every step must be
// 1; a Pad that keeps the shape may still move the data (-1 before, +1 after), so every amount
// must be 0. A Transpose by the identity permutation.
bool is_identity(const Graph& g, const Node& n) {
  if (n.op == OpType::Identity || n.op == OpType::Dropout) return true;
  if (n.inputs.empty() || n.inputs[0] == kNoValue || n.outputs.size() != 1) return false;
  const Value& x = g.value(n.inputs[0]);
  const Value& y = g.value(n.outputs[0]);
  if (!x.shape_known || !y.shape_known || x.shape != y.shape || x.dtype != y.dtype) return false;
  switch (n.op) {
    case OpType::Cast: case OpType::CastLike: case OpType::Reshape: case OpType::Expand: return true;
    case OpType::Transpose: return is_identity_perm(perm_of(n, x.shape.size()));
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

// Transpose of a Transpose (channel-last graphs, as tf2onnx writes them, transpose back and
// forth around every conv): one Transpose of the first one's input by the composed
// permutation, or none where that is the identity. Returns whether n changed.
bool fold_transpose_pair(Graph& g, Node& n) {
  if (n.op != OpType::Transpose || n.inputs.empty() || n.outputs.size() != 1) return false;
  const NodeId first = producer_of_type(g, n.inputs[0], OpType::Transpose);
  if (first < 0) return false;
  const ValueId x = g.node(first).inputs[0];
  const size_t rank = g.value(x).shape.size();
  if (!g.value(x).shape_known || g.value(n.inputs[0]).shape.size() != rank) return false;
  const std::vector<int64_t> p1 = perm_of(g.node(first), rank), p2 = perm_of(n, rank);
  if (p1.size() != rank || p2.size() != rank) return false;
  std::vector<int64_t> composed(rank);
  for (size_t i = 0; i < rank; ++i) composed[i] = p1[static_cast<size_t>(p2[i])];  // y[.. i ..] = x[.. p1[p2[i]] ..]
  n.inputs[0] = x;
  n.p<TransposeParams>().perm = composed;
  return true;
}

// A constant c broadcast against a rank-r value y = Transpose(x, p): the constant c2 with
// Transpose(c2, p) = c as broadcast (c aligned right, padded with 1s to rank r), so that
// Transpose(x op c2, p) = y op c. Empty when c would expand y (an axis of c larger than y's 1).
// A shape s broadcast against ys (rank r) = Transpose(x, p): s padded with 1s to rank r and the
// inverse permutation, when s does not expand ys (an axis of s larger than ys's 1); else nothing.
std::optional<std::pair<Shape, std::vector<int64_t>>> aligned(const Shape& s, const Shape& ys, const std::vector<int64_t>& p) {
  const size_t r = ys.size();
  if (s.size() > r) return std::nullopt;
  Shape sr(r - s.size(), 1);
  sr.insert(sr.end(), s.begin(), s.end());
  for (size_t i = 0; i < r; ++i)
    if (sr[i] != 1 && sr[i] != ys[i]) return std::nullopt;
  std::vector<int64_t> inv(r);
  for (size_t i = 0; i < r; ++i) inv[static_cast<size_t>(p[i])] = static_cast<int64_t>(i);
  return std::pair{std::move(sr), std::move(inv)};
}

std::optional<Tensor> permuted_constant(const Tensor& c, const Shape& ys, const std::vector<int64_t>& p) {
  const size_t r = ys.size();
  const auto al = r <= 8 ? aligned(c.shape(), ys, p) : std::nullopt;
  if (!al) return std::nullopt;
  const auto& [cr, inv] = *al;
  Shape out(r);
  for (size_t j = 0; j < r; ++j) out[j] = cr[static_cast<size_t>(inv[j])];  // out = Transpose(cr, inv)
  Tensor t(c.dtype(), out);
  const size_t es = dtype_size(c.dtype());
  std::vector<int64_t> in_stride(r, 1);
  for (size_t i = r; i-- > 1;) in_stride[i - 1] = in_stride[i] * cr[i];
  std::vector<int64_t> idx(r, 0);
  const auto* src = static_cast<const char*>(c.raw());
  auto* dst = static_cast<char*>(t.raw());
  for (int64_t o = 0; o < t.numel(); ++o) {
    int64_t at = 0;  // out[idx] = cr[idx'] with idx'[inv[j]] = idx[j]
    for (size_t j = 0; j < r; ++j) at += idx[j] * in_stride[static_cast<size_t>(inv[j])];
    std::memcpy(dst + o * static_cast<int64_t>(es), src + at * static_cast<int64_t>(es), es);
    for (size_t j = r; j-- > 0;)
      if (++idx[j] < out[j]) break;
      else idx[j] = 0;
  }
  return t;
}

// For a value v broadcast against a rank-r value y = Transpose(x, p): the shape that v, padded
// to rank r, takes under the inverse permutation, when that is a Reshape of v (its axes of
// size above 1 keep their order) and v does not expand y; else nothing.
std::optional<Shape> permuted_view(const Value& v, const Shape& ys, const std::vector<int64_t>& p) {
  const size_t r = ys.size();
  const auto al = v.shape_known ? aligned(v.shape, ys, p) : std::nullopt;
  if (!al) return std::nullopt;
  const auto& [vr, inv] = *al;
  Shape out(r);
  int64_t last = -1;
  for (size_t j = 0; j < r; ++j) {
    out[j] = vr[static_cast<size_t>(inv[j])];
    if (out[j] != 1) {
      if (inv[j] < last) return std::nullopt;
      last = inv[j];
    }
  }
  return out;
}

// A Transpose followed by ops that work element by element (unary ones, Clip, and binary ones
// with a constant operand, which is permuted to match, or a computed one that a Reshape
// permutes): the Transpose moves below them, so that a
// channel-last graph's Transpose pairs around them (tf2onnx writes Transpose, Relu, Transpose
// between convs; its BatchNorm as Mul and Add of [C] constants on the channel-last axis) meet
// and cancel, and pruning, BN folding and fusion see the convs' own chains. Returns whether n
// moved.
bool sink_transpose(Graph& g, NodeId tid) {
  bool moved = false;
  for (int guard = 0; guard < 64; ++guard) {
    const Node& t = g.node(tid);
    if (t.op != OpType::Transpose || t.inputs.empty() || t.outputs.size() != 1) return moved;
    const ValueId x = t.inputs[0], y = t.outputs[0];
    const Value& yv = g.value(y);
    if (!g.value(x).shape_known || !yv.shape_known || yv.is_output || yv.consumers.size() != 1) return moved;
    const size_t r = yv.shape.size();
    const std::vector<int64_t> p = perm_of(t, r);
    if (p.size() != r) return moved;
    const NodeId uid = yv.consumers[0];
    const Node& u = g.node(uid);
    if (u.dead || u.outputs.size() != 1 || u.outputs[0] == kNoValue || g.value(u.outputs[0]).is_output ||
        g.value(u.outputs[0]).shape != yv.shape)
      return moved;
    const bool unary = is_unary_elementwise(u.op) || u.op == OpType::Cast || u.op == OpType::Clip;
    const bool binary = u.op == OpType::Add || u.op == OpType::Sub || u.op == OpType::Mul || u.op == OpType::Div ||
                        u.op == OpType::Max || u.op == OpType::Min || u.op == OpType::PRelu;
    std::vector<std::pair<size_t, Tensor>> permuted;  // binary: (input, its permuted constant)
    std::optional<std::pair<size_t, Shape>> reshaped;  // binary: (input, the shape it is viewed as)
    if (unary) {
      if (u.inputs[0] != y) return moved;
      for (size_t i = 1; i < u.inputs.size(); ++i)  // Clip's bounds: scalars
        if (u.inputs[i] != kNoValue && (!g.value(u.inputs[i]).is_constant() || g.value(u.inputs[i]).constant.numel() != 1))
          return moved;
    } else if (binary && u.inputs.size() == 2 && u.inputs[0] != u.inputs[1]) {
      const size_t ci = u.inputs[0] == y ? 1 : 0;
      if (u.inputs[1 - ci] != y || (u.op == OpType::PRelu && ci != 1)) return moved;
      if (g.value(u.inputs[ci]).is_constant()) {
        std::optional<Tensor> c2 = permuted_constant(g.value(u.inputs[ci]).constant, yv.shape, p);
        if (!c2) return moved;
        permuted.emplace_back(ci, std::move(*c2));
      } else {
        // A computed operand (a gate's [N, 1, 1, C] mask on channel-last data) whose axes other
        // than 1 keep their order under the permutation: the permuted operand is a Reshape.
        std::optional<Shape> to = permuted_view(g.value(u.inputs[ci]), yv.shape, p);
        if (!to) return moved;
        reshaped.emplace(ci, std::move(*to));
      }
    } else {
      return moved;
    }
    Value between;  // u's result before the Transpose: x's shape, u's dtype
    between.name = g.value(u.outputs[0]).name + ":before_transpose";
    between.dtype = g.value(u.outputs[0]).dtype;
    between.shape = g.value(x).shape;
    between.shape_known = true;
    const ValueId b = g.add_value(std::move(between));
    for (auto& [ci, c2] : permuted)
      g.node(uid).inputs[ci] = add_constant(g, g.value(g.node(uid).inputs[ci]).name + ":permuted", std::move(c2));
    if (reshaped) {
      const ValueId o = g.node(uid).inputs[reshaped->first];
      const Shape& to = reshaped->second;
      const ValueId target = add_constant(g, g.value(o).name + ":permuted_shape",
                                          Tensor::from_vector<int64_t>({static_cast<int64_t>(to.size())}, to));
      Value view;
      view.name = g.value(o).name + ":permuted";
      view.dtype = g.value(o).dtype;
      view.shape = to;
      view.shape_known = true;
      Node r;
      r.op = OpType::Reshape;
      r.name = view.name;
      r.params = ReshapeParams{};
      r.inputs = {o, target};
      r.outputs = {g.add_value(std::move(view))};
      g.node(uid).inputs[reshaped->first] = r.outputs[0];
      g.add_node(std::move(r));
    }
    const ValueId z = g.node(uid).outputs[0];
    for (ValueId& in : g.node(uid).inputs)
      if (in == y) in = x;
    g.node(uid).outputs[0] = b;
    g.node(tid).inputs[0] = b;
    g.node(tid).outputs[0] = z;
    g.rebuild_links();
    moved = true;
  }
  return moved;
}

}  // namespace

namespace {
// A Reshape of [d0, d1, ...] into [d0, d1 * d2 * ...] with a constant target (x.view(x.size(0),
// -1), x.reshape(-1, C*H*W), [0, -1]): a Flatten at axis 1, the form the passes that follow
// know (a classifier head behind pruned channels).
bool reshape_as_flatten(Graph& g, Node& n) {
  if (n.op != OpType::Reshape || n.inputs.size() != 2 || !g.value(n.inputs[1]).is_constant()) return false;
  const Value& in = g.value(n.inputs[0]);
  const Value& out = g.value(n.outputs[0]);
  if (!in.shape_known || !out.shape_known || in.shape.size() < 3 || out.shape.size() != 2 || out.shape[0] != in.shape[0])
    return false;
  int64_t rest = 1;
  for (size_t i = 1; i < in.shape.size(); ++i) rest *= in.shape[i];
  if (out.shape[1] != rest) return false;
  n.op = OpType::Flatten;
  n.inputs.resize(1);
  n.params = AxisParams{1};
  return true;
}
// Conv(Pad(x, zeros around H and W)) as a Conv of x with those pads added to its own (the
// "SAME" padding of tf2onnx and Keras exports, or an explicit F.pad): the conv kernels skip
// the border instead of reading a padded copy, and a shift's depthwise conv after the Pad is
// one again. Returns whether n changed.
// The Pad that produces v, when it pads only H and W, by zeros, and nothing but v's one reader
// reads its output (an FBS gate pooling it would see another tensor); else null.
const Node* zero_spatial_pad(const Graph& g, ValueId v) {
  const NodeId pid = producer_of_type(g, v, OpType::Pad);
  if (pid < 0 || !single_use(g, v)) return nullptr;
  const Node& pad = g.node(pid);
  const auto& pp = pad.p<PadParams>();
  const Value& x = g.value(pad.inputs[0]);
  if (pp.mode != "constant" || pp.pads.size() != 8 || x.dtype != DType::Float32 || !x.shape_known) return nullptr;
  if (pp.pads[0] || pp.pads[1] || pp.pads[4] || pp.pads[5]) return nullptr;
  for (int64_t d : pp.pads)
    if (d < 0) return nullptr;
  if (pad.inputs.size() > 2 && pad.inputs[2] != kNoValue) {
    const Value& fv = g.value(pad.inputs[2]);
    if (!fv.is_constant() || fv.dtype != DType::Float32 || fv.constant.numel() != 1 || fv.constant.data<float>()[0] != 0.f)
      return nullptr;
  }
  return &pad;
}

bool fold_zero_pad_into_conv(Graph& g, Node& n) {
  if (n.op != OpType::Conv || n.inputs.empty()) return false;
  const Node* pad = zero_spatial_pad(g, n.inputs[0]);
  if (!pad) return false;
  const auto& pp = pad->p<PadParams>();
  // Pad(Slice(x)) that crops one side of H or W and pads as much on the other is a shift
  // (x[..., 1:] padded on the right): left for recognise_shifts, which fuses it into a 1x1 conv
  // as an address offset. Folded here, the Slice ran alone on the reference kernels. (A crop
  // padded back on the same side, zeroing a border row, is no shift: it folds as before.)
  if (const NodeId sp = g.value(pad->inputs[0]).producer; sp >= 0 && g.node(sp).op == OpType::Slice) {
    const Node& sl = g.node(sp);
    const Shape& xs = g.value(sl.inputs[0]).shape;
    const std::vector<int64_t> starts = const_ints(g, sl, 1), ends = const_ints(g, sl, 2), steps = const_ints(g, sl, 4);
    std::vector<int64_t> axes = const_ints(g, sl, 3);
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    const bool unit_steps = std::all_of(steps.begin(), steps.end(), [](int64_t s) { return s == 1; });
    if (xs.size() == 4 && unit_steps && starts.size() == axes.size() && ends.size() == axes.size())
      for (size_t i = 0; i < axes.size(); ++i) {
        const int64_t ax = axes[i] < 0 ? axes[i] + 4 : axes[i];
        if (ax != 2 && ax != 3) continue;
        const int64_t dim = xs[static_cast<size_t>(ax)];
        const int64_t b = std::clamp<int64_t>(starts[i] < 0 ? starts[i] + dim : starts[i], 0, dim);
        const int64_t e = std::clamp<int64_t>(ends[i] < 0 ? ends[i] + dim : ends[i], 0, dim);
        const int64_t crop_b = b, crop_e = dim - e, pad_b = pp.pads[static_cast<size_t>(ax)],
                      pad_e = pp.pads[static_cast<size_t>(ax) + 4];
        if ((crop_b > 0 && crop_e == 0 && pad_b == 0 && pad_e == crop_b) ||
            (crop_e > 0 && crop_b == 0 && pad_e == 0 && pad_b == crop_e))
          return false;
      }
  }
  ConvParams& cp = n.p<ConvParams>();
  if (cp.pads.size() != 4) return false;
  cp.pads = {cp.pads[0] + pp.pads[2], cp.pads[1] + pp.pads[3], cp.pads[2] + pp.pads[6], cp.pads[3] + pp.pads[7]};
  cp.auto_pad = "NOTSET";  // (already resolved into pads)
  n.inputs[0] = pad->inputs[0];
  return true;
}

// AveragePool(Pad(x, zeros around H and W)) as an AveragePool of x with those pads added to its
// own and count_include_pad set: what torch writes for avg_pool2d(..., padding=p,
// count_include_pad=True) (Inception-v3's branch pools), whose Pad and pool otherwise ran on
// the reference kernels, NCHW (half of that model's time on 2 threads). Exact: the Pad's zeros
// are elements the average counts, and a window that runs past the padded map (ceil_mode)
// counts only up to its end either way. Not where the pool has pads of its own that it does
// not count (count_include_pad 0), nor for MaxPool (a padded 0 may be the max). Returns
// whether n changed.
bool fold_zero_pad_into_average_pool(Graph& g, Node& n) {
  if (n.op != OpType::AveragePool || n.inputs.size() != 1) return false;
  const Node* pad = zero_spatial_pad(g, n.inputs[0]);
  if (!pad) return false;
  const auto& pp = pad->p<PadParams>();
  PoolParams& q = n.p<PoolParams>();
  if (q.pads.size() != 4 || q.kernel_shape.size() != 2 || (q.auto_pad != "NOTSET" && q.auto_pad != "VALID")) return false;
  if (!q.count_include_pad && std::any_of(q.pads.begin(), q.pads.end(), [](int64_t v) { return v != 0; })) return false;
  q.pads = {q.pads[0] + pp.pads[2], q.pads[1] + pp.pads[3], q.pads[2] + pp.pads[6], q.pads[3] + pp.pads[7]};
  q.auto_pad = "NOTSET";
  q.count_include_pad = true;
  n.inputs[0] = pad->inputs[0];
  return true;
}

}  // namespace

int eliminate_identities(Graph& g) {
  g.rebuild_links();
  int removed = 0;
  for (NodeId id : g.topological_order()) {
    if (sink_transpose(g, id)) ++removed;  // (counted: inspect's passes line)
    Node& n = g.node(id);
    if (fold_transpose_pair(g, n)) g.rebuild_links();  // (the first Transpose, if now unread, goes as dead)
    if (reshape_as_flatten(g, n)) g.rebuild_links();
    if (fold_zero_pad_into_conv(g, n) || fold_zero_pad_into_average_pool(g, n)) {  // (counted: inspect's passes line)
      g.rebuild_links();
      ++removed;
    }
    if (!is_identity(g, n)) continue;
    ValueId in = n.inputs.at(0), out = n.outputs.at(0);
    // A graph output must keep its name: only rewire when the output is internal.
    if (g.value(out).is_output) continue;
    if (n.op == OpType::Dropout && n.outputs.size() > 1 && n.outputs[1] != kNoValue &&
        (!g.value(n.outputs[1]).consumers.empty() || g.value(n.outputs[1]).is_output))
      continue;  // the mask is used (a graph output too): keep the node, its kernel produces it
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
