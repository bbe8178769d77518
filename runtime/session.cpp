#include <omp.h>

#include <algorithm>
#include <mutex>

#include "converters/onnx/onnx_import.h"
#include "ops/kernel.h"
#include "runtime/memory_limit.h"
#include "runtime/plan.h"

namespace sluice {

namespace {
// Sets the OpenMP thread count of the calling thread for one scope and restores the caller's.
class ThreadScope {
 public:
  explicit ThreadScope(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
  }
  ~ThreadScope() { omp_set_num_threads(saved_); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int saved_;
};
}  // namespace

// ---- Model ----------------------------------------------------------------------

// Out of memory while reading or importing a model: a sluice::Error naming it, as the header
// promises (it was a bare std::bad_alloc under `ulimit -v`).
[[noreturn]] static void out_of_memory_loading(const std::string& name) {
  throw Error(name + ": out of memory while loading the model (" + runtime::memory_limit().what +
              "); free memory or raise the limit");
}

Model Model::load(const std::string& path) {
  try {
    return Model(converters::onnx::import_file(path));
  } catch (const std::bad_alloc&) {
    out_of_memory_loading(path);
  }
}

Model Model::load_from_memory(const void* data, size_t size, const std::string& name) {
  if (!data && size > 0) throw Error(name + ": no model bytes (a null pointer with size " + std::to_string(size) + ")");
  try {
    return Model(converters::onnx::import_bytes(data, size, name));
  } catch (const std::bad_alloc&) {
    out_of_memory_loading(name);
  }
}


const std::string& Model::name() const { return graph_->model_name; }

namespace {
std::vector<ValueInfo> infos(const graph::Graph& g, const std::vector<graph::ValueId>& ids) {
  std::vector<ValueInfo> r;
  for (auto id : ids) {
    const graph::Value& v = g.value(id);
    r.push_back({v.name, v.dtype, v.shape, v.shape_known || !v.shape.empty()});
  }
  return r;
}
}  // namespace

std::vector<ValueInfo> Model::inputs() const { return infos(*graph_, graph_->inputs); }
std::vector<ValueInfo> Model::outputs() const { return infos(*graph_, graph_->outputs); }

// ---- Session ----------------------------------------------------------------------

namespace runtime {

class SessionImpl {
 public:
  static constexpr int kMaxThreads = 1024;
  SessionImpl(Model model, SessionOptions options) : model_(std::move(model)), options_(options) {
    if (options_.threads < 0) throw Error("SessionOptions.threads must be >= 0 (0 means all cores)");
    if (!(options_.density == 0.f || (options_.density > 0.f && options_.density <= 1.f)))
      throw Error("SessionOptions.density = " + std::to_string(options_.density) +
                  " is not a density in (0, 1] (0 keeps each gate's own k)");
    if (options_.threads > kMaxThreads)  // OpenMP would fail to create them, or run out of memory for their stacks
      throw Error("threads (--threads, SessionOptions.threads) = " + std::to_string(options_.threads) + " is more than " +
                  std::to_string(kMaxThreads) + "; this machine has " + std::to_string(omp_get_num_procs()) +
                  " cores (0 means all of them)");
    // Plan eagerly when the model's input shapes are fully known: load-time errors
    // surface at load, and the first run() is not slower than the rest.
    bool all_known = true;
    for (const auto& in : model_.inputs()) {
      for (int64_t d : in.shape) all_known = all_known && d >= 0;
      all_known = all_known && in.rank_known;
      all_known = all_known && !specialisable(in.dtype);  // their values are not known yet
    }
    if (all_known) plan_for({});
  }

  // Small integer inputs usually determine shapes (a Reshape target, TopK's K, Slice
  // bounds fed at run time): plans are specialised on their values, so they fold.
  static bool specialisable(DType t) { return t == DType::Int64 || t == DType::Int32 || t == DType::Bool; }
  static bool specialise_on_value(const Tensor& t) { return specialisable(t.dtype()) && t.numel() <= 64; }

