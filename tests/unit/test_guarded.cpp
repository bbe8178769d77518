// Random shapes through Sluice's own conv kernels (the sparse conv in each read variant, the
// direct planar conv, the shift + 1x1 offset-read kernel) with every buffer (each input, the
// output, the scratch) ending at a page that cannot be read or written, so a read or write past
// any of them faults; each run also with the fused residual sum laid over the output, as plans
// lay it. Results against oneDNN's conv (or the tiled shift kernel) on the same node and data.
// (From a review of stop 18, which found no bug with ~7,000 cases; SLUICE_GUARDED_CASES runs more.)
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "ops/conv/planar.h"
#include "ops/kernel.h"
#include "ops/shift/shift.h"
#include "ops/sparse/sparse.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"

namespace sluice::testing {
namespace {

// `bytes` (rounded up to `align`) that end where an inaccessible page begins.
struct Guarded {
  std::byte* base = nullptr;
  size_t total = 0;
  void* p = nullptr;
  // fill: every byte's value (0xFF: every float a NaN, so stale scratch that reached an output
  // would show).
  Guarded(size_t bytes, size_t align, int fill = 0x7F) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes + page - 1) / page * page + page;
    total = body + 2 * page;
    base = static_cast<std::byte*>(mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED) throw std::runtime_error("mmap failed");
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + body, page, PROT_NONE);
    std::byte* end = base + page + body;
    const size_t rb = (bytes + align - 1) / align * align;
    p = end - rb;
    std::memset(p, fill, rb);
  }
  ~Guarded() { munmap(base, total); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
};

// Runs k on node n with random inputs (seed), each non-constant input, the output and the
// scratch ending at a guard page. in_place: k's in-place input shares the output's buffer.
std::vector<float> run_guarded(const ops::Kernel& k, const graph::Graph& g, const graph::Node& n, uint32_t seed,
                               bool in_place) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<std::unique_ptr<Guarded>> bufs;
  std::vector<ops::TensorView> in;
  const graph::Value& ov = g.value(n.outputs[0]);
  ops::TensorView out{ov.dtype, ov.shape, nullptr};
  const size_t out_n = static_cast<size_t>(out.numel());
  auto obuf = std::make_unique<Guarded>(out_n * 4, 4);
  {
    float* o = static_cast<float*>(obuf->p);
    for (size_t i = 0; i < out_n; ++i) o[i] = std::numeric_limits<float>::quiet_NaN();
  }
  out.data = obuf->p;
  const int ip = in_place ? k.in_place_input() : -1;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    ops::TensorView t;
    if (n.inputs[i] != graph::kNoValue) {
      const graph::Value& v = g.value(n.inputs[i]);
      t.dtype = v.dtype;
      t.shape = v.shape;
      if (v.is_constant()) {
        t.data = const_cast<void*>(v.constant.raw());
      } else {
        const size_t cnt = static_cast<size_t>(t.numel());
        if (static_cast<int>(i) == ip && cnt == out_n) {
          float* o = static_cast<float*>(obuf->p);
          for (size_t j = 0; j < cnt; ++j) o[j] = u(rng);
          t.data = o;
        } else {
          bufs.push_back(std::make_unique<Guarded>(cnt * 4, 4));
          float* d = static_cast<float*>(bufs.back()->p);
          for (size_t j = 0; j < cnt; ++j) d[j] = u(rng);
          t.data = d;
        }
      }
    }
    in.push_back(t);
  }
  Guarded scratch(std::max<size_t>(k.scratch_bytes(), 4), 64, 0xFF);
  ops::KernelArgs a{in, std::span<ops::TensorView>(&out, 1), scratch.p};
  k.run(a);
  const float* o = static_cast<const float*>(obuf->p);
  return std::vector<float>(o, o + out_n);
}

double diff(const std::vector<float>& a, const std::vector<float>& b) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    w = std::max(w, d);
  }
  return w;
}

struct ConvCase {
  int64_t n, c, h, w, m, kh, kw, stride, pt, pl, pb, pr;
  double zeros;
  bool residual;
  int act;  // 0 none, 1 relu, 2 leaky, 3 clip, 4 hardswish
};

int cases() {
  const char* e = std::getenv("SLUICE_GUARDED_CASES");
  return e ? std::atoi(e) : 150;
}

std::string str(const ConvCase& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "n%ld c%ld %ldx%ld m%ld k%ldx%ld s%ld pads %ld %ld %ld %ld z%.2f res%d act%d", p.n, p.c,
                p.h, p.w, p.m, p.kh, p.kw, p.stride, p.pt, p.pl, p.pb, p.pr, p.zeros, p.residual, p.act);
  return buf;
}

