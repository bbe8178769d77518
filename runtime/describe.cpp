// Plan::describe: what `sluice inspect` prints.
#include <algorithm>

#include <nlohmann/json.hpp>
#include <sstream>

#include "ops/gated/gate.h"
#include "runtime/plan.h"

namespace sluice::runtime {

namespace {
// The layout a node runs in; a max pool that reads resident planes and writes NHWC (its node
// is marked planar) shows both.
std::string node_layout(const graph::Graph& g, const graph::Node& n) {
  std::string l = graph::layout_name(n.layout);
  if (n.layout == graph::Layout::Planar && !n.outputs.empty() && n.outputs[0] != graph::kNoValue &&
      g.value(n.outputs[0]).layout != graph::Layout::Planar)
    l += " -> " + std::string(graph::layout_name(g.value(n.outputs[0]).layout));
  return l;
}

// The most output channels a gate keeps per input, by its form: k for the winners and losers
// forms, k - 1 for a strict threshold at the k-th largest value; 0 when ties can keep more (an
// inclusive threshold) or the node has no gate of its own.
int64_t kept_at_most(const graph::GatedConvParams& p, int64_t m) {
  if (!p.gating) return 0;
  switch (p.form) {
    case graph::GateForm::Winners: case graph::GateForm::Losers: return std::min(p.k, m);
    case graph::GateForm::Threshold: return std::max<int64_t>(0, std::min(p.k - 1, m));
    default: return 0;
  }
}

// The most (output, input) channels gated conv n computes per input at the model's k, as the
// kernel decides (ops/gated/gated_conv.cpp): its gate's kept outputs (all of them without a
// gate), times the inputs the gate before it leaves active; all of both where the kernel may
// run its dense conv instead (a whole input and >= kDenseFromPercent of the outputs, or with
// no gate, that share of the inputs).
struct Bound {
  int64_t out, in;
};
Bound bound_at_k(const graph::Graph& g, const graph::Node& n);

// The most output channels of gated conv n that its readers can see active per input: the kept
// ones, plus those whose suppressed value act(beta) is not 0 (an unmasked beta); all where the
// conv may run dense or adds a residual over every channel.
int64_t listed_at_most(const graph::Graph& g, const graph::Node& n) {
  const auto& gp = n.p<graph::GatedConvParams>();
  const int64_t m = g.value(n.outputs[0]).shape[1];
  const Bound b = bound_at_k(g, n);
  if (gp.fused_sum || b.out >= m) return m;
  const float* beta = n.inputs.size() > 5 && n.inputs[5] != graph::kNoValue
                          ? g.value(n.inputs[5]).constant.data<float>()
                          : nullptr;
  int64_t listed = b.out;
  for (int64_t o = 0; o < m; ++o) listed += ops::gate::suppressed_value(gp, beta, o) != 0.f;
  return std::min(listed, m);
}

Bound bound_at_k(const graph::Graph& g, const graph::Node& n) {
  const auto& gp = n.p<graph::GatedConvParams>();
  const int64_t m = g.value(n.outputs[0]).shape[1], c = g.value(n.inputs[0]).shape[1];
  const bool own = gp.form != graph::GateForm::All;
  int64_t ko = own ? kept_at_most(gp, m) : m, ki = c;
  if (own && ko == 0) return {m, c};  // no bound from the gate (off, or an inclusive threshold)
  if (const graph::Node* src = graph::gated_activity_source(g, n.inputs[0])) ki = std::min(c, listed_at_most(g, *src));
  const int64_t pct = ops::gate::kDenseFromPercent;
  if ((ki == c && ko * 100 >= m * pct) || (!own && ki * 100 >= c * pct)) return {m, c};
  return {ko, ki};
}
}  // namespace

std::string Plan::describe(bool as_json) const {
  using nlohmann::json;
  json j;
  j["model"] = g_.model_name;
  j["opset"] = g_.opset;
  json passes = json::array();
  for (const auto& [name, n] : pass_log_) passes.push_back({{"pass", name}, {"count", n}});
  j["passes"] = passes;
  int64_t total = 0, shifts = 0;
  std::vector<std::pair<std::string, std::string>> readers;  // (plain conv behind a gate, the gate)
  json nodes = json::array();
  for (const Step& st : steps_) {
    const graph::Node& n = g_.node(st.node);
    json in = json::array(), out = json::array();
    for (int i : st.in)
      if (i >= 0)
        in.push_back({{"name", g_.value(slots_[i].value).name},
                      {"shape", slots_[i].shape},
                      {"layout", graph::layout_name(g_.value(slots_[i].value).layout)}});
    for (int o : st.out)
      if (o >= 0)
        out.push_back({{"name", g_.value(slots_[o].value).name},
                       {"shape", slots_[o].shape},
                       {"layout", graph::layout_name(g_.value(slots_[o].value).layout)}});
    nodes.push_back({{"name", n.name},
                     {"op", graph::op_name(n.op)},
                     {"kernel", st.kernel->name()},
                     {"layout", node_layout(g_, n)},
                     {"inputs", in},
                     {"outputs", out},
                     {"dense_macs", st.dense_macs},
                     {"executed_macs", st.executed_macs}});
    if (n.op == graph::OpType::Conv && !n.p<graph::ConvParams>().pre_shift.empty()) {
      nodes.back()["fused_shift"] = n.p<graph::ConvParams>().pre_shift.form;
      ++shifts;
    }
    if (n.op == graph::OpType::SluiceShift) {
      nodes.back()["shift_form"] = n.p<graph::ShiftParams>().form;
      ++shifts;
    }
    // A gated conv's executed MACs depend on the input; their bound at the model's k: its own
    // gate's kept outputs, and the inputs the gate before it leaves active.
    if (n.op == graph::OpType::SluiceGatedConv) {
      const int64_t m = g_.value(n.outputs[0]).shape[1], c = g_.value(n.inputs[0]).shape[1];
      const auto [ko, ki] = bound_at_k(g_, n);
      if (ko < m || ki < c) {
        // Depthwise: output channel o reads input channel o alone, so both must be active.
        const double out_part = static_cast<double>(ko) / static_cast<double>(m);
        const double in_part = static_cast<double>(ki) / static_cast<double>(c);
        const bool depthwise = n.p<graph::GatedConvParams>().conv.group > 1;
        nodes.back()["macs_at_k"] = static_cast<int64_t>(static_cast<double>(st.executed_macs) *
                                                         (depthwise ? std::min(out_part, in_part) : out_part * in_part));
        nodes.back()["active_out_at_most"] = ko;
        nodes.back()["active_in_at_most"] = ki;
      }
    }
    // A plain conv behind a gate (passes::read_gated_inputs): which gate's channels it reads.
    if (n.op == graph::OpType::SluiceGatedConv && n.p<graph::GatedConvParams>().form == graph::GateForm::All)
      if (const graph::Node* src = graph::gated_activity_source(g_, n.inputs[0])) {
        nodes.back()["reads_gate"] = src->name;
        readers.emplace_back(n.name, src->name);
      }
    if ((n.op == graph::OpType::Conv || n.op == graph::OpType::SluiceGatedConv) && graph::conv_params(n).dense_out > 0) {
      nodes.back()["dense_out_channels"] = graph::conv_params(n).dense_out;
      nodes.back()["out_channels"] = g_.value(n.outputs[0]).shape[1];
      // (dense_in is per group, of the model's dense_group groups)
      const graph::ConvParams& cp = graph::conv_params(n);
      nodes.back()["dense_in_channels"] = cp.dense_in * (cp.dense_group > 0 ? cp.dense_group : cp.group);
      nodes.back()["in_channels"] = g_.value(n.inputs[0]).shape[1];
    }
    if (n.op == graph::OpType::Gemm && (n.p<graph::GemmParams>().dense_n > 0 || n.p<graph::GemmParams>().dense_k > 0)) {
      const auto& gp = n.p<graph::GemmParams>();
      const int64_t k = g_.value(n.inputs[0]).shape[gp.trans_a ? 0 : 1], out = g_.value(n.outputs[0]).shape[1];
      nodes.back()["dense_out_features"] = gp.dense_n > 0 ? gp.dense_n : out;
      nodes.back()["out_features"] = out;
      nodes.back()["dense_in_features"] = gp.dense_k > 0 ? gp.dense_k : k;
      nodes.back()["in_features"] = k;
    }
    total += st.dense_macs;
  }
  j["nodes"] = nodes;
  json gates = json::array();
  int recognised = 0;
  for (const graph::GateReport& r : g_.gates) {
    gates.push_back({{"node", r.conv}, {"recognised", r.recognised}, {"reason", r.reason}, {"form", r.form}});
    recognised += r.recognised ? 1 : 0;
  }
  j["gates"] = gates;
  j["gates_recognised"] = recognised;
  json pruning = json::array();
  int64_t removed = 0, executed_total = 0;
  for (const graph::PruneReport& r : g_.pruning) {
    pruning.push_back({{"node", r.conv}, {"channels", r.channels}, {"dead", r.dead}, {"removed", r.removed},
                       {"folded", r.folded}, {"unread", r.unread}, {"kept_reason", r.kept_reason},
                       {"unit", r.features ? "features" : "channels"}});
    removed += r.removed;
  }
  for (const auto& st : steps_) executed_total += st.executed_macs;
  j["pruning"] = pruning;
  j["shifts_recognised"] = shifts;
  j["channels_removed"] = removed;
  j["static_macs"] = executed_total;
  j["dense_macs"] = total;
  j["arena_bytes"] = arena_bytes_;
  j["threads"] = threads_;
  j["inlined_calls"] = g_.inlined_calls;
  json ifs = json::array();
  for (const auto& [node, branch] : g_.ifs_taken) ifs.push_back({{"node", node}, {"branch", branch}});
  j["if_branches_taken"] = ifs;
  if (as_json) return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);  // (names need not be UTF-8)

