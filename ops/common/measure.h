// Measured kernel choice (design.md §7): where two kernels compute the same node and which is
// faster depends on the layer and the machine, time both on the node's real shapes at session
// creation and keep the faster; its name then notes both times (`sluice inspect` shows them).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ops/kernel.h"

namespace sluice::ops {

// Seeded random data (uniform in [-1, 1)) for every non-constant input of node n, the model's
// own data for its constant inputs (weights, bias), and a buffer for its output 0, as kernel
// arguments: what time_kernel times a kernel on, and what tests run two kernels on.
class RandomNodeData {
 public:
  RandomNodeData(const graph::Graph& g, const graph::Node& n, uint32_t seed = 0);
  // Arguments for one call of k (scratch sized for it, and filled with 0x7F bytes: a kernel
  // that reads scratch it did not write sees huge values, not zeros).
  KernelArgs args(const Kernel& k);
  // As plans may do: k's in-place input (Kernel::in_place_input, e.g. a fused residual sum)
  // laid over the output, its values copied there. Call before args().
  void share_in_place_input(const Kernel& k);
  // Output 0; NaN until a kernel writes it.
  const std::vector<float>& output() const { return bufs_.back(); }

 private:
  std::vector<std::vector<float>> bufs_;  // the non-constant inputs that exist, in order, then the output
  std::vector<TensorView> in_, out_;
  std::vector<std::byte> scratch_;
};

// The fastest wall time in ms of about `runs` timed calls of each kernel (fewer once the turns
// have taken 200 ms, at least two) on seeded random data
// of the node's input and output shapes, the kernels taking turns (a warm-up call and two
// timed ones of a, the same of b, again a, ...) so that a slow spell of a shared machine falls
// on all of them alike. The fastest call, not the median: on this kind of machine the noise
// only ever adds time, and medians of a few calls swung a choice both ways between runs (a
// shift layer: offset-read 0.37-0.48 ms vs tiled 0.25-0.49 in medians, 0.19-0.20 vs 0.22-0.32
// at best). in_activity: input 0's channel activity, as a gated producer would report it.
std::vector<double> time_kernels(const std::vector<const Kernel*>& ks, const graph::Graph& g, const graph::Node& n,
                                 int runs, const ChannelActivity* in_activity = nullptr);
// For tests only: while `prefix` is not empty, time_kernels times nothing and gives 0.001 ms
// to the kernels whose name starts with it and 1 ms to the others, so that a test of what a
// measured choice leads to (resident planes, a fused pool, a stem reading NCHW) gets that
// choice whatever the machine's load (such tests once skipped themselves when a loaded
// machine tipped every choice to oneDNN). Not thread-safe: set it with no session being made.
void prefer_kernels_for_testing(std::string prefix);
inline double time_kernel(const Kernel& k, const graph::Graph& g, const graph::Node& n, int runs) {
  return time_kernels({&k}, g, n, runs)[0];
}

// k, with `note` appended to its name.
std::unique_ptr<Kernel> with_note(std::unique_ptr<Kernel> k, std::string note);

}  // namespace sluice::ops