Model conv_model(const ConvCase& p, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.3f);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<float> w(static_cast<size_t>(p.m * p.c * p.kh * p.kw));
  for (auto& v : w) v = u(rng) < p.zeros ? 0.f : nd(rng);
  OnnxBuilder b(14);
  b.input("x", {p.n, p.c, p.h, p.w}).init("w", {p.m, p.c, p.kh, p.kw}, w).init_random("b", {p.m});
  auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
  OnnxBuilder::attr_ints(conv, "strides", {p.stride, p.stride});
  OnnxBuilder::attr_ints(conv, "pads", {p.pt, p.pl, p.pb, p.pr});
  std::string last = "y";
  if (p.residual) {
    const int64_t oh = (p.h + p.pt + p.pb - p.kh) / p.stride + 1, ow = (p.w + p.pl + p.pr - p.kw) / p.stride + 1;
    b.input("r", {p.n, p.m, oh, ow});
    b.node("Add", {"y", "r"}, {"s"});
    last = "s";
  }
  switch (p.act) {
    case 1: b.node("Relu", {last}, {"z"}); break;
    case 2: OnnxBuilder::attr_float(b.node("LeakyRelu", {last}, {"z"}), "alpha", 0.1f); break;
    case 3: {
      b.init("lo", {}, {-0.2f}).init("hi", {}, {0.7f});
      b.node("Clip", {last, "lo", "hi"}, {"z"});
      break;
    }
    case 4: b.node("HardSwish", {last}, {"z"}); break;
    default: b.node("Identity", {last}, {"z"}); break;
  }
  b.output("z");
  return b.load();
}

TEST(GuardedKernels, SparseAndDirectConvs) {
  std::mt19937 rng(12345);
  auto ri = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int checked = 0, split_checked = 0, copies_checked = 0, gather_checked = 0, direct_checked = 0;
  for (int it = 0; it < cases(); ++it) {
    ConvCase p{};
    p.n = ri(1, 2);
    const bool big = it % 5 == 4;  // every fifth case: several input-channel blocks
    p.c = big ? ri(100, 300) : ri(1, 40);
    const int kind = static_cast<int>(ri(0, 4));
    p.kh = p.kw = kind == 0 ? 3 : kind == 1 ? 3 : kind == 2 ? 5 : kind == 3 ? 1 : 3;
    if (kind == 4) p.kh = ri(1, 3), p.kw = ri(1, 3);
    p.stride = ri(1, 2);
    p.h = ri(std::max<int64_t>(p.kh, 2), big ? 40 : 70);
    p.w = ri(std::max<int64_t>(p.kw, 2), big ? 40 : 70);
    p.m = big ? ri(1, 70) : ri(1, 40);
    p.residual = ri(0, 1);
    const bool wide = it % 7 == 6;  // pads up to the kernel's size and beyond, on small maps
    p.pt = ri(0, wide ? p.kh + 1 : (p.kh / 2 + 1 < p.kh ? p.kh / 2 + 1 : p.kh - 1));
    p.pb = ri(0, wide ? p.kh + 1 : p.kh - 1);
    p.pl = ri(0, wide ? p.kw + 1 : p.kw - 1);
    p.pr = ri(0, wide ? p.kw + 1 : p.kw - 1);
    // (oneDNN's brgconv with a sum post-op, the reference here, crashes there: plans do not fuse it.)
    if (wide && (p.pt >= p.kh || p.pb >= p.kh || p.pl >= p.kw || p.pr >= p.kw)) p.residual = false;
    if (wide) {
      p.h = ri(std::max<int64_t>(1, p.kh - p.pt - p.pb), 20);
      p.w = ri(std::max<int64_t>(1, p.kw - p.pl - p.pr), 20);
    }
    p.zeros = std::uniform_real_distribution<double>(0.5, 0.97)(rng);
    p.act = static_cast<int>(ri(0, 4));
    Model m = conv_model(p, static_cast<uint32_t>(it));
    runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
    const graph::Graph& g = plan.graph();
    const graph::Node* conv = last_node(g, graph::OpType::Conv);
    ASSERT_NE(conv, nullptr) << str(p);
    auto dense = ops::make_onednn_conv(g, *conv);
    ASSERT_NE(dense, nullptr) << str(p);
    for (bool in_place : {false, true}) {
      const std::vector<float> want = run_guarded(*dense, g, *conv, 7 + it, in_place);
      for (ops::SparseVariant v : {ops::SparseVariant::Plain, ops::SparseVariant::Copies, ops::SparseVariant::Split,
                                    ops::SparseVariant::Gather}) {
        auto k = ops::make_sparse_conv(g, *conv, v);
        if (!k) continue;
        const double d = diff(run_guarded(*k, g, *conv, 7 + it, in_place), want);
        EXPECT_LT(d, 1e-3) << k->name() << " " << str(p) << " in_place " << in_place;
        ++checked;
        split_checked += v == ops::SparseVariant::Split;
        copies_checked += v == ops::SparseVariant::Copies;
        gather_checked += v == ops::SparseVariant::Gather;
      }
      if (auto k = ops::make_direct_conv(g, *conv)) {
        const double d = diff(run_guarded(*k, g, *conv, 7 + it, in_place), want);
        EXPECT_LT(d, 1e-3) << k->name() << " " << str(p) << " in_place " << in_place;
        ++direct_checked;
      }
    }
  }
  // Every kernel met: the Split and Copies variants need rows near a multiple of 16 floats,
  // Gather maps of at most 64 output pixels.
  if (ops::sparse_split_available()) {
    EXPECT_GT(split_checked, 0);
  } else {
    EXPECT_EQ(split_checked, 0);
  }
  EXPECT_GT(copies_checked, 0);
  EXPECT_GT(gather_checked, 0);
  EXPECT_GT(direct_checked, 0);
  EXPECT_GT(checked, 2 * cases());
}


