#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "graph/passes/memory_plan.h"
#include "runtime/timing.h"
#include "sluice/sluice.h"
#include "tests/unit/onnx_builder.h"

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

// Many buffers over thousands of steps (lifetimes across the planner's blocks of steps, from
// before the first step, long in-place chains pointing either way): every pair of buffers
// whose merged lifetimes overlap sits apart, and a shared buffer gets its root's offset.
TEST(MemoryPlan, LargeRandomPlansKeepEveryOverlappingPairApart) {
  uint32_t state = 12345;
  auto rnd = [&](uint32_t m) {
    state ^= state << 13, state ^= state >> 17, state ^= state << 5;
    return state % m;
  };
  std::vector<BufferRequest> reqs;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    const int first = static_cast<int>(rnd(2000)) - 1;
    const int len = rnd(10) == 0 ? static_cast<int>(rnd(600)) : static_cast<int>(rnd(4));
    reqs.push_back({static_cast<size_t>(1 + rnd(5000)), first, first + len, -1});
  }
  for (int i = 0; i < n; ++i)  // chains: to an earlier buffer, or to a later one that shares no further
    if (rnd(3) == 0) reqs[static_cast<size_t>(i)].share_with = rnd(2) == 0 && i > 0 ? static_cast<int>(rnd(static_cast<uint32_t>(i))) : -1;
  for (int i = n - 200; i < n; ++i) reqs[static_cast<size_t>(i)].share_with = i - 1;  // one long chain
  MemoryPlan p = plan_memory(reqs);
  // Roots and their merged lifetimes and sizes, by brute force.
  std::vector<size_t> root(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    size_t r = i;
    while (reqs[r].share_with >= 0) r = static_cast<size_t>(reqs[r].share_with);
    root[i] = r;
  }
  std::vector<BufferRequest> merged = reqs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    BufferRequest& m = merged[root[i]];
    m.first = std::min(m.first, reqs[i].first), m.last = std::max(m.last, reqs[i].last), m.bytes = std::max(m.bytes, reqs[i].bytes);
  }
  std::vector<size_t> roots;
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(p.offsets[i], p.offsets[root[i]]) << i;
    EXPECT_EQ(p.offsets[i] % kArenaAlignment, 0u);
    if (root[i] == i) roots.push_back(i);
  }
  int collisions = 0;
  for (size_t a = 0; a < roots.size(); ++a)
    for (size_t b = a + 1; b < roots.size(); ++b) {
      const BufferRequest &x = merged[roots[a]], &y = merged[roots[b]];
      if (x.first <= y.last && y.first <= x.last &&
          overlap(p.offsets[roots[a]], x.bytes, p.offsets[roots[b]], y.bytes))
        ++collisions;
    }
  EXPECT_EQ(collisions, 0);
  for (size_t r : roots) EXPECT_LE(p.offsets[r] + merged[r].bytes, p.arena_bytes);
}

// Tensors start on a cache line (64 bytes), whatever malloc's state: tensors of every size and
// dtype made between odd-sized mallocs, zero-filled ones zero, and a session's run outputs
// (written by vector stores: a run's output 16 bytes off a line once had the 56x56 shift model's
// output reorder take twice as long).
TEST(Tensors, BuffersStartOnACacheLine) {
  std::vector<void*> junk;
  std::vector<Tensor> keep;
  for (int i = 0; i < 40; ++i) {
    junk.push_back(std::malloc(static_cast<size_t>(8 + 24 * i)));
    const Shape shape{1 + i % 3, 1 + 7 * i, 1 + (i * 13) % 50};
    for (DType t : {DType::Float32, DType::Int64, DType::UInt8, DType::Bool}) {
      keep.push_back(i % 2 ? Tensor(t, shape) : Tensor::uninitialized(t, shape));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(keep.back().raw()) % 64, 0u) << dtype_name(t) << " " << shape_str(shape);
      if (i % 2) {
        const auto* b = static_cast<const unsigned char*>(keep.back().raw());
        for (size_t k = 0; k < keep.back().nbytes(); ++k) ASSERT_EQ(b[k], 0) << k;
      }
    }
    if (i % 3 == 0) keep.erase(keep.begin());
  }
  EXPECT_EQ(reinterpret_cast<uintptr_t>(Tensor(DType::Float32, {0, 4}).raw()) % 64, 0u);
  for (void* p : junk) std::free(p);

  testing::OnnxBuilder b;
  b.input("x", {1, 8, 56, 56});
  b.init_random("w", {16, 8, 1, 1});
  b.node("Conv", {"x", "w"}, {"y"});
  b.output("y");
  Session sess(b.load(), {1, true});
  for (int run = 0; run < 5; ++run) {
    std::vector<void*> more{std::malloc(static_cast<size_t>(16 + 48 * run))};
    const auto out = sess.run({{"x", Tensor(DType::Float32, {1, 8, 56, 56})}});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(out.at("y").raw()) % 64, 0u) << "run " << run;
    for (void* p : more) std::free(p);
  }
}

// `sluice bench`'s note on uneven timings: none for steady series, a few slow runs, or fewer
// than 5 runs; one naming the series, the ratio and both times when most runs were slow, and
// suggesting fewer threads only when every core was used.
TEST(BenchTimings, UnevenSeriesGetANote) {
  using runtime::uneven_timing_note;
  EXPECT_EQ(uneven_timing_note({3.3, 3.4, 3.3, 3.5, 3.3, 3.4}, "m.onnx", 2, 2), "");
  EXPECT_EQ(uneven_timing_note({3.3, 3.4, 90, 3.5, 3.3, 150, 3.4}, "m.onnx", 2, 2), "") << "a few slow runs";
  EXPECT_EQ(uneven_timing_note({3.3, 150, 155}, "m.onnx", 2, 2), "") << "too few runs";
  const std::string note = uneven_timing_note({3.3, 150, 155, 160, 3.4, 152}, "m.onnx", 2, 2);
  EXPECT_NE(note.find("m.onnx"), std::string::npos) << note;
  EXPECT_NE(note.find("45.8x"), std::string::npos) << note;  // the median (150 + 152) / 2 = 151 over 3.3
  EXPECT_NE(note.find("151.000 against 3.300 ms"), std::string::npos) << note;
  EXPECT_NE(note.find("fewer threads"), std::string::npos) << note;
  EXPECT_EQ(uneven_timing_note({3.3, 150, 155, 160, 3.4, 152}, "m.onnx", 1, 2).find("fewer threads"), std::string::npos);
  EXPECT_NE(uneven_timing_note({1, 1.6, 1.6, 1.6, 1.6}, "x", 1, 2), "");
  EXPECT_EQ(uneven_timing_note({1, 1.5, 1.5, 1.5, 1.5}, "x", 1, 2), "") << "1.5x exactly is not uneven";
}

}  // namespace
}  // namespace sluice::graph
