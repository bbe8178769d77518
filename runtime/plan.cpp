#include "runtime/plan.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>

#include "graph/passes/memory_plan.h"
#include "graph/passes/passes.h"
#include "ops/common/measure.h"
#include "ops/conv/planar.h"
#include "ops/sparse/sparse.h"
#include "runtime/memory_limit.h"

namespace sluice::runtime {

using graph::NodeId;
using graph::OpType;
using graph::ValueId;

namespace {
// From a catch handler of e: e again, its message led by the model's file name unless it already is.
[[noreturn]] void throw_naming_model(const std::string& model, const Error& e) {
  const std::string msg = e.what();
  if (model.empty() || msg.rfind(model + ":", 0) == 0) throw;  // (called in a handler: e as it was thrown)
  throw Error(model + ": " + msg);
}
}  // namespace

Plan::Plan(const graph::Graph& model, const std::map<std::string, Shape>& input_shapes, const SessionOptions& options,
           const std::map<std::string, Tensor>& specialised_inputs)
    : g_(model), threads_(omp_get_max_threads()) {
  try {
    graph::passes::bind_input_shapes(g_, input_shapes, specialised_inputs);
    optimise(options);
    check_value_sizes();
    build_steps(options);
    plan_memory();
    find_unwritten_outputs();
    find_nonfinite_weights();
  } catch (const Error& e) {
    // (Constant folding runs kernels on values known at load, integer inputs among them: their
    // refusals name the node; the model file in front, as every other load-time error has it.)
    throw_naming_model(g_.model_name, e);
  } catch (const std::bad_alloc&) {
    throw Error(g_.model_name + ": out of memory while preparing to run it" + largest_value_note() +
                "; check the model's and the inputs' shapes (`sluice inspect` shows them)");
  }
}

void Plan::find_nonfinite_weights() {
  // (An inf bias is not one: -inf under a Relu is 0 and +inf stays inf in every kernel, as in
  // ONNX Runtime; a masked-out class's -inf logit bias is a legitimate model.)
  for (const graph::Node& n : g_.nodes) {
    if (n.dead) continue;
    const bool linear = n.op == OpType::Conv || n.op == OpType::SluiceGatedConv || n.op == OpType::ConvTranspose ||
                        n.op == OpType::Gemm || n.op == OpType::MatMul;
    if (!linear && n.op != OpType::BatchNormalization) continue;
    // A gated conv's every constant (weights, bias, the predictor's weights and bias, beta): its
    // suppressed channels multiply them by 0, which ONNX Runtime makes NaN of an inf, and a NaN
    // or inf in the predictor decides which channels win.
    const bool gated = n.op == OpType::SluiceGatedConv;
    for (size_t i = 1; i < n.inputs.size() && i <= (gated ? 5 : linear ? 2 : 4); ++i) {
      const ValueId v = n.inputs[i];
      if (v == graph::kNoValue || !g_.value(v).is_constant() || g_.value(v).dtype != DType::Float32) continue;
      const Tensor& t = g_.value(v).constant;
      const float* p = t.data<float>();
      const bool weight = gated || (linear && i == 1);
      for (int64_t j = 0; j < t.numel(); ++j)
        if (std::isnan(p[j]) || (weight && std::isinf(p[j]))) {
          nonfinite_weights_ = n.name;
          return;
        }
    }
  }
}

namespace {
double value_bytes(const graph::Value& v) {
  double b = static_cast<double>(dtype_size(v.dtype));
  for (int64_t d : v.shape) b *= d < 0 ? 0.0 : static_cast<double>(d);
  return b;
}

}  // namespace

std::string Plan::largest_value_note() const {
  const graph::Value* big = nullptr;
  for (const graph::Value& v : g_.values)
    if (v.dtype != DType::Undefined && (!big || value_bytes(v) > value_bytes(*big))) big = &v;
  if (!big) return "";
  return " (its largest value, '" + big->name + "' " + shape_str(big->shape) + ", needs " + gib(value_bytes(*big)) +
         "; the limit is " + memory_limit().what + ")";
}

void Plan::check_value_sizes() const {
  const double have = machine_bytes();
  if (have <= 0) return;
  for (const graph::Node& n : g_.nodes) {
    if (n.dead) continue;
    for (ValueId o : n.outputs) {
      if (o == graph::kNoValue) continue;
      const graph::Value& v = g_.value(o);
      if (value_bytes(v) > have)
        throw Error(g_.model_name + ": node '" + n.name + "' (" + graph::op_name(n.op) + ") would write '" + v.name +
                    "' " + shape_str(v.shape) + ", " + gib(value_bytes(v)) + ", more than " + memory_limit().what +
                    "; check the model's and the inputs' shapes");
    }
  }
}

void Plan::optimise(const SessionOptions& options) {
  namespace p = graph::passes;
  auto log = [&](const char* name, int n) { pass_log_.emplace_back(name, n); };
  int dead = 0;
  log("lift_1d", p::lift_1d(g_));
  log("fold_constants", p::fold_constants(g_));
  if (options.optimize) {
    log("normalise_gemms", p::normalise_gemms(g_));
    log("eliminate_identities", p::eliminate_identities(g_));
    log("sink_squeezes", p::sink_squeezes(g_));
    log("recognise_shifts", p::recognise_shifts(g_));
    log("fold_batch_norm", p::fold_batch_norm(g_));
    // A BatchNorm behind a constant Add that only now folded into a conv (Conv -> Add -> BN)
    // folds in turn, and so on. Before the gates: a BN written as Mul and Add between a conv and
    // its gate's Mul (tf2onnx's) goes into the conv, which the gate then finds.
    int scaled = p::fold_channel_scales(g_);
    log("fold_channel_scales", scaled);
    while (scaled > 0) {
      const int bn = p::fold_batch_norm(g_);
      if (bn == 0) break;
      log("fold_batch_norm", bn);
      scaled = p::fold_channel_scales(g_);
      log("fold_channel_scales", scaled);
    }
    log("recognise_gates", p::recognise_gates(g_, options.density, options.gating));
    const int linear = p::linear_as_gemm(g_);
    log("linear_as_gemm", linear);
    if (linear > 0) {  // a BatchNorm1d behind a Linear that was a MatMul
      const int bn = p::fold_batch_norm(g_);
      if (bn > 0) log("fold_batch_norm", bn);
    }
    log("fuse_residual_add", p::fuse_residual_add(g_));
    log("fuse_activations", p::fuse_activations(g_));
    dead = p::remove_dead_nodes(g_);  // what the rewrites above left unread (a recognised shift's Slices) must not keep channels
    const int pruned = p::prune_channels(g_);
    log("prune_channels", pruned);
    // A depthwise shift with pruned channels (all-zero kernels) is one-hot only once they are
    // gone: recognised now, it runs as a shift, fused into its 1x1 reader.
    if (pruned > 0) {
      const int shifts = p::recognise_shifts(g_);
      if (shifts > 0) {
        log("recognise_shifts", shifts);
        dead += p::remove_dead_nodes(g_);
      }
    }
    log("read_gated_inputs", p::read_gated_inputs(g_, options.sparse != SparseMode::Off));
  }
  log("remove_dead_nodes", dead + p::remove_dead_nodes(g_));
  if (options.optimize) log("assign_layouts", p::assign_layouts(g_));
}

namespace {
// What one run of node n on kernel k executes: the kernel's own count where it skips work
// statically (sparse weights), else the node's.
int64_t executed_macs(const ops::Kernel& k, const graph::Graph& g, const graph::Node& n) {
  return k.executed_macs() >= 0 ? k.executed_macs() : ops::static_macs(g, n);
}
}  // namespace

size_t Plan::slot_bytes(const graph::Value& v) {
  size_t bytes = dtype_size(v.dtype);
  if (v.layout == graph::Layout::Planar)  // resident planes: N x C planes with their borders
    return bytes * static_cast<size_t>(ops::planar::resident_floats(v.shape, v.wide_rows));
  for (int64_t d : v.shape) bytes *= static_cast<size_t>(d);
  return bytes;
}

int Plan::slot_of(ValueId v) {
  if (v == graph::kNoValue) return -1;
  if (auto it = slot_index_.find(v); it != slot_index_.end()) return it->second;
  const graph::Value& val = g_.value(v);
  Slot s;
  s.value = v;
  s.dtype = val.dtype;
  s.shape = val.shape;
  s.bytes = slot_bytes(val);
  if (val.is_constant()) {
    s.kind = SlotKind::Constant;
  } else if (val.is_input) {
    s.kind = SlotKind::Input;
    for (size_t i = 0; i < g_.inputs.size(); ++i)
      if (g_.inputs[i] == v) s.offset = i;
  } else if (val.is_output) {
    s.kind = SlotKind::Output;
    for (size_t i = 0; i < g_.outputs.size(); ++i)
      if (g_.outputs[i] == v) s.offset = i;
  }
  slots_.push_back(std::move(s));
  slot_index_[v] = static_cast<int>(slots_.size() - 1);
  return static_cast<int>(slots_.size() - 1);
}

void Plan::build_steps(const SessionOptions& options) {
  ops::KernelOptions ko{options.optimize, options.sparse};
  for (NodeId id : g_.topological_order()) {
    Step st;
    st.node = id;
    const graph::Node& n = g_.node(id);
    for (ValueId v : n.inputs) st.in.push_back(slot_of(v));
    for (ValueId v : n.outputs) st.out.push_back(slot_of(v));
    try {
      st.kernel = ops::make_kernel(g_, id, ko);
    } catch (const Error&) {
      throw;
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {  // a library's refusal (oneDNN, XNNPACK): say which node
      g_.fail(id, std::string("could not build its kernel: ") + e.what() +
                      " (a Sluice bug if the model is valid; `--reference` runs it without optimised kernels)");
    }
    st.dense_macs = ops::dense_macs(g_, n);
    st.executed_macs = executed_macs(*st.kernel, g_, n);
    st.wants_activity = n.op == OpType::SluiceGatedConv && n.layout == graph::Layout::NHWC;
    st.propagates_activity = graph::keeps_zero_channels(g_, n);
    scratch_bytes_ = std::max(scratch_bytes_, st.kernel->scratch_bytes());
    steps_.push_back(std::move(st));
  }
  for (ValueId o : g_.outputs) slot_of(o);
  if (options.optimize) fuse_shortcuts();
  if (options.optimize && options.resident_planes) {
    keep_planes_resident(ko);
    read_nchw_inputs(ko);
    fuse_pools();
  }
  for (const Step& st : steps_) {
    const OpType op = g_.node(st.node).op;
    skips_products_ = skips_products_ || st.executed_macs < st.dense_macs || op == OpType::SluiceGatedConv ||
                      op == OpType::SluiceShift;
  }
}

void Plan::find_unwritten_outputs() {
  std::vector<char> written(slots_.size(), 0);
  for (const Step& st : steps_)
    for (int o : st.out)
      if (o >= 0) written[static_cast<size_t>(o)] = 1;
  for (size_t i = 0; i < g_.outputs.size(); ++i) {
    const graph::Value& v = g_.value(g_.outputs[i]);
    const auto s = slot_index_.find(g_.outputs[i]);
    if (!v.is_constant() && !v.is_input && (s == slot_index_.end() || !written[static_cast<size_t>(s->second)]))
      unwritten_outputs_.push_back(i);
  }
}

void Plan::fuse_shortcuts() {
  int fused = 0;
  std::vector<char> done(g_.nodes.size(), 0);  // shortcuts fused already (into one conv only)
  for (size_t i = 0; i < steps_.size(); ++i) {
    Step& st = steps_[i];
    const graph::Node& n = g_.node(st.node);
    if (n.op != OpType::Conv || !st.kernel->takes_planes() || st.out.size() != 1) continue;
    // A later step (its readers come after it, and after this one that writes its output).
    for (size_t j = i + 1; j < steps_.size(); ++j) {
      Step& sb = steps_[j];
      const graph::Node& b = g_.node(sb.node);
      if (b.op != OpType::Conv || done[sb.node] || !ops::fusable_shortcut(g_, n, b)) continue;
      // At least half its weights zero: its non-zeros then cost this kernel a fraction of the
      // node's own (9 times fewer than a 3x3's at the same sparsity), less than its dense conv.
      if (ops::zero_fraction(g_.value(b.inputs[1]).constant) < ops::kMinSparsity) break;
      std::unique_ptr<ops::Kernel> k = st.kernel->with_shortcut(g_, n, b);
      if (!k) break;
      st.kernel = std::move(k);
      st.out.push_back(sb.out[0]);
      sb.kernel = ops::make_shortcut_done(g_, b, n.name);
      done[sb.node] = 1;
      sb.executed_macs = sb.kernel->executed_macs();
      scratch_bytes_ = std::max(scratch_bytes_, st.kernel->scratch_bytes());
      ++fused;
      break;
    }
  }
  pass_log_.emplace_back("fuse_shortcuts", fused);
}

void Plan::fuse_pools() {
  int fused = 0;
  for (size_t i = 0; i + 1 < steps_.size(); ++i) {
    Step& st = steps_[i];
    Step& next = steps_[i + 1];
    const graph::Node& n = g_.node(st.node);
    const graph::Node& pool = g_.node(next.node);
    if (n.op != OpType::Conv || pool.op != OpType::MaxPool || !st.kernel->keeps_planes() || n.outputs.size() != 1)
      continue;
    const graph::Value& y = g_.value(n.outputs[0]);
    if (y.layout != graph::Layout::Planar || y.consumers.size() != 1 || y.consumers[0] != next.node ||
        pool.inputs.size() != 1)
      continue;
    std::unique_ptr<ops::Kernel> k = ops::make_pooled_direct_conv(g_, n, pool);
    if (!k) continue;
    if (const std::string note = st.kernel->choice_note(); !note.empty()) k = ops::with_note(std::move(k), note);
    st.kernel = std::move(k);
    st.out.push_back(next.out[0]);
    next.kernel = ops::make_done_by(n.name);
    scratch_bytes_ = std::max(scratch_bytes_, st.kernel->scratch_bytes());
    ++fused;
  }
  pass_log_.emplace_back("fuse_pools", fused);
}

void Plan::read_nchw_inputs(const ops::KernelOptions& ko) {
  int dropped = 0;
  for (size_t i = 0; i < steps_.size(); ++i) {
    Step& st = steps_[i];
    graph::Node& n = g_.node(st.node);
    if (n.op != OpType::Conv || !(st.kernel->keeps_planes() || st.kernel->takes_planes()) ||
        g_.value(n.inputs[0]).layout != graph::Layout::NHWC)
      continue;
    const ValueId x = n.inputs[0];
    const graph::Value& xv = g_.value(x);
    if (xv.producer < 0 || xv.is_output || xv.consumers.size() != 1 ||
        std::count(n.inputs.begin(), n.inputs.end(), x) != 1)
      continue;
    graph::Node& r = g_.node(xv.producer);
    if (r.op != OpType::SluiceReorder || r.p<graph::ReorderParams>().from != graph::Layout::NCHW ||
        g_.value(r.inputs[0]).layout != graph::Layout::NCHW)
      continue;
    const auto at = std::find_if(steps_.begin(), steps_.end(), [&](const Step& s) { return s.node == xv.producer; });
    if (at == steps_.end() || at > steps_.begin() + static_cast<std::ptrdiff_t>(i)) continue;
    n.inputs[0] = r.inputs[0];
    n.p<graph::ConvParams>().reads_nchw = true;
    r.dead = true;
    g_.rebuild_links();
    std::unique_ptr<ops::Kernel> k;
    if (st.kernel->takes_planes()) {  // the same (sparse) kernel, reading NCHW
      k = st.kernel->relayout(g_, n);
    } else {
      k = ops::make_kernel(g_, st.node, ko);
      if (!k->keeps_planes()) throw Error("internal error: '" + n.name + "' reads NCHW but is not on the direct kernel");
      if (const std::string note = st.kernel->choice_note(); !note.empty()) k = ops::with_note(std::move(k), note);
    }
    if (!k) throw Error("internal error: '" + n.name + "' cannot read NCHW");
    st.kernel = std::move(k);
    st.in[0] = slot_of(n.inputs[0]);
    scratch_bytes_ = std::max(scratch_bytes_, st.kernel->scratch_bytes());
    steps_.erase(at);
    --i;  // the reorder's step came before this one
    ++dropped;
  }
  pass_log_.emplace_back("read_nchw_inputs", dropped);
}

void Plan::keep_planes_resident(const ops::KernelOptions& ko) {
  // Candidates: the convs that chose the direct kernel, and those where it was timed against
  // oneDNN and lost. Without the NHWC copies that resident planes save, a loser may win: it is
  // timed again that way, on the planes it would read and write, and if it still loses it
  // drops out and the values are chosen again without it, until no candidate loses. A conv on
  // a sparse kernel (which skips zero weights: measured faster, or --sparse always) keeps it,
  // and reads and writes planes as they are put (Kernel::takes_planes).
  std::vector<Step*> step_of(g_.nodes.size(), nullptr);
  for (Step& st : steps_) step_of[st.node] = &st;
  std::vector<char> dropped(g_.nodes.size(), 0);
  struct Timing {
    std::string layouts;  // of input, output and residual when timed
    bool direct_wins = false;
    std::string note;
  };
  std::map<NodeId, Timing> timed;
  auto planar = [&](ValueId v) { return v != graph::kNoValue && g_.value(v).layout == graph::Layout::Planar; };
  auto layouts = [&](const graph::Node& n) {
    std::string r;
    for (ValueId v : {n.inputs[0], n.outputs[0], n.inputs.size() > 3 ? n.inputs[3] : graph::kNoValue})
      r += planar(v) ? 'P' : '-';
    return r;
  };
  int kept = 0;
  for (bool again = true; again;) {
    kept = graph::passes::keep_planes_resident(
        g_,
        [&](NodeId id) {
          const Step* st = step_of[id];
          return st && !dropped[id] && st->kernel->executed_macs() < 0 &&
                 (st->kernel->keeps_planes() || ops::direct_timed(g_, g_.node(id)));
        },
        [&](NodeId id) { return step_of[id] && step_of[id]->kernel->takes_planes(); });
    again = false;
    for (Step& st : steps_) {
      const graph::Node& n = g_.node(st.node);
      if (n.op != OpType::Conv || st.kernel->keeps_planes() || st.kernel->takes_planes() ||
          !ops::touches_resident(g_, n))
        continue;
      Timing& t = timed[st.node];
      if (t.layouts != layouts(n)) {
        std::unique_ptr<ops::Kernel> direct = ops::make_direct_conv(g_, n);
        const std::vector<double> ms = ops::time_kernels({st.kernel.get(), direct.get()}, g_, n, 7);
        // The other kernel's name without the note of its own earlier choice.
        std::string other = st.kernel->name();
        if (const std::string own = st.kernel->choice_note(); !own.empty() && other.size() > own.size())
          other.resize(other.size() - own.size() - 1);
        char times[64];
        std::snprintf(times, sizeof times, " %.3f ms, ", ms[1]);
        std::string note = "[measured: direct on resident planes" + std::string(times) + other;
        std::snprintf(times, sizeof times, " %.3f ms]", ms[0]);
        t = {layouts(n), ms[1] < ms[0], note + times};
      }
      if (!t.direct_wins) dropped[st.node] = 1, again = true;
    }
  }
  pass_log_.emplace_back("keep_planes_resident", kept);
  if (kept == 0) return;
  for (Slot& s : slots_)
    if (planar(s.value)) s.bytes = slot_bytes(g_.value(s.value));
  // The kernels around planar values again, keeping the note of the measured choice that put
  // them on the direct kernel.
  for (Step& st : steps_) {
    const graph::Node& n = g_.node(st.node);
    // (By the step's slots too: a conv that does a fused shortcut's work writes its output, which
    // is not among the node's.)
    const bool step_planar =
        std::any_of(st.out.begin(), st.out.end(), [&](int o) { return o >= 0 && planar(slots_[static_cast<size_t>(o)].value); });
    if (std::none_of(n.inputs.begin(), n.inputs.end(), planar) && std::none_of(n.outputs.begin(), n.outputs.end(), planar) &&
        !step_planar)
      continue;
    if (st.kernel->takes_planes()) {  // the same choice (its note kept), for the new layouts
      std::unique_ptr<ops::Kernel> k = st.kernel->relayout(g_, n);
      if (!k) throw Error("internal error: '" + n.name + "' cannot be made again on resident planes");
      st.kernel = std::move(k);
    } else {
      const std::string note = timed.count(st.node) ? timed[st.node].note : st.kernel->choice_note();
      st.kernel = ops::make_kernel(g_, st.node, ko);
      if (!note.empty()) st.kernel = ops::with_note(std::move(st.kernel), note);
    }
    st.executed_macs = executed_macs(*st.kernel, g_, n);
    scratch_bytes_ = std::max(scratch_bytes_, st.kernel->scratch_bytes());
  }
}

namespace {
bool is_view(OpType t) {
  return t == OpType::Reshape || t == OpType::Flatten || t == OpType::Squeeze || t == OpType::Unsqueeze ||
         t == OpType::Identity || t == OpType::Dropout;
}
}  // namespace

void Plan::plan_memory() {
  // Lifetimes in step indices, for arena slots only.
  // A value lives from the first step that writes it: a step whose kernel does the next one's
  // work too (Plan::fuse_pools) writes that step's output before it.
  std::vector<int> first(slots_.size(), -1), last(slots_.size(), -1);
  for (size_t s = 0; s < steps_.size(); ++s) {
    for (int o : steps_[s].out)
      if (o >= 0) {
        if (first[o] < 0) first[o] = static_cast<int>(s);
        last[o] = std::max(last[o], static_cast<int>(s));
      }
    for (int i : steps_[s].in)
      if (i >= 0) last[i] = std::max(last[i], static_cast<int>(s));
  }
  std::vector<int> request_of(slots_.size(), -1);
  std::vector<graph::BufferRequest> reqs;
  std::vector<int> group(slots_.size(), -1);  // root request index of each arena slot's sharing group
  std::vector<int> group_last;                // per root request: last step any member is used
  auto arena = [&](int s) { return s >= 0 && slots_[s].kind == SlotKind::Arena; };
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& st = steps_[si];
    const graph::Node& n = g_.node(st.node);
    for (size_t oi = 0; oi < st.out.size(); ++oi) {
      int o = st.out[oi];
      if (!arena(o) || request_of[o] >= 0) continue;  // (already placed: written by a step before)
      graph::BufferRequest r{slots_[o].bytes, first[o], std::max(last[o], first[o]), -1};
      int share = -1;
      if (oi == 0 && is_view(n.op) && arena(st.in[0])) {
        share = st.in[0];  // a view: same bytes, no copy
      } else if (oi == 0 && st.kernel->in_place_input() >= 0) {
        int k = st.kernel->in_place_input();
        int cand = k < static_cast<int>(st.in.size()) ? st.in[k] : -1;
        if (arena(cand) && slots_[cand].bytes == slots_[o].bytes && group_last[group[cand]] == static_cast<int>(si)) {
          bool alone = true;  // no other input of this step may live in the same buffer
          for (size_t j = 0; j < st.in.size(); ++j)
            if (static_cast<int>(j) != k && arena(st.in[j]) && group[st.in[j]] == group[cand]) alone = false;
          if (alone) share = cand;
        }
      }
      const int idx = static_cast<int>(reqs.size());
      request_of[o] = idx;
      group_last.push_back(-1);
      if (share >= 0) {
        r.share_with = request_of[share];
        group[o] = group[share];
      } else {
        group[o] = idx;
      }
      group_last[group[o]] = std::max(group_last[group[o]], r.last);
      reqs.push_back(r);
    }
  }
  graph::MemoryPlan mp = graph::plan_memory(reqs);
  for (size_t s = 0; s < slots_.size(); ++s)
    if (request_of[s] >= 0) slots_[s].offset = mp.offsets[static_cast<size_t>(request_of[s])];
  arena_bytes_ = mp.arena_bytes;
  const double need = static_cast<double>(arena_bytes_) + static_cast<double>(scratch_bytes_), have = machine_bytes();
  if (have > 0 && need > have)
    throw Error(g_.model_name + ": running it needs " + gib(need) + " of working memory, more than " +
                memory_limit().what + largest_value_note());
}

std::unique_ptr<ExecContext> Plan::make_context() const {
  auto ctx = std::make_unique<ExecContext>();
  const size_t scratch_off = (arena_bytes_ + 63) / 64 * 64;
  const size_t total = scratch_off + scratch_bytes_ + 64;
  ctx->arena = std::shared_ptr<std::byte>(static_cast<std::byte*>(::operator new[](total, std::align_val_t(64))),
                                          [](std::byte* p) { ::operator delete[](p, std::align_val_t(64)); });
  ctx->scratch = ctx->arena.get() + scratch_off;
  ctx->slot_data.resize(slots_.size());
  ctx->activity.resize(slots_.size());
  ctx->records.resize(steps_.size());
  for (size_t s = 0; s < slots_.size(); ++s) {
    const Slot& sl = slots_[s];
    if (sl.kind == SlotKind::Arena) ctx->slot_data[s] = ctx->arena.get() + sl.offset;
    if (sl.kind == SlotKind::Constant) ctx->slot_data[s] = const_cast<void*>(g_.value(sl.value).constant.raw());
  }
  return ctx;
}

void Plan::execute(ExecContext& ctx, const std::vector<const Tensor*>& inputs, std::vector<Tensor>& outputs,
                   RunStats* stats, bool profile) const {
  outputs.clear();
  // Not zero-filled: the step that computes an output writes all of it (as every kernel must
  // for the arena's reused bytes), and those no step writes are copied below. The fill (serial,
  // and leaving the lines out of cache) made the 56x56x64 output's NHWC -> NCHW reorder 3x
  // slower: 0.175 against 0.055 ms, the whole 2-thread shift model 0.355 against 0.205.
  for (ValueId o : g_.outputs) outputs.push_back(Tensor::uninitialized(g_.value(o).dtype, g_.value(o).shape));
  for (size_t i : unwritten_outputs_) std::memset(outputs[i].raw(), 0, outputs[i].nbytes());
  for (size_t s = 0; s < slots_.size(); ++s) {
    const Slot& sl = slots_[s];
    if (sl.kind == SlotKind::Input) ctx.slot_data[s] = const_cast<void*>(inputs[sl.offset]->raw());
    if (sl.kind == SlotKind::Output) ctx.slot_data[s] = outputs[sl.offset].raw();
  }
  for (auto& a : ctx.activity) {
    a.samples.clear();
    a.compact = false;
  }
  std::vector<ops::TensorView> in, out;
  std::vector<double> times(profile ? steps_.size() : 0);
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& st = steps_[si];
    in.clear();
    out.clear();
    for (int i : st.in)
      in.push_back(i < 0 ? ops::TensorView{} : ops::TensorView{slots_[i].dtype, slots_[i].shape, ctx.slot_data[i]});
    for (int o : st.out)
      out.push_back(o < 0 ? ops::TensorView{} : ops::TensorView{slots_[o].dtype, slots_[o].shape, ctx.slot_data[o]});
    const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    ops::KernelArgs args{in, out, ctx.scratch};
    ops::StepRecord& rec = ctx.records[si];
    rec.filled = false;
    try {
    if (st.out.empty() || st.out[0] < 0) {
      st.kernel->run(args);
    } else {
      ops::ChannelActivity& out_act = ctx.activity[static_cast<size_t>(st.out[0])];
      const ops::ChannelActivity* in_act =
          !st.in.empty() && st.in[0] >= 0 ? &ctx.activity[static_cast<size_t>(st.in[0])] : nullptr;
      if (st.wants_activity) {
        args.in_activity = in_act;
        args.out_activity = &out_act;
        args.record = &rec;
        st.kernel->run(args);
      } else {
        // In place (same slot group) or not, the output's activity is decided after the kernel ran.
        ops::ChannelActivity passed;
        if (st.propagates_activity && in_act && in_act->known() && !in_act->compact) passed = *in_act;
        st.kernel->run(args);
        out_act = std::move(passed);
      }
    }
    } catch (const Error& e) {
      // A kernel's run-time refusal (an index out of range, an integer division by zero) names
      // its node; the model file in front, as every load-time error has it.
      throw_naming_model(g_.model_name, e);
    }
    if (profile) times[si] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  // Outputs that no step writes: constants, or graph inputs passed straight through.
  for (size_t i = 0; i < g_.outputs.size(); ++i) {
    const graph::Value& v = g_.value(g_.outputs[i]);
    if (v.is_constant()) std::memcpy(outputs[i].raw(), v.constant.raw(), outputs[i].nbytes());
    if (v.is_input)
      for (size_t j = 0; j < g_.inputs.size(); ++j)
        if (g_.inputs[j] == g_.outputs[i]) std::memcpy(outputs[i].raw(), inputs[j]->raw(), outputs[i].nbytes());
  }
  if (stats) collect_stats(ctx, profile ? &times : nullptr, *stats);
}

void Plan::collect_stats(const ExecContext& ctx, const std::vector<double>* times, RunStats& stats) const {
  stats = RunStats{};
  // The batch: the samples the gated kernels recorded, where any ran; else the first dimension
  // of the first input that has one (0 for an empty batch: no samples); 1 without one. (The
  // largest first dimension over the inputs took a second input's [16] for the batch: every
  // gated layer then looked ungated at batch 2.)
  int64_t batch = -1;
  for (size_t si = 0; si < steps_.size() && batch < 0; ++si)
    if (ctx.records[si].filled) batch = static_cast<int64_t>(ctx.records[si].executed_macs.size());
  for (size_t i = 0; i < g_.inputs.size() && batch < 0; ++i) {
    const Shape& s = g_.value(g_.inputs[i]).shape;
    // (An input with no elements has no samples to report: [2^32, 2^32, 0] asked for 2^32 of them.)
    if (!s.empty()) batch = std::find(s.begin(), s.end(), 0) != s.end() ? 0 : s[0];
  }
  if (batch < 0) batch = 1;
  stats.samples.resize(static_cast<size_t>(batch));
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& st = steps_[si];
    const graph::Node& n = g_.node(st.node);
    LayerStats l;
    l.name = n.name;
    l.op = graph::op_name(n.op);
    l.kernel = st.kernel->name();
    l.dense_macs = st.dense_macs;
    l.executed_macs = st.executed_macs;
    l.time_ms = times ? (*times)[si] : 0.0;
    const ops::StepRecord& rec = ctx.records[si];
    const int64_t nb = n.outputs.empty() || g_.value(n.outputs[0]).shape.empty() ? 1 : g_.value(n.outputs[0]).shape[0];
    const bool per_sample = nb == batch && batch > 0;
    if (rec.filled && static_cast<int64_t>(rec.executed_macs.size()) == batch) {
      l.gated = true;
      l.in_channels = g_.value(n.inputs[0]).shape[1];
      l.out_channels = g_.value(n.outputs[0]).shape[1];
      l.dense_in_channels = l.in_channels, l.dense_out_channels = l.out_channels;
      if (n.op == OpType::SluiceGatedConv || n.op == OpType::Conv) {
        const graph::ConvParams& cp = graph::conv_params(n);
        if (cp.dense_in > 0) l.dense_in_channels = cp.dense_in;
        if (cp.dense_out > 0) l.dense_out_channels = cp.dense_out;
      }
      l.executed_macs = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const auto i = static_cast<size_t>(b);
        LayerSample s{st.dense_macs / batch, rec.executed_macs[i], rec.active_in[i], rec.active_out[i]};
        l.executed_macs += s.executed_macs;
        l.gate_macs += rec.gate_macs[i];
        l.active_in_channels += static_cast<double>(s.active_in_channels) / static_cast<double>(batch);
        l.active_out_channels += static_cast<double>(s.active_out_channels) / static_cast<double>(batch);
        stats.samples[i].gate_macs += rec.gate_macs[i];
        l.samples.push_back(s);
      }
    } else if (per_sample && l.dense_macs > 0) {
      for (int64_t b = 0; b < batch; ++b)
        l.samples.push_back({l.dense_macs / batch, l.executed_macs / batch, 0, 0});
    }
    for (size_t b = 0; b < l.samples.size() && b < stats.samples.size(); ++b) {
      stats.samples[b].dense_macs += l.samples[b].dense_macs;
      stats.samples[b].executed_macs += l.samples[b].executed_macs;
    }
    stats.dense_macs += l.dense_macs;
    stats.executed_macs += l.executed_macs;
    stats.gate_macs += l.gate_macs;
    stats.layers.push_back(std::move(l));
  }
}

}  // namespace sluice::runtime