Model shift_model2(int64_t n, int64_t c, int64_t h, int64_t w, int64_t m, int64_t k, bool grouped, int epi, uint32_t seed) {
  const int64_t taps = k * k, r = k / 2;
  std::vector<float> dw(static_cast<size_t>(c * taps), 0.f);
  for (int64_t ch = 0; ch < c; ++ch) dw[static_cast<size_t>(ch * taps + (grouped ? ch * taps / c : (ch * 7 + seed) % taps))] = 1.f;
  OnnxBuilder b(14);
  b.input("x", {n, c, h, w}).init("dw", {c, 1, k, k}, dw);
  b.init_random("w", {m, c, 1, 1}, 0.3f).init_random("b", {m});
  auto& sh = b.node("Conv", {"x", "dw"}, {"s"});
  OnnxBuilder::attr_ints(sh, "pads", {r, r, r, r});
  OnnxBuilder::attr_int(sh, "group", c);
  b.node("Conv", {"s", "w", "b"}, {"y"});
  std::string last = "y";
  if (epi & 1) {
    b.input("r", {n, m, h, w});
    b.node("Add", {"y", "r"}, {"t"});
    last = "t";
  }
  const int act = epi >> 1;
  if (act == 1) b.node("Relu", {last}, {"z"});
  else if (act == 2) OnnxBuilder::attr_float(b.node("LeakyRelu", {last}, {"z"}), "alpha", 0.1f);
  else if (act == 3) { b.init("lo", {}, {-0.2f}).init("hi", {}, {0.5f}); b.node("Clip", {last, "lo", "hi"}, {"z"}); }
  else if (act == 4) b.node("HardSwish", {last}, {"z"});
  else b.node("Identity", {last}, {"z"});
  b.output("z");
  return b.load();
}

TEST(GuardedKernels, ShiftConv) {
  std::mt19937 rng(777);
  auto ri = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int checked = 0;
  for (int it = 0; it < cases(); ++it) {
    const bool big = it % 10 == 9;  // wide shifts: maps that are mostly border, past the gather plan's cap
    const int64_t n = ri(1, 2), c = big ? ri(150, 300) : ri(9, 140), h = big ? ri(15, 40) : ri(1, 30), w = big ? ri(15, 40) : ri(1, 30), m = ri(1, 200);
    const int64_t k = big ? 2 * ri(3, 14) + 1 : (ri(0, 3) == 0 ? 5 : 3);
    const bool grouped = ri(0, 1);
    const int epi = static_cast<int>(ri(0, 9));
    Model md = shift_model2(n, c, h, w, m, k, grouped, epi, static_cast<uint32_t>(it));
    runtime::Plan plan(*md.graph(), {}, nhwc_plan_options());
    const graph::Graph& g = plan.graph();
    const graph::Node* fused = nullptr;
    for (const auto& nd : g.nodes)
      if (!nd.dead && nd.op == graph::OpType::Conv && !nd.p<graph::ConvParams>().pre_shift.empty()) fused = &nd;
    if (!fused) continue;
    auto tiled = ops::make_shift_conv_tiled(g, *fused);
    auto offset = ops::make_shift_conv_offset(g, *fused);
    if (!tiled || !offset) continue;
    for (bool in_place : {false, true}) {
      const double d = diff(run_guarded(*offset, g, *fused, 5 + it, in_place), run_guarded(*tiled, g, *fused, 5 + it, in_place));
      EXPECT_LT(d, 1e-3) << "n" << n << " c" << c << " " << h << "x" << w << " m" << m << " k" << k << " grouped" << grouped
                         << " epi" << epi << " in_place" << in_place;
      ++checked;
    }
  }
  EXPECT_GT(checked, cases());
}

