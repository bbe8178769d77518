#include "graph/graph.h"

#include <algorithm>
#include <unordered_map>

namespace sluice::graph {

namespace {
constexpr const char* kOpNames[] = {
#define SLUICE_OP(name) #name,
#include "graph/op_list.inc"
#undef SLUICE_OP
};
}  // namespace

const char* op_name(OpType t) { return kOpNames[static_cast<int>(t)]; }

bool is_unary_elementwise(OpType t) {
  switch (t) {
    case OpType::Abs: case OpType::Neg: case OpType::Relu: case OpType::Sigmoid: case OpType::Tanh:
    case OpType::Sqrt: case OpType::LeakyRelu: case OpType::HardSigmoid: case OpType::HardSwish:
    case OpType::Exp: case OpType::Log: case OpType::Erf: case OpType::Gelu: case OpType::Elu: case OpType::Softplus:
    case OpType::Softsign: case OpType::Sin: case OpType::Cos: case OpType::Tan: case OpType::Asin: case OpType::Acos:
    case OpType::Atan: case OpType::Sinh: case OpType::Cosh: case OpType::Asinh: case OpType::Acosh: case OpType::Atanh:
    case OpType::Reciprocal: case OpType::Floor: case OpType::Ceil: case OpType::Round: case OpType::Selu:
    case OpType::Celu: case OpType::ThresholdedRelu: case OpType::Sign:
      return true;
    default: return false;
  }
}

std::optional<OpType> op_from_name(const std::string& name) {
  static const std::unordered_map<std::string, OpType> table = [] {
    std::unordered_map<std::string, OpType> m;
    for (int i = 0; i < kNumOpTypes; ++i) m.emplace(kOpNames[i], static_cast<OpType>(i));
    return m;
  }();
  if (name == "Scatter") return OpType::ScatterElements;  // opsets 9-10's name for it (deprecated at 11)
  auto it = table.find(name);
  if (it == table.end() || name.rfind("Sluice", 0) == 0) return std::nullopt;
  return it->second;
}

ValueId Graph::add_value(Value v) {
  values.push_back(std::move(v));
  return static_cast<ValueId>(values.size() - 1);
}

NodeId Graph::add_node(Node n) {
  nodes.push_back(std::move(n));
  return static_cast<NodeId>(nodes.size() - 1);
}

std::optional<ValueId> Graph::find_value(const std::string& name) const {
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].name == name) return static_cast<ValueId>(i);
  return std::nullopt;
}

void Graph::rebuild_links() {
  for (auto& v : values) {
    v.producer = -1;
    v.consumers.clear();
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (n.dead) continue;
    for (ValueId o : n.outputs)
      if (o != kNoValue) value(o).producer = static_cast<NodeId>(i);
    for (ValueId in : n.inputs) {
      if (in == kNoValue) continue;
      auto& c = value(in).consumers;
      if (std::find(c.begin(), c.end(), static_cast<NodeId>(i)) == c.end()) c.push_back(static_cast<NodeId>(i));
    }
  }
}

std::vector<NodeId> Graph::topological_order() const {
  // Kahn's algorithm over live nodes; ties keep file order so plans are stable.
  std::vector<int> pending(nodes.size(), 0);
  std::vector<std::vector<NodeId>> users(nodes.size());
  std::vector<NodeId> producer_of(values.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!nodes[i].dead)
      for (ValueId o : nodes[i].outputs)
        if (o != kNoValue) producer_of[static_cast<size_t>(o)] = static_cast<NodeId>(i);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].dead) continue;
    for (ValueId in : nodes[i].inputs) {
      if (in == kNoValue) continue;
      NodeId p = producer_of[static_cast<size_t>(in)];
      if (p >= 0) {
        ++pending[i];
        users[static_cast<size_t>(p)].push_back(static_cast<NodeId>(i));
      }
    }
  }
  std::vector<NodeId> order, ready;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!nodes[i].dead && pending[i] == 0) ready.push_back(static_cast<NodeId>(i));
  std::reverse(ready.begin(), ready.end());
  while (!ready.empty()) {
    NodeId n = ready.back();
    ready.pop_back();
    order.push_back(n);
    std::vector<NodeId> now_ready;
    for (NodeId u : users[static_cast<size_t>(n)])
      if (--pending[static_cast<size_t>(u)] == 0) now_ready.push_back(u);
    std::sort(now_ready.rbegin(), now_ready.rend());
    ready.insert(ready.end(), now_ready.begin(), now_ready.end());
    std::sort(ready.rbegin(), ready.rend());
  }
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!nodes[i].dead && pending[i] > 0)
      fail(static_cast<NodeId>(i), "the graph has a cycle through this node; an ONNX graph must be acyclic");
  return order;
}

