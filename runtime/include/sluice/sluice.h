// Sluice public C++ API.
//
//   sluice::Model model = sluice::Model::load("resnet18.onnx");
//   sluice::Session session(model, {.threads = 2});
//   sluice::RunStats stats;
//   auto outputs = session.run({{"input", image}}, &stats);
//
// Every failure (malformed file, unsupported op, wrong input shape ...) is reported
// by throwing sluice::Error whose message names the file, node or value at fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sluice {

namespace graph {
class Graph;
}
namespace runtime {
class SessionImpl;
}

// The one error type of the library.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : uint8_t { Undefined, Float32, Float64, Int64, Int32, Int8, UInt8, Bool };

const char* dtype_name(DType t);
size_t dtype_size(DType t);

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::Int32; }
template <> constexpr DType dtype_of<int8_t>() { return DType::Int8; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::UInt8; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);

// A dense, row-major (C order) tensor that owns (or shares) its buffer, which starts on a
// 64-byte boundary.
class Tensor {
 public:
  Tensor() = default;
  // Allocates a zero-filled tensor. Throws Error if the size overflows or is absurd.
  Tensor(DType dtype, Shape shape);
  // Allocates without filling, for a buffer the caller then writes whole (a run's outputs:
  // zero-filling them first cost more than the step that writes them, see Plan::execute).
  static Tensor uninitialized(DType dtype, Shape shape);
  // Copies `data` (numel * dtype_size bytes).
  static Tensor copy_of(DType dtype, Shape shape, const void* data);
  template <class T>
  static Tensor from_vector(Shape shape, const std::vector<T>& v) {
    return copy_of(dtype_of<T>(), std::move(shape), v.data());
  }

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return dtype_ == DType::Undefined; }

  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }
  template <class T>
  T* data() {
    check_type(dtype_of<T>());
    return static_cast<T*>(raw());
  }
  template <class T>
  const T* data() const {
    check_type(dtype_of<T>());
    return static_cast<const T*>(raw());
  }
  // Same buffer, new shape of equal element count.
  Tensor reshaped(Shape shape) const;

 private:
  Tensor(DType dtype, Shape shape, bool zero);
  void check_type(DType t) const;
  DType dtype_ = DType::Undefined;
  Shape shape_;
  std::shared_ptr<std::byte[]> data_;
};

// Name, element type and shape of a graph input or output. Unknown dims are -1.
struct ValueInfo {
  std::string name;
  DType dtype = DType::Undefined;
  Shape shape;             // -1 where a dimension is not fixed
  bool rank_known = true;  // false: the model gives no shape at all, so any rank is accepted
};

// A parsed, checked model. Cheap to copy (shared, immutable).
class Model {
 public:
  static Model load(const std::string& path);
  static Model load_from_memory(const void* data, size_t size, const std::string& name = "<memory>");

  const std::string& name() const;
  std::vector<ValueInfo> inputs() const;
  std::vector<ValueInfo> outputs() const;
  std::shared_ptr<const graph::Graph> graph() const { return graph_; }

 private:
  explicit Model(std::shared_ptr<const graph::Graph> g) : graph_(std::move(g)) {}
  std::shared_ptr<const graph::Graph> graph_;
};

// How convs with sparse weights (>= 50% zeros) are run.
enum class SparseMode : uint8_t {
  Off,       // dense oneDNN kernels only
  Measured,  // time the sparse kernel against the dense one at session creation; keep the faster
  Always,    // the sparse kernel wherever it applies (for tests and benchmarks)
};

struct SessionOptions {
  int threads = 0;        // 0: all cores
  bool optimize = true;   // graph rewrites and fast kernels; false runs the reference kernels
  bool profile = false;   // time every layer (RunStats::layers[i].time_ms); adds a little overhead
  // FBS gated convolutions (recognised at load, see Session::inspect):
  bool gating = true;     // false: compute every channel and mask, the dense reference for speed and numbers
  float density = 0.f;    // 0: each gate's k as exported; in (0, 1]: k = min(k, ceil(density * C_out)); else an Error
  // Convs whose weights are >= 50% zero (Session::inspect shows the choice and, when measured,
  // both times).
  SparseMode sparse = SparseMode::Measured;
  // Activations between convs on Sluice's direct planar kernel stay in its planar form instead
  // of NHWC (Session::inspect: "in resident planes"); false keeps every conv on NHWC, to
  // measure what that gains.
  bool resident_planes = true;
};