// The max pool on resident planes (ops/pool/resident.cpp) with its input planes and output
// planes each ending at a guard page: maps from 1x1, windows 2 and 3 wide at stride 2 (its
// vector path) and stride 1, left pads 0 and 1, right pads up to 100 (windows wholly in the
// padding: the vector path read 2 vectors per window past the plane, found by a review), ceil
// mode. The result must be what the same kernel gives with room to spare after the input.
TEST(GuardedKernels, ResidentMaxPoolReadsOnlyItsPlanes) {
  int ran = 0;
  for (int64_t h : {1, 3, 8})
    for (int64_t w : {1, 2, 7, 33})
      for (int64_t kh : {2, 3})
        for (int64_t kw : {2, 3})
          for (int64_t s : {1, 2})
            for (int64_t pl : {0, 1})
              for (int64_t pr : {0, 1, 2})  // up to kernel - 1: larger pads are refused
                for (int64_t ceil : {0, 1}) {
                  if (w + pl + pr < kw || h + 1 < kh || pr >= kw) continue;
                  OnnxBuilder b;
                  b.input("x", {2, 3, h, w});
                  auto& pool = b.node("MaxPool", {"x"}, {"y"});
                  OnnxBuilder::attr_ints(pool, "kernel_shape", {kh, kw});
                  OnnxBuilder::attr_ints(pool, "strides", {s, s});
                  OnnxBuilder::attr_ints(pool, "pads", {1, pl, 0, pr});
                  OnnxBuilder::attr_int(pool, "ceil_mode", ceil);
                  b.output("y");
                  Model m = b.load();
                  runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
                  graph::Graph g = plan.graph();
                  graph::Node* pn = nullptr;
                  for (auto& node : g.nodes)
                    if (!node.dead && node.op == graph::OpType::MaxPool) pn = &node;
                  ASSERT_NE(pn, nullptr);
                  pn->layout = graph::Layout::Planar;
                  g.value(pn->inputs[0]).layout = g.value(pn->outputs[0]).layout = graph::Layout::Planar;
                  auto k = ops::make_resident_pool(g, *pn);
                  ASSERT_NE(k, nullptr);
                  const Shape xs = g.value(pn->inputs[0]).shape, ys = g.value(pn->outputs[0]).shape;
                  const size_t xn = static_cast<size_t>(ops::planar::resident_floats(xs)),
                               yn = static_cast<size_t>(ops::planar::resident_floats(ys));
                  std::mt19937 rng(static_cast<uint32_t>(ran));
                  std::normal_distribution<float> nd(-2.f, 1.f);
                  std::vector<float> x(xn);
                  for (auto& v : x) v = nd(rng);
                  auto run = [&](const float* xin, float* yout) {
                    ops::TensorView in[] = {{DType::Float32, xs, const_cast<float*>(xin)}};
                    ops::TensorView out[] = {{DType::Float32, ys, yout}};
                    Guarded scratch(std::max<size_t>(k->scratch_bytes(), 4), 64, 0xFF);
                    k->run({in, out, scratch.p});
                  };
                  Guarded gx(xn * 4, 4), gy(yn * 4, 4);
                  std::memcpy(gx.p, x.data(), xn * 4);
                  run(static_cast<const float*>(gx.p), static_cast<float*>(gy.p));
                  std::vector<float> roomy = x, want(yn);
                  roomy.resize(xn + 4096, std::numeric_limits<float>::quiet_NaN());
                  run(roomy.data(), want.data());
                  // (Not the slack after the last plane: no kernel writes it.)
                  EXPECT_EQ(std::memcmp(gy.p, want.data(), (yn - ops::planar::kResidentSlack) * 4), 0)
                      << h << "x" << w << " k" << kh << "x" << kw << " s" << s << " pads 1 " << pl << " 0 " << pr
                      << " ceil " << ceil;
                  ++ran;
                }
  EXPECT_GT(ran, 500);
}

}  // namespace
}  // namespace sluice::testing