  std::shared_ptr<const Plan> plan_for(const std::map<std::string, Shape>& given,
                                       const std::map<std::string, Tensor>& values = {}, bool reference = false) {
    std::lock_guard<std::mutex> lock(mu_);
    // Inputs not given take their declared shape where it is fully known, so that the plan
    // made at load (no shapes given) is the one run() finds for inputs of those shapes (and
    // inspect() without shapes too): keyed on "" it was made again at the first run.
    std::map<std::string, Shape> shapes = given;
    for (const auto& in : model_.inputs())
      if (!shapes.count(in.name) && std::all_of(in.shape.begin(), in.shape.end(), [](int64_t d) { return d >= 0; }))
        shapes[in.name] = in.shape;
    std::string key = reference ? "reference:" : "";
    for (const auto& [name, s] : shapes) key += name + shape_str(s) + ";";
    for (const auto& [name, t] : values) {
      key += name + "=";
      const auto* p = static_cast<const char*>(t.raw());
      key.append(p, t.nbytes());
      key += ";";
    }
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      it->second.last_used = ++clock_;
      return it->second.plan;
    }
    // At most kMaxPlans shapes (and input values) keep their plan and its idle arenas: the
    // least recently used goes (a run still on it keeps it alive until it ends). Kept without
    // a bound, a session fed 120 image sizes grew from 22 MB to 1.9 GB.
    while (plans_.size() >= kMaxPlans) {
      auto oldest = plans_.begin();
      for (auto e = plans_.begin(); e != plans_.end(); ++e)
        if (e->second.last_used < oldest->second.last_used) oldest = e;
      plans_.erase(oldest);
    }
    // oneDNN fixes a primitive's thread count when it is created: create under the session's count.
    ThreadScope scope(options_.threads);
    SessionOptions opts = options_;
    if (reference) opts.optimize = false;
    auto plan = std::make_shared<const Plan>(*model_.graph(), shapes, opts, values);
    plans_[key].plan = plan;
    plans_[key].last_used = ++clock_;
    return plan;
  }

  std::map<std::string, Tensor> run(const std::map<std::string, Tensor>& inputs, RunStats* stats) {
    const graph::Graph& g = *model_.graph();
    if (stats) *stats = RunStats{};  // a failed run leaves no earlier run's stats behind
    std::map<std::string, Shape> shapes;
    std::map<std::string, Tensor> values;
    std::vector<const Tensor*> ordered;
    // An unknown name first: given 'input' for a model's 'image', "no input named 'input'" says
    // what is wrong, where "'image' was not given" does not.
    for (const auto& [name, t] : inputs) {
      bool known = false;
      for (graph::ValueId id : g.inputs) known = known || g.value(id).name == name;
      if (!known) {
        std::string names;
        for (graph::ValueId id : g.inputs) names += (names.empty() ? "'" : ", '") + g.value(id).name + "'";
        throw Error(g.model_name + ": the model has no input named '" + name + "' (inputs: " + names + ")");
      }
    }
    for (graph::ValueId id : g.inputs) {
      const graph::Value& v = g.value(id);
      auto it = inputs.find(v.name);
      if (it == inputs.end()) throw Error(g.model_name + ": input '" + v.name + "' was not given");
      if (it->second.dtype() != v.dtype)
        throw Error(g.model_name + ": input '" + v.name + "' must be " + dtype_name(v.dtype) + ", got " +
                    dtype_name(it->second.dtype()));
      shapes[v.name] = it->second.shape();
      if (specialise_on_value(it->second))  // a copy: the caller may reuse its buffer
        values[v.name] = Tensor::copy_of(it->second.dtype(), it->second.shape(), it->second.raw());
      ordered.push_back(&it->second);
    }
    // An inf or NaN in a float input: the reference plan, which multiplies what the fast kernels
    // skip (zero weights, removed and suppressed channels, a shift's zero border), so that
    // 0 * inf gives ONNX Runtime's NaN. One pass over the inputs (an image: ~20 us). Not with a
    // density override: that asks for other k than the file's, which only the gated kernels run
    // (and the reference plan would change every sample's answer, not only the non-finite one's).
    ThreadScope scope(options_.threads);  // (the check below runs on the session's threads too)
    bool nonfinite = false;
    // An inf or NaN weight (BatchNorms folded in): the reference kernels, whose Relu keeps the
    // NaN that the fast kernels' fused Relu maps to 0 (Plan::nonfinite_weights).
    const std::shared_ptr<const Plan> fast = plan_for(shapes, values, false);
    const std::string& bad = fast->nonfinite_weights();
    const bool bad_weights = options_.optimize && options_.density <= 0.f && !bad.empty();
    if (options_.optimize && options_.density <= 0.f && !bad_weights)
      for (const Tensor* t : ordered) nonfinite = nonfinite || !ops::all_finite(*t);
    std::vector<Tensor> outs;
    bool skips = false;  // the plan that ran leaves out products (Plan::skips_products)
    auto execute = [&](bool reference) {
      std::shared_ptr<const Plan> plan = reference ? plan_for(shapes, values, true) : fast;
      skips = plan->skips_products();
      std::unique_ptr<ExecContext> ctx = acquire(plan);
      outs.clear();
      try {
        plan->execute(*ctx, ordered, outs, stats, options_.profile);
      } catch (...) {
        release(plan, std::move(ctx));
        throw;
      }
      release(plan, std::move(ctx));
    };
    execute(nonfinite || bad_weights);
    // An inf or NaN may also arise inside the network from finite inputs (weights that
    // overflow, a NaN weight), and the fast kernels' skipped products then differ from ORT's
    // (a sparse conv skips 0 x NaN). Such a value nearly always reaches a float output: a run
    // of a plan that skips products, whose outputs hold one, runs again on the reference plan
    // (one pass over the outputs per run; the second run only then). A plan that skips nothing
    // gives ORT's inf and NaN itself: a model whose outputs are -inf by design (a Log of a
    // Relu) is not run twice.
    bool nonfinite_out = false;
    if (options_.optimize && options_.density <= 0.f && !nonfinite && !bad_weights && skips)
      for (const Tensor& t : outs) nonfinite_out = nonfinite_out || !ops::all_finite(t);
    if (nonfinite_out) execute(true);
    if (stats) {
      stats->nonfinite_inputs = nonfinite, stats->nonfinite_outputs = nonfinite_out;
      if (bad_weights) stats->nonfinite_weights = bad;
    }
    std::map<std::string, Tensor> result;
    for (size_t i = 0; i < g.outputs.size(); ++i) result[g.value(g.outputs[i]).name] = std::move(outs[i]);
    return result;
  }

