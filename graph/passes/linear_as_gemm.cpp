#include <algorithm>
#include <set>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

// Whether v is a constant float vector of n entries, as [n] or [1, n]: a bias Gemm broadcasts
// over the rows exactly as Add does.
bool bias_vector(const Value& v, int64_t n) {
  if (!v.is_constant() || v.dtype != DType::Float32) return false;
  return (v.shape.size() == 1 && v.shape[0] == n) || (v.shape.size() == 2 && v.shape[0] == 1 && v.shape[1] == n);
}

// A copy of constant float tensor v times `by`, as a new constant.
ValueId scaled(Graph& g, ValueId v, float by, const std::string& suffix) {
  const Value& c = g.value(v);
  Tensor t(DType::Float32, c.shape);
  const float* src = c.constant.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = src[i] * by;
  return add_constant(g, c.name + suffix, std::move(t));
}

// An Einsum of two float operands that is a MatMul ('...ab,...bc->...ac', the same leading
// letters on all three) or a broadcast product (no letter summed; the output is one operand's
// term and the other's letters come in the same order: 'nchw,nc->nchw' is x * p[:, :, None, None]):
// rewritten as that op, which the fast kernels and the gate recogniser know. Returns whether it was.
bool lower_einsum(Graph& g, NodeId id) {
  Node& n = g.node(id);
  if (n.op != OpType::Einsum || n.inputs.size() != 2 || n.outputs.size() != 1) return false;
  const auto p = n.p<EinsumParams>();  // (terms and output: shape inference parsed them)
  if (p.terms.size() != 2) return false;
  for (ValueId v : n.inputs)
    if (g.value(v).dtype != DType::Float32 || !g.value(v).shape_known) return false;
  const std::string &s0 = p.terms[0], &s1 = p.terms[1], &so = p.output;
  auto distinct = [](const std::string& s) { return std::string(s).size() == std::set<char>(s.begin(), s.end()).size(); };
  if (!distinct(s0) || !distinct(s1)) return false;
  // Every letter the same size in both operands: an ellipsis axis of 1 broadcasting against n
  // (which Einsum allows) would have MatMul read rows that are not there.
  const Shape &x0 = g.value(n.inputs[0]).shape, &x1 = g.value(n.inputs[1]).shape;
  for (size_t i = 0; i < s0.size(); ++i)
    if (const size_t j = s1.find(s0[i]); j != std::string::npos && x0[i] != x1[j]) return false;
  const size_t r = s0.size();
  if (r >= 2 && s1.size() == r && so.size() == r && s0.substr(0, r - 2) == s1.substr(0, r - 2) &&
      so.substr(0, r - 2) == s0.substr(0, r - 2) && s0[r - 1] == s1[r - 2] && so[r - 2] == s0[r - 2] &&
      so[r - 1] == s1[r - 1] && s0[r - 2] != s1[r - 1] && so.find(s0[r - 1]) == std::string::npos) {
    n.op = OpType::MatMul;
    n.params = NoParams{};
    return true;
  }
  // The broadcast product: the full operand first.
  const int full = so == s0 ? 0 : so == s1 ? 1 : -1;
  if (full < 0) return false;
  const std::string& part = full == 0 ? s1 : s0;
  std::vector<int64_t> axes;  // where the other operand gets size-1 axes
  size_t at = 0;
  for (size_t d = 0; d < so.size(); ++d) {
    if (at < part.size() && part[at] == so[d]) ++at;
    else axes.push_back(static_cast<int64_t>(d));
  }
  if (at != part.size()) return false;  // its letters in another order, or one summed
  const ValueId x = n.inputs[static_cast<size_t>(full)], small = n.inputs[static_cast<size_t>(1 - full)];
  ValueId b = small;
  if (!axes.empty()) {
    Value v;
    v.name = g.value(small).name + "_" + n.name + "_unsqueezed";
    v.dtype = DType::Float32;
    v.shape.assign(so.size(), 1);
    for (size_t d = 0, k = 0; d < so.size(); ++d)
      if (std::find(axes.begin(), axes.end(), static_cast<int64_t>(d)) == axes.end()) v.shape[d] = g.value(small).shape[k++];
    v.shape_known = true;
    b = g.add_value(std::move(v));
    Node u;
    u.op = OpType::Unsqueeze;
    u.name = n.name + "_unsqueeze";
    u.inputs = {small};
    u.outputs = {b};
    u.params = AxesParams{axes, true};
    g.add_node(std::move(u));
  }
  Node& m = g.node(id);  // (add_node may have moved the nodes)
  m.op = OpType::Mul;
  m.params = NoParams{};
  m.inputs = {x, b};
  return true;
}

}  // namespace

