#include "ops/common/measure.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <vector>

#include "ops/conv/planar.h"
#include "runtime/memory_limit.h"

namespace sluice::ops {

namespace {
// Floats of a value's buffer: its elements, or its resident planes (Layout::Planar).
size_t buffer_floats(const graph::Value& v) {
  if (v.layout == graph::Layout::Planar)
    return static_cast<size_t>(planar::resident_floats(v.shape, v.wide_rows));
  return static_cast<size_t>(TensorView{v.dtype, v.shape, nullptr}.numel());
}
}  // namespace

RandomNodeData::RandomNodeData(const graph::Graph& g, const graph::Node& n, uint32_t seed) {
  // Uniform in [-1, 1) from a xorshift generator: session creation times kernels on this data,
  // and std::normal_distribution over mt19937 made the filling a visible part of it.
  uint32_t state = seed * 2654435761u + 0x9E3779B9u;
  if (state == 0) state = 1;
  auto next = [&state] {
    state ^= state << 13, state ^= state >> 17, state ^= state << 5;
    return static_cast<float>(state >> 8) * (2.f / 16777216.f) - 1.f;
  };
  bufs_.reserve(n.inputs.size() + 1);  // the views point into them
  for (graph::ValueId v : n.inputs) {
    TensorView t;
    if (v != graph::kNoValue) {
      const graph::Value& val = g.value(v);
      t.dtype = val.dtype;
      t.shape = val.shape;
      if (val.is_constant()) {
        // The model's own constant (weights, bias): what the kernel runs on, with no copy.
        t.data = const_cast<void*>(val.constant.raw());
      } else {
        bufs_.emplace_back(buffer_floats(val));
        for (auto& x : bufs_.back()) x = next();
        t.data = bufs_.back().data();
      }
    }
    in_.push_back(t);
  }
  const graph::Value& ov = g.value(n.outputs[0]);
  bufs_.emplace_back(buffer_floats(ov), std::numeric_limits<float>::quiet_NaN());
  out_.push_back({ov.dtype, ov.shape, bufs_.back().data()});
}

void RandomNodeData::share_in_place_input(const Kernel& k) {
  const int i = k.in_place_input();
  if (i < 0 || static_cast<size_t>(i) >= in_.size() || in_[static_cast<size_t>(i)].data == nullptr) return;
  TensorView& t = in_[static_cast<size_t>(i)];
  // Only over an output buffer of the same size (both NHWC, or both resident planes).
  const auto buf = std::find_if(bufs_.begin(), bufs_.end(), [&](const auto& b) { return b.data() == t.data; });
  if (buf == bufs_.end() || buf->size() != bufs_.back().size()) return;
  std::copy(buf->begin(), buf->end(), bufs_.back().begin());
  t.data = bufs_.back().data();
}

KernelArgs RandomNodeData::args(const Kernel& k) {
  scratch_.assign(k.scratch_bytes() + 64, std::byte{0x7F});
  void* sp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch_.data()) + 63) / 64 * 64);
  return KernelArgs{in_, out_, sp};
}

namespace {
std::string& preferred_for_testing() {
  static std::string prefix;
  return prefix;
}
}  // namespace

void prefer_kernels_for_testing(std::string prefix) { preferred_for_testing() = std::move(prefix); }

