#include "converters/onnx/inline_functions.h"

#include <google/protobuf/unknown_field_set.h>
#include <onnx/defs/schema.h>

#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sluice/sluice.h"

namespace sluice::converters::onnx {

namespace op = ::ONNX_NAMESPACE;

namespace {

constexpr int kMaxDepth = 16;
// Calls that each call the next several times would grow without bound: 4^9 nodes took 8 s to
// plan, linear as it is by now; the largest real models have tens of thousands.
constexpr int64_t kMaxNodes = 1 << 18;
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

// An ONNX operator of any opset up to 21: ONNX 1.12's registry knows those to 17; the ones
// that opsets 18 to 21 added are listed.
bool is_standard_op(const std::string& name) {
  static const std::unordered_set<std::string> kNewer = {
      "AffineGrid", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "CenterCropPad", "Col2Im", "DeformConv", "Gelu",
      "GroupNormalization", "ImageDecoder", "Mish", "RegexFullMatch", "StringConcat", "StringSplit"};
  return op::OpSchemaRegistry::Schema(name, "") != nullptr || kNewer.count(name) > 0;
}

int64_t default_opset(const google::protobuf::RepeatedPtrField<op::OperatorSetIdProto>& imports) {
  for (const auto& imp : imports)
    if (imp.domain().empty() || imp.domain() == "ai.onnx") return imp.version();
  return -1;
}

// Subgraph sg (an If branch in a function's body) as the inlined copy has it: the names it
// reads from outside (and the graphs nested in it) renamed by `rename` (the body's values, which
// the copy knows by the call's names), and the names it defines itself by `prefix` + name (a
// branch's own `t` met a main-graph `t`: two producers of one name, found by a review).
template <class Rename>
void rename_subgraph(op::GraphProto& sg, std::set<std::string> local, const Rename& rename, const std::string& prefix) {
  for (const auto& v : sg.input()) local.insert(v.name());
  for (const auto& t : sg.initializer()) local.insert(t.name());
  for (const auto& n : sg.node()) local.insert(n.output().begin(), n.output().end());
  auto name = [&](const std::string& v) { return v.empty() ? v : local.count(v) ? prefix + v : rename(v); };
  for (auto& v : *sg.mutable_input()) v.set_name(name(v.name()));
  for (auto& t : *sg.mutable_initializer()) t.set_name(name(t.name()));
  for (auto& v : *sg.mutable_value_info()) v.set_name(name(v.name()));
  for (auto& n : *sg.mutable_node()) {
    if (!n.name().empty()) n.set_name(prefix + n.name());
    for (auto& v : *n.mutable_input()) v = name(v);
    for (auto& v : *n.mutable_output()) v = name(v);
    for (auto& a : *n.mutable_attribute())
      if (a.type() == op::AttributeProto::GRAPH) rename_subgraph(*a.mutable_g(), local, rename, prefix);
  }
  for (auto& o : *sg.mutable_output()) o.set_name(name(o.name()));
}

// Node m's attributes that refer to the call's (ref_attr_name) as the call gives them, or as the
// function's defaults, or absent when neither has them (as in ONNX; returned: what is missing,
// the last one). Also inside the graphs of its attributes: a LeakyRelu in an If branch of the
// body took alpha 0 where the call gave 0.3 (a fuzzer's find).
std::string resolve_refs(op::NodeProto& m, const AttrMap& given, const AttrMap& defaults) {
  std::string missing;
  google::protobuf::RepeatedPtrField<op::AttributeProto> attrs;
  attrs.Swap(m.mutable_attribute());
  for (const auto& a : attrs) {
    if (a.ref_attr_name().empty()) {
      op::AttributeProto* c = m.add_attribute();
      *c = a;
      if (c->type() == op::AttributeProto::GRAPH)
        for (auto& n : *c->mutable_g()->mutable_node()) resolve_refs(n, given, defaults);
      continue;
    }
    const op::AttributeProto* src = given.count(a.ref_attr_name())      ? &given.at(a.ref_attr_name())
                                    : defaults.count(a.ref_attr_name()) ? &defaults.at(a.ref_attr_name())
                                                                        : nullptr;
    if (!src) {
      missing = "its attribute '" + a.name() + "' refers to the call's attribute '" + a.ref_attr_name() +
                "', which the call does not give and the function gives no default for";
      continue;
    }
    op::AttributeProto* c = m.add_attribute();
    *c = *src;
    c->set_name(a.name());
  }
  return missing;
}

class Inliner {
 public:
  Inliner(const op::ModelProto& model, std::string name, std::map<std::string, int64_t>& calls)
      : name_(std::move(name)), calls_per_function_(calls) {
    const int64_t model_opset = default_opset(model.opset_import());
    for (const auto& f : model.functions()) {
      const std::string fname = f.domain() + "." + f.name();
      const int64_t fo = default_opset(f.opset_import());
      if (fo >= 0 && fo != model_opset)
        throw Error(name_ + ": function '" + fname + "' imports opset " + std::to_string(fo) + " but the model imports " +
                    std::to_string(model_opset) + "; Sluice runs one opset per model (re-export, or inline with onnx.inliner)");
      // A function in the default domain named like a standard operator does not replace it
      // (ONNX Runtime runs the operator too).
      if ((f.domain().empty() || f.domain() == "ai.onnx") && is_standard_op(f.name())) continue;
      // IR 10's overloads (same domain and name) are told apart by a field Debian's ONNX 1.12
      // proto does not have: refuse rather than call the wrong one.
      if (!functions_.emplace(std::make_pair(f.domain(), f.name()), Function{&f, defaults_of(f)}).second)
        throw Error(name_ + ": function '" + fname + "' is defined more than once (overloads are not supported)");
    }
    take_names(model.graph());
  }

