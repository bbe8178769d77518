// The Sluice IR: values (typed, shaped, possibly constant), nodes (typed op + typed
// params), producer/consumer links. Passes in graph/passes rewrite it in place.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "graph/params.h"
#include "sluice/sluice.h"

namespace sluice::graph {

enum class OpType : uint16_t {
#define SLUICE_OP(name) name,
#include "graph/op_list.inc"
#undef SLUICE_OP
};
constexpr int kNumOpTypes = 0
#define SLUICE_OP(name) +1
#include "graph/op_list.inc"
#undef SLUICE_OP
    ;

const char* op_name(OpType t);
std::optional<OpType> op_from_name(const std::string& name);
// Ops with one (float) input computed element by element into an output of its shape, with
// no other inputs (Relu, Tanh, Gelu, ...): they run in place, in chunks, and keep a constant
// channel constant.
bool is_unary_elementwise(OpType t);

using ValueId = int32_t;
using NodeId = int32_t;
constexpr ValueId kNoValue = -1;

struct Value {
  std::string name;
  DType dtype = DType::Undefined;
  Shape shape;               // logical (ONNX) shape, NCHW for images; -1 = unknown dim
  bool shape_known = false;  // every dim known
  Layout layout = Layout::NCHW;  // physical layout of 4-D activations
  Tensor constant;           // non-empty: an initializer or a folded value
  NodeId producer = -1;
  std::vector<NodeId> consumers;  // maintained by Graph::rebuild_links()
  bool is_input = false, is_output = false;
  // Layout::Planar with rows rounded up to 16 floats (ops::planar::resident(h, w, true)):
  // between sparse convs only (passes::keep_planes_resident).
  bool wide_rows = false;

  bool is_constant() const { return !constant.empty(); }
};

struct Node {
  OpType op = OpType::Identity;
  std::string name;  // ONNX node name, or "<op>_<index>" when the file has none
  std::vector<ValueId> inputs;   // kNoValue for an omitted optional input
  std::vector<ValueId> outputs;
  Params params;
  bool dead = false;
  Layout layout = Layout::NCHW;  // memory layout the node's kernel runs in (layout pass)

  template <class P>
  const P& p() const { return std::get<P>(params); }
  template <class P>
  P& p() { return std::get<P>(params); }
};

// An If's two branches (0: then, 1: else), imported into the graph's value table but not its
// node list; outputs[b] are branch b's results, one per output of the If. Their nodes read
// values of the enclosing graph by id, as any node does.
// error[b]: why branch b cannot run (an operator Sluice does not support): the message the If
// fails with if it takes that branch, and only then.
struct IfBranches {
  std::vector<Node> nodes[2];
  std::vector<ValueId> outputs[2];
  std::string error[2];
};

// What gate recognition found at one candidate gated convolution (for inspect).
struct GateReport {
  std::string conv;     // the Conv node's name
  bool recognised = false;
  std::string reason;   // why not, when not
  std::string form;     // e.g. "winners k=24/32, GlobalAveragePool, Gemm, masked beta"
};

// What passes::prune_channels did to one conv's output channels.
struct PruneReport {
  std::string conv;
  int64_t channels = 0;   // output channels in the model
  int64_t dead = 0;       // all-zero filters (constant outputs)
  int64_t removed = 0;    // of those, removed (with the readers' input channels)
  int64_t folded = 0;     // of the removed, constants != 0 folded into the readers' biases
  std::string kept_reason;  // why dead channels were kept, when some were
  int64_t unread = 0;       // live channels removed because every reader's weights for them are 0
  bool features = false;    // a Linear's (Gemm's) output features rather than conv channels
};

class Graph {
 public:
  std::vector<GateReport> gates;  // filled by passes::recognise_gates
  std::vector<PruneReport> pruning;  // filled by passes::prune_channels
  std::string model_name;  // file name, for error messages
  int64_t opset = 0;
  // Model-local function calls inlined at import, per "domain.name" (inspect shows them).
  std::map<std::string, int64_t> inlined_calls;
  // If nodes resolved at load (passes::fold_constants), with the branch each took: "then"/"else".
  std::vector<std::pair<std::string, std::string>> ifs_taken;
  std::vector<Value> values;
  std::vector<Node> nodes;
  std::vector<ValueId> inputs;   // graph inputs that are not initializers
  std::vector<ValueId> outputs;

  ValueId add_value(Value v);
  NodeId add_node(Node n);
  std::optional<ValueId> find_value(const std::string& name) const;

  // Recomputes producer/consumer links from the live nodes.
  void rebuild_links();
  // Live nodes in an order where every producer precedes its consumers.
  // Throws Error naming a node on a cycle.
  std::vector<NodeId> topological_order() const;
  // Marks dead and compacts away nodes flagged dead, then rebuilds links.
  void remove_dead_nodes();

  // Error message helpers: "model.onnx: node 'conv1' (Conv): ..."
  std::string where(NodeId n) const;
  std::string where_value(ValueId v) const;
  [[noreturn]] void fail(NodeId n, const std::string& what) const;

  const Value& value(ValueId id) const { return values.at(static_cast<size_t>(id)); }
  Value& value(ValueId id) { return values.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return nodes.at(static_cast<size_t>(id)); }
  Node& node(NodeId id) { return nodes.at(static_cast<size_t>(id)); }
  int live_node_count() const;
};

// Channel-wise ops that map a zero channel to a zero channel (Relu, the pools, reorders,
// Identity, Dropout, a spatial Pad with zeros or in edge/reflect mode), same batch and channels
// in and out: a gated conv's channel activity passes through them.
bool keeps_zero_channels(const Graph& g, const Node& n);
// The gated conv whose per-sample channel activity reaches value v (directly or through ops
// that keep a zero channel zero), if its gate can leave some channel exactly zero; else null
// (no gate, a conv with no gate of its own, the gate off, a fused residual sum, k = C_out, or
// every suppressed value non-zero).
const Node* gated_activity_source(const Graph& g, ValueId v);

}  // namespace sluice::graph