std::vector<double> time_kernels(const std::vector<const Kernel*>& ks, const graph::Graph& g, const graph::Node& n,
                                 int runs, const ChannelActivity* in_activity) {
  if (const std::string& prefer = preferred_for_testing(); !prefer.empty()) {
    std::vector<double> ms;
    for (const Kernel* k : ks) ms.push_back(k->name().rfind(prefer, 0) == 0 ? 0.001 : 1.0);
    return ms;
  }
  // Each kernel is timed on data of its own: the node's inputs and output, once per kernel.
  // More than the machine has is refused here by name (a batch of 200,000 images was killed
  // for memory while its kernels were timed, before the arena's own check).
  double bytes = 0;
  for (graph::ValueId v : n.inputs)
    if (v != graph::kNoValue && !g.value(v).is_constant()) bytes += 4.0 * static_cast<double>(buffer_floats(g.value(v)));
  bytes = (bytes + 4.0 * static_cast<double>(buffer_floats(g.value(n.outputs[0])))) * static_cast<double>(ks.size());
  if (const double have = runtime::available_bytes(); have > 0 && bytes > have)
    throw Error(g.model_name + ": node '" + n.name + "' (" + graph::op_name(n.op) + "), output " +
                shape_str(g.value(n.outputs[0]).shape) + ": timing its " + std::to_string(ks.size()) + " candidate kernels needs " +
                runtime::gib(bytes) + ", more than the " + runtime::gib(have) +
                " of memory available now; check the model's and the inputs' shapes (a smaller batch?)");
  std::vector<std::unique_ptr<RandomNodeData>> data;
  std::vector<KernelArgs> args;
  for (const Kernel* k : ks) {
    data.push_back(std::make_unique<RandomNodeData>(g, n));
    data.back()->share_in_place_input(*k);  // as the plan will run it (no copy of a fused sum)
    args.push_back(data.back()->args(*k));
    args.back().in_activity = in_activity;
  }
  // In turns of one untimed call (it brings the kernel's data back into the caches the other
  // kernels' calls took, as a layer finds its input warm from the layer before) and two timed.
  // Turns stop early once the timing has taken kBudgetMs: on large layers (VGG-16's take
  // 30-80 ms a call on 1 thread) two timed calls each are already long, and every further
  // turn adds to session creation.
  constexpr double kBudgetMs = 200;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<double>> ms(ks.size());
  for (int turn = 0; turn < (runs + 1) / 2; ++turn) {
    if (turn > 0 && std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() > kBudgetMs)
      break;
    for (size_t j = 0; j < ks.size(); ++j)
      for (int call = 0; call < 3; ++call) {
        auto t0 = std::chrono::steady_clock::now();
        ks[j]->run(args[j]);
        if (call > 0) ms[j].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
  }
  std::vector<double> best;
  for (auto& m : ms) {
    std::sort(m.begin(), m.end());
    best.push_back(m.front());
  }
  return best;
}

namespace {

// A kernel with a note (the measured comparison) in its name.
class Chosen final : public Kernel {
 public:
  Chosen(std::unique_ptr<Kernel> k, std::string note) : k_(std::move(k)), note_(std::move(note)) {}
  void run(const KernelArgs& a) const override { k_->run(a); }
  std::string name() const override { return k_->name() + " " + note_; }
  size_t scratch_bytes() const override { return k_->scratch_bytes(); }
  int in_place_input() const override { return k_->in_place_input(); }
  int64_t executed_macs() const override { return k_->executed_macs(); }
  bool keeps_planes() const override { return k_->keeps_planes(); }
  bool takes_planes() const override { return k_->takes_planes(); }
  std::unique_ptr<Kernel> relayout(const graph::Graph& g, const graph::Node& n) const override {
    std::unique_ptr<Kernel> k = k_->relayout(g, n);
    return k ? with_note(std::move(k), note_) : nullptr;
  }
  std::unique_ptr<Kernel> with_shortcut(const graph::Graph& g, const graph::Node& n,
                                        const graph::Node& b) const override {
    std::unique_ptr<Kernel> k = k_->with_shortcut(g, n, b);
    return k ? with_note(std::move(k), note_) : nullptr;
  }
  std::string choice_note() const override { return note_; }

 private:
  std::unique_ptr<Kernel> k_;
  std::string note_;
};

}  // namespace

std::unique_ptr<Kernel> with_note(std::unique_ptr<Kernel> k, std::string note) {
  return std::make_unique<Chosen>(std::move(k), std::move(note));
}

}  // namespace sluice::ops