  // Every name of graph g and of the graphs inside its nodes (an If's branches): a body's
  // prefix must meet none of them.
  void take_names(const op::GraphProto& g) {
    for (const auto& v : g.input()) taken_.insert(v.name());
    for (const auto& v : g.output()) taken_.insert(v.name());
    for (const auto& t : g.initializer()) taken_.insert(t.name());
    for (const auto& n : g.node()) {
      taken_.insert(n.input().begin(), n.input().end());
      taken_.insert(n.output().begin(), n.output().end());
      for (const auto& a : n.attribute())
        if (a.type() == op::AttributeProto::GRAPH) take_names(a.g());
    }
  }

  // The calls in subgraph sg (an If's branch), expanded in place, as the main graph's are.
  void inline_in(op::GraphProto& sg, int depth, const std::string& top) {
    google::protobuf::RepeatedPtrField<op::NodeProto> nodes;
    for (const auto& m : sg.node()) emit(m, nodes, depth, top);
    sg.mutable_node()->Swap(&nodes);
  }

  // Appends `n` to `out`, or the body of the function it calls, expanded. `top` names the
  // main graph's call that this expansion started from, for errors deep inside it.
  void emit(const op::NodeProto& n, google::protobuf::RepeatedPtrField<op::NodeProto>& out, int depth,
            const std::string& top = "") {
    auto it = functions_.find({n.domain(), n.op_type()});
    if (it == functions_.end()) {
      if (expansions_ + out.size() >= kMaxNodes)
        throw Error((top.empty() ? name_ : top) + ": inlining function calls makes more than " + std::to_string(kMaxNodes) +
                    " nodes and calls");
      op::NodeProto* added = out.Add();
      *added = n;
      // Calls inside its branches are expanded too (else the untaken branch of an If that
      // calls a model-local function refused the model as an unknown op).
      for (auto& a : *added->mutable_attribute())
        if (a.type() == op::AttributeProto::GRAPH) inline_in(*a.mutable_g(), depth, top);
      return;
    }
    const op::FunctionProto& f = *it->second.proto;
    if (++expansions_ + out.size() > kMaxNodes)  // empty bodies emit nothing, so count the calls too
      throw Error((top.empty() ? name_ + ": node '" + n.name() + "'" : top) + ": inlining function calls makes more than " +
                  std::to_string(kMaxNodes) + " nodes and calls");
    const std::string call = n.name().empty() ? "call" + std::to_string(++calls_) : n.name();
    const std::string fname = f.domain() + "." + f.name();
    ++calls_per_function_[fname];
    const std::string where = name_ + ": node '" + call + "' (call of function '" + fname + "')";
    if (depth >= kMaxDepth)
      throw Error(top + ": function calls nest deeper than " + std::to_string(kMaxDepth) + " (does '" + fname +
                  "' call itself?)");
    if (n.input_size() > f.input_size() || n.output_size() > f.output_size())
      throw Error(where + ": " + std::to_string(n.input_size()) + " inputs and " + std::to_string(n.output_size()) +
                  " outputs, but the function takes " + std::to_string(f.input_size()) + " and gives " +
                  std::to_string(f.output_size()));
    const std::string prefix = fresh_prefix(call);
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
    // The body renamed, and its new names taken, before any call in it picks its own prefix.
    std::vector<op::NodeProto> renamed(static_cast<size_t>(f.node_size()));
    std::unordered_set<std::string> made(f.input().begin(), f.input().end());
    for (int k = 0; k < f.node_size(); ++k) {
      const op::NodeProto& body = f.node(k);
      for (const auto& v : body.input())
        if (!v.empty() && !made.count(v))
          throw Error(where + ": the function's body reads '" + v +
                      "', which is neither an input of the function nor made earlier in its body");
      made.insert(body.output().begin(), body.output().end());
      op::NodeProto& m = renamed[static_cast<size_t>(k)];
      m = body;
      m.set_name(prefix + (body.name().empty() ? body.op_type() + "_" + std::to_string(k) : body.name()));
      for (auto& v : *m.mutable_input()) v = rename(v);
      for (auto& v : *m.mutable_output()) v = rename(v);
      // (a reference to an attribute the call does not give: the last one)
      const std::string missing = resolve_refs(m, given, it->second.defaults);
      // An If's branches read the body's values by name: those go by the call's names too.
      for (auto& a : *m.mutable_attribute())
        if (a.type() == op::AttributeProto::GRAPH) {
          rename_subgraph(*a.mutable_g(), {}, rename, prefix);
          take_names(a.g());  // (a later call's prefix must meet none of them: a review's find)
        }
      // A Constant left without any value then failed as "needs a 'value' attribute", with no
      // word of the call's missing attribute (a probe).
      if (body.op_type() == "Constant" && m.attribute_size() == 0 && !missing.empty())
        throw Error(where + ": the body's Constant '" + m.name() + "' has no value: " + missing);
      taken_.insert(m.output().begin(), m.output().end());
    }
    for (const op::NodeProto& m : renamed) emit(m, out, depth + 1, depth == 0 ? where : top);
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

  // "<call>/", or "<call>#N/" when some name already starts with that: the body's values are
  // named under it, so they can meet no other value (a main-graph "f/t" and call f's own t).
  std::string fresh_prefix(const std::string& call) {
    std::string p = call + "/";
    int& k = next_suffix_[call];  // calls that share a name resume the count, not start over
    while (!prefix_free(p)) p = call + "#" + std::to_string(++k) + "/";
    prefixes_.insert(p);
    return p;
  }

  bool prefix_free(const std::string& p) const {
    if (prefixes_.count(p)) return false;
    auto it = taken_.lower_bound(p);
    return it == taken_.end() || it->compare(0, p.size(), p) != 0;
  }

 private:
  std::string name_;
  std::map<std::pair<std::string, std::string>, Function> functions_;
  int calls_ = 0;
  int64_t expansions_ = 0;
  std::map<std::string, int64_t>& calls_per_function_;
  std::set<std::string> taken_;  // every value name so far, sorted so a prefix is one lookup
  std::unordered_set<std::string> prefixes_;
  std::unordered_map<std::string, int> next_suffix_;
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
    const op::NodeProto& n = g.node(p->second);
    for (const auto& in : n.input())
      if (!in.empty()) work.push_back(in);
    // (Its branches' reads too: a value only an If's branch reads was dropped, found by a review.)
    for (const auto& a : n.attribute())
      if (a.type() == op::AttributeProto::GRAPH)
        for (const auto& in : outer_reads(a.g())) work.push_back(in);
  }
  google::protobuf::RepeatedPtrField<op::NodeProto> kept;
  for (int i = 0; i < g.node_size(); ++i)
    if (live[static_cast<size_t>(i)]) *kept.Add() = g.node(i);
  g.mutable_node()->Swap(&kept);
}

}  // namespace

// The names that the nodes of gp (and of the graphs inside them) read from outside gp: what an
// If node reads through its branches, besides its condition.
std::set<std::string> outer_reads(const op::GraphProto& gp) {
  std::set<std::string> defined, reads;
  for (const auto& v : gp.input()) defined.insert(v.name());  // (a Loop's body has inputs)
  for (const auto& t : gp.initializer()) defined.insert(t.name());
  for (const auto& n : gp.node()) defined.insert(n.output().begin(), n.output().end());
  for (const auto& n : gp.node()) {
    for (const auto& in : n.input())
      if (!in.empty() && !defined.count(in)) reads.insert(in);
    for (const auto& a : n.attribute())
      if (a.type() == op::AttributeProto::GRAPH)
        for (const auto& in : outer_reads(a.g()))
          if (!defined.count(in)) reads.insert(in);
  }
  return reads;
}

bool inline_local_functions(op::ModelProto& model, const std::string& model_name, std::map<std::string, int64_t>& calls) {
  if (model.functions_size() == 0) return false;
  Inliner inliner(model, model_name, calls);
  google::protobuf::RepeatedPtrField<op::NodeProto> nodes;
  for (const auto& n : model.graph().node()) inliner.emit(n, nodes, 0);
  model.mutable_graph()->mutable_node()->Swap(&nodes);
  model.clear_functions();
  drop_dead_nodes(*model.mutable_graph());
  return true;
}

}  // namespace sluice::converters::onnx