int normalise_gemms(Graph& g) {
  int changed = 0;
  const size_t count = g.nodes.size();
  for (size_t i = 0; i < count; ++i)
    if (!g.nodes[i].dead && lower_einsum(g, static_cast<NodeId>(i))) ++changed;
  if (changed) g.rebuild_links();
  for (size_t i = 0; i < count; ++i) {
    if (g.nodes[i].dead || g.nodes[i].op != OpType::Gemm || g.nodes[i].inputs.size() < 2) continue;
    const ValueId a = g.nodes[i].inputs[0], b = g.nodes[i].inputs[1];
    const ValueId c = g.nodes[i].inputs.size() > 2 ? g.nodes[i].inputs[2] : kNoValue;
    if (g.value(a).dtype != DType::Float32 || !g.value(b).is_constant() || g.value(b).dtype != DType::Float32 ||
        g.value(a).shape.size() != 2 || !g.value(a).shape_known)
      continue;
    const GemmParams p = g.nodes[i].p<GemmParams>();
    if (p.alpha == 1.f && (p.beta == 1.f || c == kNoValue) && !p.trans_a) continue;
    if (c != kNoValue && p.beta != 1.f && (!g.value(c).is_constant() || g.value(c).dtype != DType::Float32)) continue;
    const ValueId b2 = p.alpha != 1.f ? scaled(g, b, p.alpha, "_alpha") : b;
    const ValueId c2 = c == kNoValue || p.beta == 1.f ? c : p.beta == 0.f ? kNoValue : scaled(g, c, p.beta, "_beta");
    ValueId a2 = a;
    if (p.trans_a) {  // (a Transpose of A in the model and this one fold in eliminate_identities)
      Value t;
      t.name = g.value(a).name + "_T";
      t.dtype = DType::Float32;
      t.shape = {g.value(a).shape[1], g.value(a).shape[0]};
      t.shape_known = true;
      a2 = g.add_value(std::move(t));
      Node tr;
      tr.op = OpType::Transpose;
      tr.name = g.nodes[i].name + "_transpose_a";
      tr.inputs = {a};
      tr.outputs = {a2};
      tr.params = TransposeParams{{1, 0}};
      g.add_node(std::move(tr));
    }
    Node& n = g.nodes[i];
    n.inputs = {a2, b2};
    if (c2 != kNoValue) n.inputs.push_back(c2);
    GemmParams& q = n.p<GemmParams>();
    q.alpha = 1.f, q.beta = 1.f, q.trans_a = false;
    ++changed;
  }
  // C other than a row vector (what oneDNN's Gemm kernels take as their bias): a single value
  // (other exporters' [1, 1] or scalar) becomes that row; a per-row or full C ([M, 1],
  // [M, N], or computed at run time) goes to an Add after the Gemm, so that the product
  // still runs on oneDNN (such a Gemm ran wholly on the reference kernel).
  for (size_t i = 0; i < count; ++i) {
    if (g.nodes[i].dead || g.nodes[i].op != OpType::Gemm || g.nodes[i].inputs.size() < 3 ||
        g.nodes[i].inputs[2] == kNoValue)
      continue;
    const GemmParams& p = g.nodes[i].p<GemmParams>();
    const ValueId c = g.nodes[i].inputs[2], y = g.nodes[i].outputs[0];
    if (p.alpha != 1.f || p.beta != 1.f || p.trans_a || !g.value(g.nodes[i].inputs[1]).is_constant() ||
        g.value(g.nodes[i].inputs[0]).dtype != DType::Float32 || g.value(c).dtype != DType::Float32 ||
        !g.value(y).shape_known || g.value(y).shape.size() != 2 || !g.value(c).shape_known)
      continue;
    const int64_t cols = g.value(y).shape[1];
    if (bias_vector(g.value(c), cols)) continue;
    if (g.value(c).is_constant() && g.value(c).constant.numel() == 1) {
      Tensor row(DType::Float32, {cols});
      std::fill(row.data<float>(), row.data<float>() + cols, g.value(c).constant.data<float>()[0]);
      const ValueId r = add_constant(g, g.value(c).name + "_row", std::move(row));
      g.nodes[i].inputs[2] = r;
      ++changed;
      continue;
    }
    Value product = g.value(y);
    product.name = g.value(y).name + "_product";
    product.is_output = false;
    product.is_input = false;
    product.consumers.clear();
    const ValueId yp = g.add_value(std::move(product));
    Node add;
    add.op = OpType::Add;
    add.name = g.nodes[i].name + "_c";
    add.inputs = {yp, c};
    add.outputs = {y};
    g.nodes[i].inputs.resize(2);
    g.nodes[i].outputs[0] = yp;
    g.add_node(std::move(add));
    ++changed;
  }
  if (changed) g.rebuild_links();
  return changed;
}

int linear_as_gemm(Graph& g) {
  g.rebuild_links();
  int rewritten = 0;
  for (NodeId id : g.topological_order()) {
    Node& mm = g.node(id);
    if (mm.dead || mm.op != OpType::MatMul || mm.inputs.size() != 2) continue;
    const Value& a = g.value(mm.inputs[0]);  // (references into g.values: not used past add_constant)
    const Value& b = g.value(mm.inputs[1]);
    if (a.dtype != DType::Float32 || !a.shape_known || a.shape.size() != 2 || a.is_constant()) continue;
    if (!b.is_constant() || b.dtype != DType::Float32 || b.shape.size() != 2 || b.shape[0] != a.shape[1]) continue;
    const int64_t n = b.shape[1];
    // A constant bias added to the product, the MatMul's only reader, joins it as Gemm's C.
    const ValueId out = mm.outputs[0];
    ValueId bias = kNoValue;
    NodeId add_id = -1;
    if (single_use(g, out)) {
      const NodeId r = g.value(out).consumers[0];
      const Node& add = g.node(r);
      if (add.op == OpType::Add && add.inputs.size() == 2) {
        const ValueId other = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
        if (other != out && bias_vector(g.value(other), n)) bias = other, add_id = r;
      }
    }
    mm.op = OpType::Gemm;
    mm.params = GemmParams{};
    if (add_id >= 0) {
      // As [N]: the form static pruning's Gemm readers rewrite ([1, N] is the same row).
      if (g.value(bias).shape.size() == 2)
        bias = add_constant(g, g.value(bias).name + "_row", g.value(bias).constant.reshaped({n}));
      Node& add = g.node(add_id);
      mm.inputs.push_back(bias);
      mm.outputs[0] = add.outputs[0];
      add.dead = true;
    }
    ++rewritten;
    g.rebuild_links();
  }
  return rewritten;
}

}  // namespace sluice::graph::passes