// One sample of one layer.
struct LayerSample {
  int64_t dense_macs = 0;
  int64_t executed_macs = 0;
  int64_t active_in_channels = 0;   // input channels the kernel read (gated layers)
  int64_t active_out_channels = 0;  // output channels it computed (gated layers)
};

// Per executed layer (one planned step). MACs are per run (whole batch).
struct LayerStats {
  std::string name;
  std::string op;
  std::string kernel;
  int64_t dense_macs = 0;
  int64_t executed_macs = 0;
  double time_ms = 0;  // wall time of this layer, with SessionOptions::profile
  // Gated layers (op "SluiceGatedConv": a conv with its FBS gate, or a plain conv that reads
  // a gated conv's output, kernel "gated-input..."): the gate's predictor MACs (not in
  // dense/executed; 0 without a gate of its own), channel counts (active: mean over the
  // batch) and per-sample figures.
  bool gated = false;
  int64_t gate_macs = 0;
  int64_t in_channels = 0, out_channels = 0;  // as it runs (static pruning may have removed some)
  int64_t dense_in_channels = 0, dense_out_channels = 0;  // the model's, which dense_macs counts
  double active_in_channels = 0, active_out_channels = 0;
  std::vector<LayerSample> samples;  // per sample, for layers with MACs
  int64_t skipped_macs() const { return dense_macs - executed_macs; }
};

// One sample of the whole run.
struct SampleStats {
  int64_t dense_macs = 0;
  int64_t executed_macs = 0;
  int64_t gate_macs = 0;
  int64_t skipped_macs() const { return dense_macs - executed_macs; }
};

// MACs count convolutions and matrix products (README, "The CLI": how each op's MACs are
// counted); the FBS gates' predictors are counted apart, in gate_macs.
struct RunStats {
  int64_t dense_macs = 0;     // as if nothing were skipped
  int64_t executed_macs = 0;  // what the kernels did
  int64_t gate_macs = 0;      // the gate predictors
  std::vector<SampleStats> samples;
  std::vector<LayerStats> layers;
  // The inputs held an inf or a NaN: the run used the reference kernels, which compute every
  // product as ONNX Runtime does (the fast kernels skip zero weights, pruned channels and
  // suppressed ones, so 0 * inf never makes their NaN).
  bool nonfinite_inputs = false;
  // The fast kernels' outputs held an inf or a NaN that arose inside the network (finite
  // inputs): the run was repeated on the reference kernels, and these are their outputs and
  // stats.
  bool nonfinite_outputs = false;
  // The model's conv or linear weights hold an inf or a NaN (this names the first such
  // node): every run uses the reference kernels, whose Relu keeps the NaN that the fast
  // kernels' fused Relu maps to 0 (ONNX Runtime keeps it). Empty otherwise.
  std::string nonfinite_weights;
  int64_t skipped_macs() const { return dense_macs - executed_macs; }
};

// A model prepared for execution. run() may be called concurrently from several
// threads: each call takes its own execution context (arena) from a pool.
class Session {
 public:
  Session(const Model& model, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Runs the model. Missing, unknown, or mis-shaped inputs throw Error (stats, if given, is
  // then left empty). Each new input shape (and value of a small integer input) gets a plan
  // of its own, made at its first run (kernels timed: that run is slower); the 8 most recently
  // used are kept with their arenas, older ones are dropped and made again when needed.
  std::map<std::string, Tensor> run(const std::map<std::string, Tensor>& inputs,
                                    RunStats* stats = nullptr);

  const Model& model() const;
  const SessionOptions& options() const;
  // Human-readable (or JSON) description of the optimised graph for given input
  // shapes (empty: the model's declared shapes, which must then be concrete: an input with a
  // dynamic dimension, such as a dynamic batch, needs its shape here). input_values: the values of small integer
  // inputs that set shapes (TopK's K, a Reshape target fed at run time), which run() takes from
  // its inputs; a plan is made for those values.
  std::string inspect(bool json = false, const std::map<std::string, Shape>& input_shapes = {},
                      const std::map<std::string, Tensor>& input_values = {});

 private:
  std::unique_ptr<runtime::SessionImpl> impl_;
};

}  // namespace sluice
