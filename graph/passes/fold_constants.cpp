#include <map>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"
#include "ops/op_registry.h"
#include "ops/util.h"

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

int process(Graph& g, NodeId id);

// Nodes [first, end of g.nodes), just added, processed in an order where each follows the new
// nodes it reads (a branch's nodes need not be sorted; what they read from outside is done).
int process_new(Graph& g, size_t first) {
  const size_t end = g.nodes.size();
  std::map<ValueId, NodeId> made;
  for (size_t i = first; i < end; ++i)
    for (ValueId o : g.nodes[i].outputs)
      if (o != kNoValue) made[o] = static_cast<NodeId>(i);
  std::vector<int> waiting(end - first, 0);
  std::vector<std::vector<NodeId>> readers(end - first);
  std::vector<NodeId> ready;
  for (size_t i = first; i < end; ++i) {
    for (ValueId in : g.nodes[i].inputs)
      if (auto it = made.find(in); in != kNoValue && it != made.end()) {
        ++waiting[i - first];
        readers[static_cast<size_t>(it->second) - first].push_back(static_cast<NodeId>(i));
      }
    if (waiting[i - first] == 0) ready.push_back(static_cast<NodeId>(i));
  }
  int count = 0;
  size_t done = 0;
  while (!ready.empty()) {
    const NodeId id = ready.back();
    ready.pop_back();
    ++done;
    const std::vector<NodeId> next = readers[static_cast<size_t>(id) - first];
    count += process(g, id);
    for (NodeId r : next)
      if (--waiting[static_cast<size_t>(r) - first] == 0) ready.push_back(r);
  }
  if (done != end - first) g.fail(static_cast<NodeId>(first), "the nodes of an If branch wait on each other (a cycle)");
  return count;
}

// The If `id` becomes its taken branch: the branch's nodes join the graph (1-D ones lifted),
// and the If turns into Identity nodes from the branch's results to its own outputs (which keep
// their names: graph outputs among them); all are inferred and folded at once, as the walk goes
// on past the If. The condition must be known by now: computed from shapes and constants, as in
// torch's exports (whether a dim it cannot see is 1 for squeeze(dim); LocalResponseNorm), or a
// bool model input whose value the plan is made for. An If that nothing reads is dropped.
int resolve_if(Graph& g, NodeId id) {
  const Node& n = g.node(id);
  bool used = false;
  for (ValueId o : n.outputs) used = used || (o != kNoValue && (g.value(o).is_output || !g.value(o).consumers.empty()));
  if (!used) {
    g.node(id).dead = true;
    return 1;
  }
  const Value& c = g.value(n.inputs.at(0));
  // (A float model input given as the condition was told to be given: a fuzzer.)
  if (c.is_input && c.dtype != DType::Bool)
    g.fail(id, "its condition, the model input '" + c.name + "', must be one bool, got " + dtype_name(c.dtype) +
                   " (ONNX's If takes a bool condition)");
  if (!c.is_constant() && c.is_input)
    g.fail(id, "its condition is the model input '" + c.name + "': a plan is made for its value, so give it (`sluice " +
                   "inspect` and `run` take --input " + c.name + "=FILE.npy; Session::run takes it from its inputs)");
  if (!c.is_constant())
    g.fail(id, "its condition '" + c.name + "' depends on the input data; Sluice runs an If only when the condition "
               "is known at load, from the input shapes and constants (data-dependent control flow is not supported)");
  if (c.dtype != DType::Bool || c.constant.numel() != 1)
    g.fail(id, "its condition '" + c.name + "' must be one bool, got " + dtype_name(c.dtype) + " of shape " +
                   shape_str(c.shape));
  const int taken = c.constant.data<bool>()[0] ? 0 : 1;
  const IfBranches& b = *n.p<IfParams>().branches;
  if (!b.error[taken].empty()) throw Error(b.error[taken]);
  std::vector<Node> nodes = b.nodes[taken];
  const std::vector<ValueId> results = b.outputs[taken];
  const std::vector<ValueId> outs = n.outputs;
  const std::string name = n.name;
  if (results.size() != outs.size())
    g.fail(id, "its " + std::string(taken == 0 ? "then" : "else") + " branch has " + std::to_string(results.size()) +
                   " outputs for its " + std::to_string(outs.size()));
  g.ifs_taken.emplace_back(name, taken == 0 ? "then" : "else");
  g.node(id).dead = true;
  const size_t first = g.nodes.size();
  for (Node& bn : nodes) g.add_node(std::move(bn));
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i] == kNoValue) continue;
    Node copy;
    copy.op = OpType::Identity;
    copy.name = outs.size() == 1 ? name : name + ":" + std::to_string(i);
    copy.inputs = {results[i]};
    copy.outputs = {outs[i]};
    g.add_node(std::move(copy));
  }
  lift_1d(g, first);
  g.rebuild_links();  // (a nested If reads its consumers)
  return 1 + process_new(g, first);
}

