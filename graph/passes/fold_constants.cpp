#include "graph/passes/passes.h"
#include "ops/op_registry.h"

namespace sluice::graph::passes {

namespace {
// The shape with its dynamic dimensions as 1, "1x3x224x224" style: an example for an error message.
std::string concrete_example(const Shape& s) {
  std::string r;
  for (int64_t d : s) {  // (not "x" + to_string(d): GCC 12 warns of an overlapping memcpy there)
    if (!r.empty()) r += 'x';
    r += std::to_string(d > 0 ? d : 1);
  }
  return r;
}
}  // namespace

void bind_input_shapes(Graph& g, const std::map<std::string, Shape>& shapes, const std::map<std::string, Tensor>& values) {
  for (ValueId id : g.inputs) {
    Value& v = g.value(id);
    auto it = shapes.find(v.name);
    if (it == shapes.end()) {
      if (!v.shape_known)
        throw Error(g.model_name + ": input '" + v.name + "' has dynamic shape " + shape_str(v.shape) +
                    "; give its concrete shape (Session::inspect's input_shapes; on the command line: --shape " +
                    v.name + "=" + concrete_example(v.shape) + ")");
      continue;
    }
    const Shape& s = it->second;
    if (s.size() != v.shape.size() && !v.shape.empty())
      throw Error(g.model_name + ": input '" + v.name + "' must have rank " + std::to_string(v.shape.size()) + " " +
                  shape_str(v.shape) + ", got shape " + shape_str(s));
    for (size_t i = 0; i < s.size() && i < v.shape.size(); ++i)
      if (v.shape[i] >= 0 && v.shape[i] != s[i])
        throw Error(g.model_name + ": input '" + v.name + "' must have shape " + shape_str(v.shape) + ", got " +
                    shape_str(s));
    v.shape = s;
    v.shape_known = true;
    if (auto vt = values.find(v.name); vt != values.end()) v.constant = vt->second;
  }
}

namespace {
// Folding allocates the result: keep it to tensors that are plausibly shape
// arithmetic or small constant subgraphs, not whole activations.
constexpr int64_t kMaxFoldElements = int64_t{1} << 24;

int64_t element_count(const Shape& s) {
  int64_t c = 1;
  for (int64_t d : s) c *= d;
  return c;
}

bool foldable(const Graph& g, const Node& n) {
  if (n.op == OpType::Shape || n.op == OpType::Size) return true;  // they read only the shape
  // CastLike reads only the dtype of its second input (PyTorch's dynamo exporter casts every
  // scalar constant "like" the activation it meets).
  const size_t read = n.op == OpType::CastLike ? 1 : n.inputs.size();
  for (size_t i = 0; i < read; ++i)
    if (n.inputs[i] != kNoValue && !g.value(n.inputs[i]).is_constant()) return false;
  return true;
}
}  // namespace

std::vector<Tensor> run_reference(const Graph& g, const Node& n, const std::vector<const Tensor*>& inputs) {
  std::vector<ops::TensorView> in_views, out_views;
  for (const Tensor* t : inputs)  // Shape and Size read only the shape: a value without data is fine
    in_views.push_back(t ? ops::TensorView{t->dtype(), t->shape(), const_cast<void*>(t->raw())} : ops::TensorView{});
  for (size_t i = 0; i < n.inputs.size() && i < inputs.size(); ++i)
    if (!inputs[i] && n.inputs[i] != kNoValue) in_views[i] = {g.value(n.inputs[i]).dtype, g.value(n.inputs[i]).shape, nullptr};
  std::vector<Tensor> results;
  for (ValueId o : n.outputs) {
    results.emplace_back(o == kNoValue ? Tensor() : Tensor(g.value(o).dtype, g.value(o).shape));
    out_views.push_back(o == kNoValue ? ops::TensorView{} : ops::TensorView{results.back().dtype(), results.back().shape(), results.back().raw()});
  }
  ops::schema(n.op).reference(n, in_views, out_views);
  return results;
}

namespace {
// The If `id` becomes its taken branch: the branch's nodes join the graph, and the If turns
// into Identity nodes from the branch's results to its own outputs (which keep their names:
// graph outputs among them). The condition must be known by now: computed from shapes and
// constants, as in torch's exports (squeeze(dim) of a dim it cannot see is 1, LocalResponseNorm).
void resolve_if(Graph& g, NodeId id) {
  const Node& n = g.node(id);
  const Value& c = g.value(n.inputs.at(0));
  if (!c.is_constant())
    g.fail(id, "its condition '" + c.name + "' depends on the input data; Sluice runs an If only when the condition "
               "is known at load, from the input shapes and constants (data-dependent control flow is not supported)");
  if (c.dtype != DType::Bool || c.constant.numel() != 1)
    g.fail(id, "its condition '" + c.name + "' must be one bool, got " + dtype_name(c.dtype) + " of shape " +
                   shape_str(c.shape));
  const int taken = c.constant.data<bool>()[0] ? 0 : 1;
  const IfBranches& b = *n.p<IfParams>().branches;
  std::vector<Node> nodes = b.nodes[taken];
  const std::vector<ValueId> results = b.outputs[taken];
  const std::vector<ValueId> outs = n.outputs;
  const std::string name = n.name;
  if (results.size() != outs.size())
    g.fail(id, "its " + std::string(taken == 0 ? "then" : "else") + " branch has " + std::to_string(results.size()) +
                   " outputs for its " + std::to_string(outs.size()));
  g.ifs_taken.emplace_back(name, taken == 0 ? "then" : "else");
  for (Node& bn : nodes) g.add_node(std::move(bn));
  g.node(id).dead = true;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i] == kNoValue) continue;
    Node copy;
    copy.op = OpType::Identity;
    copy.name = outs.size() == 1 ? name : name + ":" + std::to_string(i);
    copy.inputs = {results[i]};
    copy.outputs = {outs[i]};
    g.add_node(std::move(copy));
  }
}

