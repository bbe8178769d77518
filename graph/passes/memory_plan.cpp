#include "graph/passes/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace sluice::graph {

namespace {
size_t align_up(size_t x) { return (x + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment; }
}  // namespace

MemoryPlan plan_memory(const std::vector<BufferRequest>& requests) {
  const size_t n = requests.size();
  // Resolve sharing into roots whose lifetime covers every member (a member's chain stops at
  // the first buffer resolved before it: a chain of 100k in-place steps walked whole from every
  // member took seconds).
  std::vector<size_t> root(n);
  for (size_t i = 0; i < n; ++i) {
    size_t r = i;
    for (size_t guard = 0; requests[r].share_with >= 0 && guard <= n; ++guard) {
      const auto next = static_cast<size_t>(requests[r].share_with);
      if (next < i) {  // resolved already
        r = root[next];
        break;
      }
      r = next;
    }
    root[i] = r;
  }
  std::vector<BufferRequest> merged = requests;
  for (size_t i = 0; i < n; ++i) {
    if (root[i] == i) continue;
    BufferRequest& r = merged[root[i]];
    r.first = std::min(r.first, requests[i].first);
    r.last = std::max(r.last, requests[i].last);
    r.bytes = std::max(r.bytes, requests[i].bytes);
  }
  std::vector<size_t> order;
  int t_min = 0, t_max = 0;
  for (size_t i = 0; i < n; ++i)
    if (root[i] == i) {
      order.push_back(i);
      t_min = std::min(t_min, merged[i].first);
      t_max = std::max({t_max, merged[i].last, merged[i].first});
    }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return merged[a].bytes > merged[b].bytes; });

  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  struct Placed {
    size_t offset, bytes;
    int first, last;
  };
  std::vector<Placed> placed;
  // Placed buffers by the blocks of steps they are live in: a request looks only at the blocks
  // its lifetime touches, not at every buffer placed so far (quadratic on 100k-node graphs).
  constexpr int kSteps = 64;
  const auto block = [&](int t) { return static_cast<size_t>((t - t_min) / kSteps); };
  std::vector<std::vector<uint32_t>> live(block(t_max) + 1);
  std::vector<uint32_t> seen;                   // per placed buffer: the request that last took it into busy
  std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of overlapping lifetimes
  for (size_t i : order) {
    const BufferRequest& r = merged[i];
    const size_t bytes = align_up(std::max<size_t>(r.bytes, 1));
    const int last = std::max(r.first, r.last);
    busy.clear();
    const auto stamp = static_cast<uint32_t>(placed.size() + 1);
    for (size_t b = block(r.first); b <= block(last); ++b)
      for (uint32_t j : live[b]) {
        const Placed& p = placed[j];
        if (seen[j] == stamp || !(p.first <= last && r.first <= p.last)) continue;
        seen[j] = stamp;
        busy.emplace_back(p.offset, p.offset + p.bytes);
      }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [b, e] : busy) {
      if (offset + bytes <= b) break;
      offset = std::max(offset, e);
    }
    const auto id = static_cast<uint32_t>(placed.size());
    placed.push_back({offset, bytes, r.first, last});
    seen.push_back(0);
    for (size_t b = block(r.first); b <= block(last); ++b) live[b].push_back(id);
    plan.offsets[i] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + bytes);
  }
  for (size_t i = 0; i < n; ++i) plan.offsets[i] = plan.offsets[root[i]];
  return plan;
}

}  // namespace sluice::graph