  std::ostringstream s;
  s << g_.model_name << " (opset " << g_.opset << "): " << steps_.size() << " steps, ";
  if (executed_total != total) s << executed_total / 1e6 << " of ";  // (pruned, sparse, shift: what runs, statically)
  s << total / 1e6 << " M MACs, arena " << arena_bytes_ / 1024 << " KiB\n"
    << "kernels chosen for " << threads_ << (threads_ == 1 ? " thread" : " threads")
    << " (the times of measured choices below are on them; -t/--threads sets it)\npasses:";
  for (const auto& [name, n] : pass_log_) s << " " << name << "=" << n;
  s << "\n";
  if (!g_.inlined_calls.empty()) {
    s << "function calls inlined at import:";
    for (const auto& [fname, n] : g_.inlined_calls) s << " " << fname << " x" << n;
    s << "\n";
  }
  if (!g_.ifs_taken.empty()) {
    s << "If nodes decided at load (their conditions follow from the shapes and constants):";
    for (const auto& [node, branch] : g_.ifs_taken) s << " '" << node << "' " << branch;
    s << "\n";
  }
  if (!g_.gates.empty()) {
    s << "gates: " << recognised << " of " << g_.gates.size() << " recognised\n";
    for (const graph::GateReport& r : g_.gates)
      s << "  " << (r.recognised ? "gated   " : "NOT     ") << "'" << r.conv << "': "
        << (r.recognised ? r.form : r.reason) << "\n";
    for (const auto& [conv, gate] : readers)
      s << "  reads   '" << conv << "': no gate of its own; only the input channels '" << gate << "' keeps\n";
  }
  if (!g_.pruning.empty()) {
    bool features = false;
    for (const graph::PruneReport& r : g_.pruning) features |= r.features;
    s << "pruning: " << removed << (features ? " channels and features" : " channels") << " removed (dead or unread); " << executed_total / 1e6 << " of " << total / 1e6
      << " M MACs left\n";
    for (const graph::PruneReport& r : g_.pruning) {
      s << "  '" << r.conv << "': " << r.removed << " of " << r.channels << (r.features ? " features" : " channels") << " removed";
      if (r.folded) s << " (" << r.folded << " constants folded into readers' biases)";
      if (r.unread) s << " (" << r.unread << " of them live but read by no one: zero weights in every reader)";
      if (r.dead + r.unread > r.removed) s << "; " << r.dead + r.unread - r.removed << " dead kept: " << r.kept_reason;
      s << "\n";
    }
  }
  for (const auto& nd : nodes) {
    s << "  " << nd["op"].get<std::string>() << " '" << nd["name"].get<std::string>() << "' ["
      << nd["kernel"].get<std::string>() << ", " << nd["layout"].get<std::string>() << "] ";
    bool first = true;
    for (const auto& o : nd["outputs"]) {
      s << (first ? "-> " : ", ") << shape_str(o["shape"].get<Shape>());
      if (o["layout"] == "planar") s << " in resident planes";
      first = false;
    }
    // What runs, and of how many when it skips work statically (removed channels, zero weights).
    const int64_t dense = nd["dense_macs"].get<int64_t>(), executed = nd["executed_macs"].get<int64_t>();
    if (dense > 0) {
      s << "  ";
      if (executed != dense) s << executed / 1e6 << " of ";
      s << dense / 1e6 << " M MACs";
      if (nd.contains("macs_at_k")) {
        const auto& out = nd["outputs"][0]["shape"];
        const auto& in = nd["inputs"][0]["shape"];
        s << ", at most " << nd["macs_at_k"].get<int64_t>() / 1e6 << " M at k (outputs "
          << nd["active_out_at_most"].get<int64_t>() << "/" << out[1].get<int64_t>() << ", inputs "
          << nd["active_in_at_most"].get<int64_t>() << "/" << in[1].get<int64_t>() << ")";
      }
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace sluice::runtime
