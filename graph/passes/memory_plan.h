// Memory planning: one arena per execution context, planned once per input-shape
// signature. Every buffer gets a lifetime [first step, last step] and an offset;
// buffers whose lifetimes do not overlap share memory. In-place steps (an output
// written over an input that dies there) and views (Reshape and friends) share
// their input's buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::graph {

struct BufferRequest {
  size_t bytes = 0;
  int first = 0;          // step that writes it (-1: before the first step)
  int last = 0;           // last step that reads it
  int share_with = -1;    // another buffer index whose memory it reuses (view or in-place), or -1
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // per request (shared requests get their root's offset)
  size_t arena_bytes = 0;
};

// Alignment of every offset (bytes): whole cache lines, enough for AVX-512.
constexpr size_t kArenaAlignment = 64;

// Greedy by size: the largest buffers are placed first at the lowest offset that
// does not collide with an already placed buffer whose lifetime overlaps.
MemoryPlan plan_memory(const std::vector<BufferRequest>& requests);

}  // namespace sluice::graph
