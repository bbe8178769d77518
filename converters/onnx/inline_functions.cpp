#include "converters/onnx/inline_functions.h"

#include <google/protobuf/unknown_field_set.h>

#include <map>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sluice/sluice.h"

namespace sluice::converters::onnx {

namespace op = ::ONNX_NAMESPACE;

namespace {

constexpr int kMaxDepth = 16;
constexpr int kMaxNodes = 1 << 20;  // calls that each call the next several times would grow without bound
// FunctionProto.attribute_proto (IR 9): the defaults of the function's attributes. Debian's
// ONNX 1.12 proto predates it, so it arrives as an unknown field; it is read from there.
constexpr int kAttributeProtoField = 11;

using AttrMap = std::unordered_map<std::string, op::AttributeProto>;

struct Function {
  const op::FunctionProto* proto = nullptr;
  AttrMap defaults;
};

AttrMap defaults_of(const op::FunctionProto& f) {
  AttrMap d;
  const auto& unknown = f.GetReflection()->GetUnknownFields(f);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const auto& u = unknown.field(i);
    if (u.number() != kAttributeProtoField || u.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    op::AttributeProto a;
    if (a.ParseFromString(u.length_delimited()) && !a.name().empty()) d[a.name()] = a;
  }
  return d;
}

int64_t default_opset(const google::protobuf::RepeatedPtrField<op::OperatorSetIdProto>& imports) {
  for (const auto& imp : imports)
    if (imp.domain().empty() || imp.domain() == "ai.onnx") return imp.version();
  return -1;
}

class Inliner {
 public:
  Inliner(const op::ModelProto& model, std::string name) : name_(std::move(name)) {
    const int64_t model_opset = default_opset(model.opset_import());
    for (const auto& f : model.functions()) {
      const int64_t fo = default_opset(f.opset_import());
      if (fo >= 0 && fo != model_opset)
        throw Error(name_ + ": function '" + f.domain() + "." + f.name() + "' imports opset " + std::to_string(fo) +
                    " but the model imports " + std::to_string(model_opset) +
                    "; Sluice runs one opset per model (re-export, or inline with onnx.inliner)");
      functions_[{f.domain(), f.name()}] = Function{&f, defaults_of(f)};
    }
  }

  bool empty() const { return functions_.empty(); }

