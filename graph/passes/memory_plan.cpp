#include "graph/passes/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace sluice::graph {

namespace {
size_t align_up(size_t x) { return (x + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment; }
}  // namespace

MemoryPlan plan_memory(const std::vector<BufferRequest>& requests) {
  const size_t n = requests.size();
  // Resolve sharing into roots whose lifetime covers every member.
  std::vector<size_t> root(n);
  std::vector<BufferRequest> merged = requests;
  for (size_t i = 0; i < n; ++i) {
    size_t r = i;
    while (merged[r].share_with >= 0) r = static_cast<size_t>(merged[r].share_with);
    root[i] = r;
  }
  for (size_t i = 0; i < n; ++i) {
    if (root[i] == i) continue;
    BufferRequest& r = merged[root[i]];
    r.first = std::min(r.first, requests[i].first);
    r.last = std::max(r.last, requests[i].last);
    r.bytes = std::max(r.bytes, requests[i].bytes);
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i)
    if (root[i] == i) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return merged[a].bytes > merged[b].bytes; });

  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  struct Placed {
    size_t offset, bytes;
    int first, last;
  };
  std::vector<Placed> placed;
  for (size_t i : order) {
    const BufferRequest& r = merged[i];
    const size_t bytes = align_up(std::max<size_t>(r.bytes, 1));
    std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of overlapping lifetimes
    for (const Placed& p : placed)
      if (p.first <= r.last && r.first <= p.last) busy.emplace_back(p.offset, p.offset + p.bytes);
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [b, e] : busy) {
      if (offset + bytes <= b) break;
      offset = std::max(offset, e);
    }
    placed.push_back({offset, bytes, r.first, r.last});
    plan.offsets[i] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + bytes);
  }
  for (size_t i = 0; i < n; ++i) plan.offsets[i] = plan.offsets[root[i]];
  return plan;
}

}  // namespace sluice::graph