void Graph::remove_dead_nodes() {
  // Node ids are indices: keep the vector, just drop dead entries' links.
  rebuild_links();
}

int Graph::live_node_count() const {
  return static_cast<int>(std::count_if(nodes.begin(), nodes.end(), [](const Node& n) { return !n.dead; }));
}

std::string Graph::where(NodeId n) const {
  const Node& nd = node(n);
  return model_name + ": node '" + nd.name + "' (" + op_name(nd.op) + ")";
}

std::string Graph::where_value(ValueId v) const { return model_name + ": value '" + value(v).name + "'"; }

void Graph::fail(NodeId n, const std::string& what) const { throw Error(where(n) + ": " + what); }

bool keeps_zero_channels(const Graph& g, const Node& n) {
  if (n.inputs.empty() || n.outputs.empty() || n.inputs[0] == kNoValue) return false;
  const Shape& a = g.value(n.inputs[0]).shape;
  const Shape& b = g.value(n.outputs[0]).shape;
  if (a.size() != 4 || b.size() != 4 || a[0] != b[0] || a[1] != b[1]) return false;
  switch (n.op) {
    case OpType::Relu: case OpType::MaxPool: case OpType::AveragePool: case OpType::GlobalAveragePool:
    case OpType::SluiceReorder: case OpType::Identity: case OpType::Dropout:
      return true;
    case OpType::Pad: {  // spatial only, and zero (or copies of the channel's own values) where it pads
      const auto& p = n.p<PadParams>();
      if (p.pads.size() != 8 || p.pads[0] != 0 || p.pads[1] != 0 || p.pads[4] != 0 || p.pads[5] != 0) return false;
      if (p.mode != "constant" || n.inputs.size() < 3 || n.inputs[2] == kNoValue) return true;
      const Value& fill = g.value(n.inputs[2]);
      return fill.is_constant() && fill.dtype == DType::Float32 && fill.constant.numel() == 1 &&
             fill.constant.data<float>()[0] == 0.f;
    }
    default: return false;
  }
}

const Node* gated_activity_source(const Graph& g, ValueId v) {
  const Node* prod = g.value(v).producer >= 0 ? &g.node(g.value(v).producer) : nullptr;
  while (prod && prod->op != OpType::SluiceGatedConv && keeps_zero_channels(g, *prod))
    prod = g.value(prod->inputs[0]).producer >= 0 ? &g.node(g.value(prod->inputs[0]).producer) : nullptr;
  if (!prod || prod->op != OpType::SluiceGatedConv) return nullptr;
  const auto& gp = prod->p<GatedConvParams>();
  // Every channel active: no gate of its own, the gate off, a residual sum over every
  // channel, or k = C_out (density 1; but g > its C-th largest drops the smallest g).
  const int64_t m = g.value(prod->outputs[0]).shape[1];
  if (gp.form == GateForm::All || !gp.gating || gp.fused_sum || (gp.k >= m && gp.form != GateForm::Threshold))
    return nullptr;
  // A suppressed channel is act(beta_c) with an unmasked beta, else act(0): some must be 0.
  const float* beta = prod->inputs.size() > 5 && prod->inputs[5] != kNoValue
                          ? g.value(prod->inputs[5]).constant.data<float>()
                          : nullptr;
  for (int64_t o = 0; o < m; ++o) {
    const float pre = gp.beta == BetaMode::Unmasked && beta ? beta[o] : 0.f;
    if (apply_activation(gp.activation, pre) == 0.f) return prod;
  }
  return nullptr;
}

const ConvParams& conv_params(const Node& n) {
  return n.op == OpType::SluiceGatedConv ? n.p<GatedConvParams>().conv : n.p<ConvParams>();
}

}  // namespace sluice::graph