int fold_node(Graph& g, NodeId id);
}  // namespace

int fold_constants(Graph& g) {
  int folded = 0;
  // Restarted after each If is resolved, when its branch's nodes come into the order; the nodes
  // done before it are not inferred twice.
  std::vector<char> done;
  for (bool again = true; again;) {
    again = false;
    done.resize(g.nodes.size(), 0);
    for (NodeId id : g.topological_order()) {
      if (done[static_cast<size_t>(id)]) continue;
      done[static_cast<size_t>(id)] = 1;
      if (g.node(id).op == OpType::If) {
        resolve_if(g, id);
        ++folded;
        again = true;
        break;
      }
      folded += fold_node(g, id);
    }
    g.rebuild_links();
  }
  return folded;
}

namespace {
int fold_node(Graph& g, NodeId id) {
  {
    Node& n = g.node(id);
    for (ValueId in : n.inputs)
      if (in != kNoValue && !g.value(in).shape_known)
        g.fail(id, "the shape of input '" + g.value(in).name + "' is unknown");
    const ops::OpSchema& s = ops::schema(n.op);
    ops::InferContext ctx(g, id);
    s.infer(ctx);
    if (!foldable(g, n)) return 0;
    int64_t total = 0;
    for (ValueId o : n.outputs)
      if (o != kNoValue) total += element_count(g.value(o).shape);
    if (total > kMaxFoldElements) return 0;
    std::vector<const Tensor*> inputs;
    for (ValueId in : n.inputs) inputs.push_back(in == kNoValue || !g.value(in).is_constant() ? nullptr : &g.value(in).constant);
    std::vector<Tensor> results = run_reference(g, n, inputs);
    for (size_t i = 0; i < n.outputs.size(); ++i)
      if (n.outputs[i] != kNoValue) g.value(n.outputs[i]).constant = results[i];
    n.dead = true;
  }
  return 1;
}
}  // namespace

}  // namespace sluice::graph::passes