  std::string inspect(bool json, const std::map<std::string, Shape>& shapes, const std::map<std::string, Tensor>& values) {
    const auto ins = model_.inputs();
    auto check_name = [&](const std::string& name, const char* what) {
      if (std::any_of(ins.begin(), ins.end(), [&](const ValueInfo& v) { return v.name == name; })) return;
      std::string names;
      for (const auto& v : ins) names += (names.empty() ? "'" : ", '") + v.name + "'";
      throw Error(model_.graph()->model_name + ": inspect " + what + " names '" + name +
                  "', which is not an input of the model (inputs: " + names + ")");
    };
    for (const auto& [name, s] : shapes) check_name(name, "input_shapes");
    for (const auto& [name, t] : values) check_name(name, "input_values");
    std::map<std::string, Shape> all = shapes;
    std::map<std::string, Tensor> kept;
    for (const auto& [name, t] : values) {
      all[name] = t.shape();
      if (specialise_on_value(t)) kept[name] = Tensor::copy_of(t.dtype(), t.shape(), t.raw());
    }
    // An input without even a rank in the model: its first reader would fail on the shape []
    // (a probe's "... got []" at the first conv); name the input and how to give its shape.
    const graph::Graph& g = *model_.graph();
    auto read = [&](const std::string& name) {  // (an unused input needs no shape)
      for (graph::ValueId id : g.inputs)
        if (g.value(id).name == name) return !g.value(id).consumers.empty() || g.value(id).is_output;
      return true;
    };
    for (const auto& in : ins)
      if (!in.rank_known && !all.count(in.name) && read(in.name))
        throw Error(model_.graph()->model_name + ": input '" + in.name +
                    "' has no shape in the model (not even a rank): give one with --shape " + in.name +
                    "=DIMS (its real dims, e.g. 1x3x224x224 for an image), or its data with --input " + in.name +
                    "=FILE.npy");
    return plan_for(all, kept)->describe(json);
  }

  Model model_;
  SessionOptions options_;

 private:

  struct Entry {
    std::shared_ptr<const Plan> plan;
    std::vector<std::unique_ptr<ExecContext>> free;  // idle contexts, reused across runs
    uint64_t last_used = 0;                          // clock_ at its last plan_for
  };
  static constexpr size_t kMaxPlans = 8;

  std::unique_ptr<ExecContext> acquire(const std::shared_ptr<const Plan>& plan) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [k, e] : plans_)
        if (e.plan == plan && !e.free.empty()) {
          auto ctx = std::move(e.free.back());
          e.free.pop_back();
          return ctx;
        }
    }
    return plan->make_context();
  }

  void release(const std::shared_ptr<const Plan>& plan, std::unique_ptr<ExecContext> ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [k, e] : plans_)
      if (e.plan == plan) e.free.push_back(std::move(ctx));
  }

  std::mutex mu_;
  std::map<std::string, Entry> plans_;
  uint64_t clock_ = 0;
};

}  // namespace runtime

Session::Session(const Model& model, SessionOptions options)
    : impl_(std::make_unique<runtime::SessionImpl>(model, options)) {}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

namespace {
// A Session moved from has no state: calls on it are an error of the caller, said as such.
template <class T>
T& live(const std::unique_ptr<T>& impl) {
  if (!impl) throw Error("this sluice::Session was moved from; use the Session it was moved into");
  return *impl;
}
}  // namespace

std::map<std::string, Tensor> Session::run(const std::map<std::string, Tensor>& inputs, RunStats* stats) {
  runtime::SessionImpl& impl = live(impl_);
  try {
    return impl.run(inputs, stats);
  } catch (const std::bad_alloc&) {  // as the header promises: every failure is a sluice::Error
    throw Error(impl.model_.name() + ": out of memory while running it (" + runtime::memory_limit().what +
                "); check the inputs' shapes, or run it with fewer threads or a smaller batch");
  }
}
const Model& Session::model() const { return live(impl_).model_; }
const SessionOptions& Session::options() const { return live(impl_).options_; }
std::string Session::inspect(bool json, const std::map<std::string, Shape>& input_shapes,
                             const std::map<std::string, Tensor>& input_values) {
  return live(impl_).inspect(json, input_shapes, input_values);
}

}  // namespace sluice