// A 3-D pool (kernel_shape of 3): only over depth alone, as torch's LocalResponseNorm pools [N,
// 1, C, H, W] (kernel [k, 1, 1], strides [s, 1, 1], H and W unpadded): run as a 2-D pool of
// kernel [k, 1] over [N, C, D, H * W], between Reshapes; anything else is refused by name.
int lower_depth_pool(Graph& g, NodeId id) {
  const std::string name = g.node(id).name;
  PoolParams pp = g.node(id).p<PoolParams>();
  const ValueId x = g.node(id).inputs.at(0), y = g.node(id).outputs.at(0);
  const Shape xs = g.value(x).shape;
  const std::string window = "kernel_shape " + ops::ints_str(pp.kernel_shape) + ", strides " + ops::ints_str(pp.strides) +
                             ", pads " + ops::ints_str(pp.pads);
  if (xs.size() != 5)
    g.fail(id, "its window (" + window + ") is 3-D, so its input must be 5-D [N, C, D, H, W]; got " + shape_str(xs));
  bool depth_only = pp.strides.size() == 3 && pp.dilations.size() == 3 && pp.pads.size() == 6;
  for (size_t a : {1, 2})
    depth_only = depth_only && pp.kernel_shape[a] == 1 && pp.strides[a] == 1 && pp.pads[a] == 0 && pp.pads[a + 3] == 0;
  if (!depth_only)
    g.fail(id, "3-D pooling runs only over depth alone (kernel_shape [k, 1, 1], strides [s, 1, 1], H and W unpadded); "
               "this one has " + window);
  pp.kernel_shape = {pp.kernel_shape[0], 1};
  pp.strides = {pp.strides[0], 1};
  pp.dilations = {pp.dilations[0], 1};  // (a dilation over a window of 1 changes nothing)
  pp.pads = {pp.pads[0], 0, pp.pads[3], 0};
  auto add_value = [&](Value v) { return g.add_value(std::move(v)); };
  Value v4;
  v4.name = g.value(x).name + ":4d";
  const ValueId x4 = add_value(v4);
  v4.name = g.value(y).name + ":4d";
  const ValueId y4 = add_value(v4);
  const ValueId flat = add_constant(g, name + ":flat_shape", Tensor::from_vector<int64_t>({4}, {xs[0], xs[1], xs[2], xs[3] * xs[4]}));
  Node r;
  r.op = OpType::Reshape;
  r.name = name + ":to_4d";
  r.inputs = {x, flat};
  r.outputs = {x4};
  r.params = ReshapeParams{};
  const NodeId rid = g.add_node(r);
  Node& pool = g.node(id);
  pool.params = pp;
  pool.inputs[0] = x4;
  pool.outputs[0] = y4;
  int count = process(g, rid) + process(g, id);
  const Shape ys = g.value(y4).shape;
  const ValueId back = add_constant(g, name + ":5d_shape", Tensor::from_vector<int64_t>({5}, {ys[0], ys[1], ys[2], xs[3], xs[4]}));
  r.name = name + ":to_5d";
  r.inputs = {y4, back};
  r.outputs = {y};
  return count + process(g, g.add_node(r));
}

int fold_node(Graph& g, NodeId id) {
  Node& n = g.node(id);
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
  return 1;
}

int process(Graph& g, NodeId id) {
  if (g.node(id).dead) return 0;
  if (g.node(id).op == OpType::If) return resolve_if(g, id);  // (its other inputs: what its branches read)
  for (ValueId in : g.node(id).inputs)
    if (in != kNoValue && !g.value(in).shape_known)
      g.fail(id, "the shape of input '" + g.value(in).name + "' is unknown");
  const OpType op = g.node(id).op;
  if ((op == OpType::MaxPool || op == OpType::AveragePool || op == OpType::LpPool) &&
      g.node(id).p<PoolParams>().kernel_shape.size() == 3)
    return lower_depth_pool(g, id);
  return fold_node(g, id);
}
}  // namespace

int fold_constants(Graph& g) {
  g.rebuild_links();
  int folded = 0;
  for (NodeId id : g.topological_order()) folded += process(g, id);
  g.rebuild_links();
  return folded;
}

}  // namespace sluice::graph::passes