  // Appends `n` to `out`, or the body of the function it calls, expanded. `top` names the
  // main graph's call that this expansion started from, for errors deep inside it.
  void emit(const op::NodeProto& n, google::protobuf::RepeatedPtrField<op::NodeProto>& out, int depth,
            const std::string& top = "") {
    auto it = functions_.find({n.domain(), n.op_type()});
    if (it == functions_.end()) {
      if (out.size() >= kMaxNodes)
        throw Error((top.empty() ? name_ : top) + ": inlining function calls makes more than " + std::to_string(kMaxNodes) +
                    " nodes");
      *out.Add() = n;
      return;
    }
    const op::FunctionProto& f = *it->second.proto;
    const std::string call = n.name().empty() ? "call" + std::to_string(++calls_) : n.name();
    const std::string fname = f.domain() + "." + f.name();
    const std::string where = name_ + ": node '" + call + "' (call of function '" + fname + "')";
    if (depth >= kMaxDepth)
      throw Error(top + ": function calls nest deeper than " + std::to_string(kMaxDepth) + " (does '" + fname +
                  "' call itself?)");
    if (n.input_size() > f.input_size() || n.output_size() > f.output_size())
      throw Error(where + ": " + std::to_string(n.input_size()) + " inputs and " + std::to_string(n.output_size()) +
                  " outputs, but the function takes " + std::to_string(f.input_size()) + " and gives " +
                  std::to_string(f.output_size()));
    std::string prefix = call + "/";
    if (!prefixes_.insert(prefix).second) {  // node names need not be unique; value names must
      prefix = call + "#" + std::to_string(++calls_) + "/";
      prefixes_.insert(prefix);
    }
    std::unordered_map<std::string, std::string> bound;
    for (int i = 0; i < f.input_size(); ++i) bound[f.input(i)] = i < n.input_size() ? n.input(i) : std::string();
    // A function output that is one of its inputs passes it through: an Identity makes the
    // call's output (binding the name to both would rename the body's reads of the input).
    std::vector<std::pair<std::string, std::string>> passthrough;
    for (int i = 0; i < n.output_size(); ++i) {
      if (n.output(i).empty()) continue;
      auto in = bound.find(f.output(i));
      if (in != bound.end())
        passthrough.emplace_back(in->second, n.output(i));
      else
        bound[f.output(i)] = n.output(i);
    }
    AttrMap given;
    for (const auto& a : n.attribute()) given[a.name()] = a;
    auto rename = [&](const std::string& v) {
      if (v.empty()) return v;
      auto b = bound.find(v);
      return b != bound.end() ? b->second : prefix + v;
    };
    for (int k = 0; k < f.node_size(); ++k) {
      const op::NodeProto& body = f.node(k);
      op::NodeProto m = body;
      m.set_name(prefix + (body.name().empty() ? body.op_type() + "_" + std::to_string(k) : body.name()));
      for (auto& v : *m.mutable_input()) v = rename(v);
      for (auto& v : *m.mutable_output()) v = rename(v);
      m.clear_attribute();
      for (const auto& a : body.attribute()) {
        if (a.ref_attr_name().empty()) {
          *m.add_attribute() = a;
          continue;
        }
        const auto* src = given.count(a.ref_attr_name()) ? &given.at(a.ref_attr_name()) : nullptr;
        if (!src && it->second.defaults.count(a.ref_attr_name())) src = &it->second.defaults.at(a.ref_attr_name());
        if (!src) continue;  // neither given nor defaulted: the attribute is absent, as in ONNX
        op::AttributeProto* c = m.add_attribute();
        *c = *src;
        c->set_name(a.name());
      }
      emit(m, out, depth + 1, depth == 0 ? where : top);
    }
    for (const auto& [from, to] : passthrough) {
      if (from.empty()) throw Error(where + ": output '" + to + "' passes through an input the call does not give");
      op::NodeProto id;
      id.set_op_type("Identity");
      id.set_name(prefix + "passthrough_" + to);
      id.add_input(from);
      id.add_output(to);
      emit(id, out, depth + 1, top);
    }
  }

 private:
  std::string name_;
  std::map<std::pair<std::string, std::string>, Function> functions_;
  int calls_ = 0;
  std::unordered_set<std::string> prefixes_;
};

// Keeps the nodes that a graph output depends on, in their order.
void drop_dead_nodes(op::GraphProto& g) {
  std::unordered_map<std::string, int> producer;
  for (int i = 0; i < g.node_size(); ++i)
    for (const auto& o : g.node(i).output())
      if (!o.empty()) producer[o] = i;
  std::vector<bool> live(static_cast<size_t>(g.node_size()), false);
  std::vector<std::string> work;
  for (const auto& o : g.output()) work.push_back(o.name());
  while (!work.empty()) {
    const std::string v = std::move(work.back());
    work.pop_back();
    auto p = producer.find(v);
    if (p == producer.end() || live[static_cast<size_t>(p->second)]) continue;
    live[static_cast<size_t>(p->second)] = true;
    for (const auto& in : g.node(p->second).input())
      if (!in.empty()) work.push_back(in);
  }
  google::protobuf::RepeatedPtrField<op::NodeProto> kept;
  for (int i = 0; i < g.node_size(); ++i)
    if (live[static_cast<size_t>(i)]) *kept.Add() = g.node(i);
  g.mutable_node()->Swap(&kept);
}

}  // namespace

bool inline_local_functions(op::ModelProto& model, const std::string& model_name) {
  if (model.functions_size() == 0) return false;
  Inliner inliner(model, model_name);
  google::protobuf::RepeatedPtrField<op::NodeProto> nodes;
  for (const auto& n : model.graph().node()) inliner.emit(n, nodes, 0);
  model.mutable_graph()->mutable_node()->Swap(&nodes);
  model.clear_functions();
  drop_dead_nodes(*model.mutable_graph());
  return true;
}

}  // namespace sluice::converters::onnx
