// A Plan is the model specialised for one set of input shapes: the optimised graph,
// one kernel per step (weights packed once), and one memory plan. It is immutable
// after construction; execution state lives in an ExecContext.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "graph/graph.h"
#include "ops/kernel.h"
#include "sluice/sluice.h"

namespace sluice::runtime {

enum class SlotKind : uint8_t { Constant, Input, Output, Arena };

// Where a value's bytes live during a run.
struct Slot {
  SlotKind kind = SlotKind::Arena;
  graph::ValueId value = graph::kNoValue;
  DType dtype = DType::Undefined;
  Shape shape;
  size_t offset = 0;  // Arena: byte offset; Input/Output: index in the graph's inputs/outputs
  size_t bytes = 0;
};

struct Step {
  graph::NodeId node = -1;
  std::unique_ptr<ops::Kernel> kernel;
  std::vector<int> in, out;  // slot indices (-1: omitted optional)
  int64_t dense_macs = 0;
  int64_t executed_macs = 0;
  bool propagates_activity = false;  // a channel-wise op that keeps zero channels at zero
  bool wants_activity = false;       // a gated conv: reads its input's activity, writes its output's
};

// Per-run memory: the arena and scratch, reused across runs of one plan.
struct ExecContext {
  std::shared_ptr<std::byte> arena;  // 64-byte aligned
  std::byte* scratch = nullptr;
  std::vector<void*> slot_data;
  std::vector<ops::ChannelActivity> activity;  // per slot, this run
  std::vector<ops::StepRecord> records;        // per step, this run
};

class Plan {
 public:
  Plan(const graph::Graph& model, const std::map<std::string, Shape>& input_shapes, const SessionOptions& options,
       const std::map<std::string, Tensor>& specialised_inputs = {});

  std::unique_ptr<ExecContext> make_context() const;
  // inputs/outputs in the order of graph.inputs / graph.outputs.
  void execute(ExecContext& ctx, const std::vector<const Tensor*>& inputs, std::vector<Tensor>& outputs,
               RunStats* stats, bool profile = false) const;

  const graph::Graph& graph() const { return g_; }
  const std::vector<Step>& steps() const { return steps_; }
  // Whether a kernel here leaves out products that the model's own ops compute: zero weights
  // (sparse), removed channels (pruning), suppressed ones (gating), a shift's zero taps. Where
  // an inf or NaN meets them, ONNX Runtime's 0 * inf gives NaN and such a plan may not
  // (Session::run then runs the reference plan); a plan without them gives the same inf and NaN.
  bool skips_products() const { return skips_products_; }
  // The first conv or linear layer of the optimised graph whose weights hold an inf or a NaN,
  // or whose bias holds a NaN (BatchNorms and channel scales folded in), or "": its NaN outputs
  // would meet a fused Relu, which maps NaN to 0 where ONNX Runtime keeps it.
  const std::string& nonfinite_weights() const { return nonfinite_weights_; }
  const std::vector<Slot>& slots() const { return slots_; }
  size_t arena_bytes() const { return arena_bytes_; }
  // (pass name, count) in the order the passes ran.
  const std::vector<std::pair<std::string, int>>& pass_log() const { return pass_log_; }
  std::string describe(bool json) const;

 private:
  void optimise(const SessionOptions& options);
  void build_steps(const SessionOptions& options);
  void plan_memory();
  // Refuses a value larger than this machine's memory, naming it and its node (plan_memory
  // does the same for the arena).
  void check_value_sizes() const;
  // " (its largest value, 'v' [shape], needs N GiB; ...)" for an out-of-memory message.
  std::string largest_value_note() const;
  void collect_stats(const ExecContext& ctx, const std::vector<double>* times, RunStats& stats) const;
  int slot_of(graph::ValueId v);
  static size_t slot_bytes(const graph::Value& v);
  // A sparse conv does the work of a 1x1 conv beside it on the same input (a ResNet
  // downsample; ops::make_sparse_conv_with_shortcut), whose step is then done (before
  // keep_planes_resident: their input may then stay in planes).
  void fuse_shortcuts();
  // passes::keep_planes_resident on the chosen kernels, then those around planar values made again.
  void keep_planes_resident(const ops::KernelOptions& ko);
  // A conv on the direct kernel or a sparse one (Kernel::takes_planes) whose input is an NCHW
  // value reordered to NHWC for it alone reads the NCHW value itself (its planar copy is NCHW
  // rows): the reorder step goes.
  void read_nchw_inputs(const ops::KernelOptions& ko);
  // A conv on the direct kernel whose resident output only a resident max pool reads, in the
  // next step, pools it as it goes (ops::make_pooled_direct_conv): the pool's step does nothing.
  void fuse_pools();
  // Graph outputs that no step writes and that are no constant or input (none is expected):
  // execute zero-fills them, as it once did every output.
  void find_unwritten_outputs();
  void find_nonfinite_weights();

  graph::Graph g_;
  std::vector<Slot> slots_;
  std::map<graph::ValueId, int> slot_index_;
  std::vector<Step> steps_;
  size_t arena_bytes_ = 0, scratch_bytes_ = 0;
  int threads_ = 1;  // OpenMP threads when the plan was made: its kernels were chosen and timed on them
  std::vector<std::pair<std::string, int>> pass_log_;
  bool skips_products_ = false;  // skips_products(), set once the steps are final
  std::string nonfinite_weights_;  // nonfinite_weights()
  std::vector<size_t> unwritten_outputs_;
};

}  // namespace sluice::runtime
