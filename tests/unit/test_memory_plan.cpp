#include <gtest/gtest.h>

#include "graph/passes/memory_plan.h"

namespace sluice::graph {
namespace {

bool overlap(size_t a, size_t an, size_t b, size_t bn) { return a < b + bn && b < a + an; }

TEST(MemoryPlan, DisjointLifetimesShareMemory) {
  // a: steps 0-1, b: steps 1-2, c: steps 2-3 -> a and c can share.
  MemoryPlan p = plan_memory({{1000, 0, 1, -1}, {1000, 1, 2, -1}, {1000, 2, 3, -1}});
  EXPECT_EQ(p.offsets[0], p.offsets[2]);
  EXPECT_FALSE(overlap(p.offsets[0], 1000, p.offsets[1], 1000));
  EXPECT_LE(p.arena_bytes, 2 * 1024u);
}

TEST(MemoryPlan, OverlappingLifetimesNeverCollideAndOffsetsAreAligned) {
  std::vector<BufferRequest> reqs;
  for (int i = 0; i < 40; ++i) reqs.push_back({static_cast<size_t>(100 + 37 * i), i % 7, i % 7 + 3, -1});
  MemoryPlan p = plan_memory(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(p.offsets[i] % kArenaAlignment, 0u);
    EXPECT_LE(p.offsets[i] + reqs[i].bytes, p.arena_bytes);
    for (size_t j = i + 1; j < reqs.size(); ++j) {
      if (reqs[i].first <= reqs[j].last && reqs[j].first <= reqs[i].last) {
        EXPECT_FALSE(overlap(p.offsets[i], reqs[i].bytes, p.offsets[j], reqs[j].bytes)) << i << " vs " << j;
      }
    }
  }
}

TEST(MemoryPlan, SharedBufferExtendsRootLifetime) {
  // b is a view of a (shares its memory) and lives until step 5; c (steps 3-4) must not reuse a's bytes.
  MemoryPlan p = plan_memory({{512, 0, 1, -1}, {512, 1, 5, 0}, {512, 3, 4, -1}});
  EXPECT_EQ(p.offsets[0], p.offsets[1]);
  EXPECT_FALSE(overlap(p.offsets[0], 512, p.offsets[2], 512));
}

}  // namespace
}  // namespace sluice::graph
