// Resident planes (graph::Layout::Planar, ops/conv/planar.h): activations that stay in the direct
// conv kernel's planar form between convs. The direct conv reading and writing them in every
// combination, against the same kernel on NHWC; the planar max pool against the NHWC one; which
// values passes::keep_planes_resident keeps planar, and why not; and whole models with and
// without resident planes against the reference kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include <malloc.h>
#include <omp.h>

#include "graph/passes/passes.h"
#include "ops/common/measure.h"
#include "ops/conv/planar.h"
#include "ops/sparse/sparse.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {
namespace {

namespace planar = ops::planar;

int64_t plane(int64_t h, int64_t w, bool wide = false) { return planar::resident(h, w, wide).plane(); }

// NHWC [n, h, w, c] as resident planes: borders and slack zero, as producers leave them (and
// the slack after the last plane that a plan's buffer has).
std::vector<float> to_resident(const std::vector<float>& x, int64_t n, int64_t c, int64_t h, int64_t w,
                               bool wide = false) {
  const int64_t ps = plane(h, w, wide);
  std::vector<float> r(static_cast<size_t>(planar::resident_floats({n, c, h, w}, wide)), 0.f);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t xx = 0; xx < w; ++xx)
        for (int64_t j = 0; j < c; ++j)
          r[static_cast<size_t>((b * c + j) * ps + planar::resident_index(w, y, xx, wide))] =
              x[static_cast<size_t>(((b * h + y) * w + xx) * c + j)];
  return r;
}

// NHWC [n, h, w, c] as NCHW.
std::vector<float> to_nchw(const std::vector<float>& x, int64_t n, int64_t c, int64_t h, int64_t w) {
  std::vector<float> r(x.size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < h * w; ++p)
      for (int64_t j = 0; j < c; ++j)
        r[static_cast<size_t>((b * c + j) * h * w + p)] = x[static_cast<size_t>((b * h * w + p) * c + j)];
  return r;
}

// Resident planes back to NHWC; `dirty` counts border and slack floats that are not exactly 0
// (a conv reading the planes takes them as its zero padding).
std::vector<float> from_resident(const std::vector<float>& r, int64_t n, int64_t c, int64_t h, int64_t w, int* dirty,
                                 bool wide = false) {
  const int64_t ps = plane(h, w, wide), rw = planar::resident(h, w, wide).grid_w();
  std::vector<float> x(static_cast<size_t>(n * h * w * c));
  std::vector<char> inside(static_cast<size_t>(ps), 0);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t xx = 0; xx < w; ++xx) inside[static_cast<size_t>(planar::resident_index(w, y, xx, wide))] = 1;
  *dirty = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t j = 0; j < c; ++j)
      for (int64_t i = 0; i < ps; ++i) {
        const float v = r[static_cast<size_t>((b * c + j) * ps + i)];
        if (inside[static_cast<size_t>(i)] == 0) {
          *dirty += !(v == 0.f);
          continue;
        }
        x[static_cast<size_t>((b * h * w + (i / rw - 1) * w + i % rw - 1) * c + j)] = v;
      }
  return x;
}

std::vector<float> normal(size_t n, uint32_t seed, float offset = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng) + offset;
  return v;
}

// Runs a kernel of a one-output node whose data inputs are 0 and (if given) 3.
void run_kernel(const ops::Kernel& k, const graph::Graph& g, const graph::Node& n, const float* x, const float* sum,
                float* y) {
  std::vector<ops::TensorView> in(n.inputs.size());
  in[0] = {DType::Float32, g.value(n.inputs[0]).shape, const_cast<float*>(x)};
  if (sum) in[3] = {DType::Float32, g.value(n.inputs[3]).shape, const_cast<float*>(sum)};
  ops::TensorView out[] = {{DType::Float32, g.value(n.outputs[0]).shape, y}};
  std::vector<std::byte> scratch(k.scratch_bytes() + 64);
  k.run({in, out, reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64)});
}

graph::NodeId node_id(const graph::Graph& g, const graph::Node* n) { return static_cast<graph::NodeId>(n - g.nodes.data()); }

// Kernels of a conv made by `make` (on a copy of g with the layouts set; null: not in that
// layout) with its input NHWC, resident or (nchw) NCHW (Plan::read_nchw_inputs), and its output
// and residual each NHWC or resident, against `want` (the conv all on NHWC), with the residual
// also laid over the output as plans do. `sparse`: resident values may also have wide rows (a
// residual and an output in planes have the same rows), and an NHWC residual may go with
// resident output. Every border and slack float of a resident output must be 0. Counts the runs
// that touched planes, that had wide rows and that read NCHW.
using MakeKernel = std::function<std::unique_ptr<ops::Kernel>(const graph::Graph&, const graph::Node&)>;
struct LayoutRuns {
  int resident = 0, wide = 0, nchw = 0;
};
LayoutRuns check_layouts(const graph::Graph& g, const graph::Node* node, bool sparse, const MakeKernel& make,
                         const std::vector<float>& x, const std::vector<float>& sum, const std::vector<float>& want,
                         const std::string& what) {
  enum Form { Nhwc, Res, Wide, Nchw };
  LayoutRuns runs;
  const bool res = node->p<graph::ConvParams>().fused_sum;
  const Shape& xs = g.value(node->inputs[0]).shape;
  const Shape& ys = g.value(node->outputs[0]).shape;
  const int64_t n = xs[0], c = xs[1], h = xs[2], w = xs[3], mo = ys[1], oh = ys[2], ow = ys[3];
  const std::vector<Form> x_forms = sparse ? std::vector<Form>{Nhwc, Res, Wide, Nchw} : std::vector<Form>{Nhwc, Res, Nchw};
  const std::vector<Form> forms = sparse ? std::vector<Form>{Nhwc, Res, Wide} : std::vector<Form>{Nhwc, Res};
  for (Form xf : x_forms)
    for (Form yf : forms)
      for (Form sf : forms) {
        const bool xr = xf == Res || xf == Wide, xc = xf == Nchw, yr = yf != Nhwc, sr = sf != Nhwc;
        if (sr && !res) continue;
        if (!sparse && yr && res && !sr) continue;  // keep_planes_resident never asks for it
        if (yr && sr && yf != sf) continue;  // nor for a residual and output in planes of other rows
        graph::Graph gg = g;
        graph::Node& nn = gg.node(node_id(g, node));
        auto set = [&](graph::ValueId v, Form f) {
          if (f == Nhwc) return;
          gg.value(v).layout = f == Nchw ? graph::Layout::NCHW : graph::Layout::Planar;
          gg.value(v).wide_rows = f == Wide;
        };
        set(nn.inputs[0], xf);
        if (xc) nn.p<graph::ConvParams>().reads_nchw = true;
        set(nn.outputs[0], yf);
        if (res) set(nn.inputs[3], sf);
        auto k = make(gg, nn);
        if (!k) continue;
        EXPECT_EQ(k->name().find("resident") != std::string::npos, xr || yr || sr) << k->name();
        EXPECT_EQ(k->name().find("reads NCHW") != std::string::npos, xc) << k->name();
        const std::vector<float> xin = xr ? to_resident(x, n, c, h, w, xf == Wide) : xc ? to_nchw(x, n, c, h, w) : x;
        const std::vector<float> sin = sr ? to_resident(sum, n, mo, oh, ow, sf == Wide) : sum;
        const size_t ysize = static_cast<size_t>(yr ? n * mo * plane(oh, ow, yf == Wide) : n * oh * ow * mo);
        for (bool in_place : {false, true}) {
          if (in_place && (!res || sr != yr)) continue;
          // 1024 sentinels after the output: a write past its last plane shows.
          std::vector<float> y = in_place ? sin : std::vector<float>(ysize, NAN);
          y.resize(ysize);  // (to_resident's slack too)
          y.resize(ysize + 1024, 1234.5f);
          run_kernel(*k, gg, nn, xin.data(), res ? (in_place ? y.data() : sin.data()) : nullptr, y.data());
          EXPECT_TRUE(std::all_of(y.begin() + static_cast<std::ptrdiff_t>(ysize), y.end(),
                                  [](float v) { return v == 1234.5f; }))
              << "wrote past the output: " << k->name();
          y.resize(ysize);
          int dirty = 0;
          const std::vector<float> got = yr ? from_resident(y, n, mo, oh, ow, &dirty, yf == Wide) : y;
          EXPECT_EQ(dirty, 0) << "resident output with non-zero borders: " << k->name();
          double worst = 0;
          for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
          EXPECT_LT(worst, 1e-5) << what << ": " << k->name() << (in_place ? " (in place)" : "") << " layouts " << xf
                                 << yf << sf;
          runs.resident += xr || yr || sr;
          runs.wide += xf == Wide || yf == Wide || sf == Wide;
          runs.nchw += xc;
        }
      }
  return runs;
}

std::string describe(const DenseCase& t) {
  return std::to_string(t.c) + "->" + std::to_string(t.m) + " " + std::to_string(t.h) + "x" + std::to_string(t.h) +
         " k" + std::to_string(t.k) + " s" + std::to_string(t.stride) + " batch " + std::to_string(t.n);
}

// The direct conv in every layout (check_layouts): 3x3 stride 1 (planes read as they are;
// results stored straight into the output planes, or through the planar results for
// LeakyRelu), stride 2 and 7x7 (input packed from the planes), 1x1 and 5x5, batch 2 and 3, a
// large map (tiles).
TEST(ResidentPlanes, DirectConvInEveryLayoutCombination) {
  const DenseCase cases[] = {{1, 19, 20, 23, 3, 1, true},  {2, 20, 39, 17, 3, 1, true}, {1, 20, 20, 15, 3, 1, false},
                             {1, 3, 20, 40, 7, 2, false},  {1, 13, 38, 17, 3, 2, true}, {1, 19, 7, 9, 1, 1, true},
                             {3, 5, 21, 11, 5, 1, true},   {1, 5, 20, 100, 3, 1, true}, {2, 6, 9, 130, 3, 1, false}};
  LayoutRuns all;
  for (const DenseCase& t : cases) {
    const PlannedConv pc(t);
    const graph::Graph& g = pc.graph();
    const graph::Node* node = pc.node;
    ASSERT_NE(node, nullptr);
    ASSERT_EQ(node->p<graph::ConvParams>().fused_sum, t.residual);
    const Shape& xs = g.value(node->inputs[0]).shape;
    const Shape& ys = g.value(node->outputs[0]).shape;
    const std::vector<float> x = normal(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]), 1);
    const std::vector<float> sum = normal(static_cast<size_t>(ys[0] * ys[1] * ys[2] * ys[3]), 2);
    auto nhwc = ops::make_direct_conv(g, *node);
    ASSERT_NE(nhwc, nullptr);
    std::vector<float> want(sum.size(), NAN);
    run_kernel(*nhwc, g, *node, x.data(), t.residual ? sum.data() : nullptr, want.data());
    const LayoutRuns r = check_layouts(g, node, false, ops::make_direct_conv, x, sum, want, describe(t));
    all.resident += r.resident, all.nchw += r.nchw;
  }
  EXPECT_GT(all.resident, 40);
  EXPECT_GT(all.nchw, 20);
}

// The sparse convs (each variant where it applies) in every layout, wide rows, an NCHW input
// and an NHWC residual into planes included (check_layouts), on weights 70% zero, against the direct
// conv on NHWC: 3x3 stride 1 on maps whose aligned rows are the resident ones (14x14: read as
// they are, the split variant too), are the wide ones (20x20, 23x23: read as they are when
// wide, else packed from the planes), stride 2, 1x1, 7x7, maps of at most 64 pixels (the
// gathered variant), batch 2, output channels off the 16-channel groups; the shifted copies
// (Copies) packed from planes too.
TEST(ResidentPlanes, SparseConvsInEveryLayoutCombination) {
  const DenseCase cases[] = {{1, 19, 20, 14, 3, 1, true}, {2, 20, 33, 20, 3, 1, true}, {1, 16, 16, 23, 3, 1, false},
                             {1, 3, 20, 40, 7, 2, false}, {1, 13, 38, 17, 3, 2, true}, {1, 19, 7, 9, 1, 1, true},
                             {2, 24, 40, 7, 3, 1, true},  {1, 32, 17, 14, 3, 2, true}};
  std::map<ops::SparseVariant, int> runs;
  int wide_runs = 0, nchw_runs = 0;
  for (const DenseCase& t : cases) {
    const PlannedConv pc(t);
    graph::Graph g = pc.graph();
    ASSERT_NE(pc.node, nullptr);
    const graph::Node* node = &g.node(node_id(pc.graph(), pc.node));
    Tensor& wt = g.value(node->inputs[1]).constant;
    float* wp = wt.data<float>();
    for (int64_t i = 0; i < wt.numel(); ++i)
      if (i % 10 < 7) wp[i] = 0.f;
    const Shape& xs = g.value(node->inputs[0]).shape;
    const Shape& ys = g.value(node->outputs[0]).shape;
    const std::vector<float> x = normal(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]), 3);
    const std::vector<float> sum = normal(static_cast<size_t>(ys[0] * ys[1] * ys[2] * ys[3]), 4);
    auto nhwc = ops::make_direct_conv(g, *node);
    ASSERT_NE(nhwc, nullptr);
    std::vector<float> want(sum.size(), NAN);
    run_kernel(*nhwc, g, *node, x.data(), t.residual ? sum.data() : nullptr, want.data());
    for (ops::SparseVariant v :
         {ops::SparseVariant::Plain, ops::SparseVariant::Copies, ops::SparseVariant::Split, ops::SparseVariant::Gather}) {
      const LayoutRuns r = check_layouts(
          g, node, true, [&](const graph::Graph& gg, const graph::Node& nn) { return ops::make_sparse_conv(gg, nn, v); },
          x, sum, want, describe(t));
      runs[v] += r.resident;
      wide_runs += r.wide;
      nchw_runs += r.nchw;
    }
  }
  EXPECT_GT(wide_runs, 30);
  EXPECT_GT(nchw_runs, 30);
  EXPECT_GT(runs[ops::SparseVariant::Plain], 20);
  EXPECT_GT(runs[ops::SparseVariant::Gather], 3);
  EXPECT_GT(runs[ops::SparseVariant::Copies], 10);
  if (ops::sparse_split_available()) {
    EXPECT_GT(runs[ops::SparseVariant::Split], 5);
  }
}

// MaxPool from resident planes to resident planes, and to NHWC, and from NHWC to planes (narrow
// and wide rows), against the NHWC pool on the same values (20 channels: a whole 16-channel
// transpose tile and a partial one):
// 2x2 stride 2, 3x3 stride 2 pad 1 (ResNet's), 3x3 stride 1, asymmetric pads, ceil mode, on
// all-negative inputs (a pool that took the zero border for a pixel would return 0) with NaN
// pixels (skipped, as the NHWC kernel skips them).
TEST(ResidentPlanes, MaxPoolMatchesNhwc) {
  struct PoolCase {
    int64_t k, s, pt, pl, pb, pr;
    bool ceil;
    int64_t h = 13, w = 11, kw = 0;  // kw 0: k
    int64_t c = 20;
  };
  // The last three: rows longer than the kernel's 1024-column chunks (at stride 2 and 1), and a
  // window wider than a chunk.
  const PoolCase cases[] = {{2, 2, 0, 0, 0, 0, false},          {3, 2, 1, 1, 1, 1, false},
                            {3, 1, 1, 1, 1, 1, false},          {3, 2, 0, 1, 2, 0, false},
                            {3, 2, 0, 0, 0, 0, true},           {2, 1, 0, 0, 1, 1, false},
                            {3, 2, 1, 1, 1, 1, true, 4, 2501, 0, 5},  {2, 1, 0, 1, 0, 1, false, 3, 2100, 0, 5},
                            {1, 3, 0, 2, 0, 1, false, 2, 1200, 1100, 5}};
  for (const PoolCase& t : cases) {
    OnnxBuilder b;
    b.input("x", {2, t.c, t.h, t.w});
    auto& pool = b.node("MaxPool", {"x"}, {"y"});
    OnnxBuilder::attr_ints(pool, "kernel_shape", {t.k, t.kw ? t.kw : t.k});
    OnnxBuilder::attr_ints(pool, "strides", {t.s, t.s});
    OnnxBuilder::attr_ints(pool, "pads", {t.pt, t.pl, t.pb, t.pr});
    OnnxBuilder::attr_int(pool, "ceil_mode", t.ceil);
    b.output("y");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
    graph::Graph g = plan.graph();
    const graph::Node* pn = last_node(g, graph::OpType::MaxPool);
    ASSERT_NE(pn, nullptr);
    graph::Node& node = g.node(node_id(g, pn));
    const Shape xs = g.value(node.inputs[0]).shape, ys = g.value(node.outputs[0]).shape;
    std::vector<float> x = normal(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]), 4, -5.f);
    for (size_t i = 0; i < x.size(); i += 37) x[i] = NAN;
    for (size_t i = 5; i < x.size(); i += 11) x[i] = -0.f;  // a -0 maximum stays -0 (signs compared below)
    node.layout = graph::Layout::NHWC;
    auto nhwc = ops::make_nhwc_pool(g, node);
    ASSERT_NE(nhwc, nullptr);
    std::vector<float> want(static_cast<size_t>(ys[0] * ys[1] * ys[2] * ys[3]), 7.f);
    run_kernel(*nhwc, g, node, x.data(), nullptr, want.data());
    ASSERT_TRUE(ops::resident_pool(g, node));
    node.layout = graph::Layout::Planar;
    g.value(node.inputs[0]).layout = g.value(node.outputs[0]).layout = graph::Layout::Planar;
    auto res = ops::make_resident_pool(g, node);
    ASSERT_NE(res, nullptr);
    const std::vector<float> xin = to_resident(x, xs[0], xs[1], xs[2], xs[3]);
    std::vector<float> y(static_cast<size_t>(ys[0] * ys[1] * plane(ys[2], ys[3])), NAN);
    run_kernel(*res, g, node, xin.data(), nullptr, y.data());
    int dirty = 0;
    const std::vector<float> got = from_resident(y, ys[0], ys[1], ys[2], ys[3], &dirty);
    EXPECT_EQ(dirty, 0);
    // Planes in, NHWC out (the pool before a conv that runs on NHWC).
    g.value(node.outputs[0]).layout = graph::Layout::NHWC;
    auto to_nhwc = ops::make_resident_pool(g, node);
    ASSERT_NE(to_nhwc, nullptr);
    EXPECT_NE(to_nhwc->name().find("NHWC out"), std::string::npos);
    std::vector<float> got_nhwc(want.size(), NAN);
    run_kernel(*to_nhwc, g, node, xin.data(), nullptr, got_nhwc.data());
    // NHWC in, planes out (narrow and wide rows: for sparse convs that read them).
    std::vector<float> got_planes[2];
    for (bool wide : {false, true}) {
      node.layout = g.value(node.inputs[0]).layout = graph::Layout::NHWC;
      g.value(node.outputs[0]).layout = graph::Layout::Planar;
      g.value(node.outputs[0]).wide_rows = wide;
      auto to_planes = ops::make_nhwc_pool(g, node);
      ASSERT_NE(to_planes, nullptr);
      EXPECT_NE(to_planes->name().find("resident planes out"), std::string::npos) << to_planes->name();
      std::vector<float> yp(static_cast<size_t>(ys[0] * ys[1] * plane(ys[2], ys[3], wide)), NAN);
      run_kernel(*to_planes, g, node, x.data(), nullptr, yp.data());
      got_planes[wide] = from_resident(yp, ys[0], ys[1], ys[2], ys[3], &dirty, wide);
      EXPECT_EQ(dirty, 0) << "NHWC in, planes out, wide " << wide;
      g.value(node.outputs[0]).wide_rows = false;
    }
    for (size_t i = 0; i < want.size(); ++i)
      for (const std::vector<float>& gp : got_planes) {
        ASSERT_EQ(std::isnan(gp[i]), std::isnan(want[i])) << "planes out, k" << t.k << " s" << t.s << " at " << i;
        if (!std::isnan(want[i])) {
          ASSERT_EQ(gp[i], want[i]) << "planes out, k" << t.k << " s" << t.s << " at " << i;
          ASSERT_EQ(std::signbit(gp[i]), std::signbit(want[i])) << "planes out, sign, k" << t.k << " at " << i;
        }
      }
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(std::isnan(got[i]), std::isnan(want[i])) << "k" << t.k << " s" << t.s << " at " << i;
      ASSERT_EQ(std::isnan(got_nhwc[i]), std::isnan(want[i])) << "NHWC out, k" << t.k << " s" << t.s << " at " << i;
      if (!std::isnan(want[i])) {
        ASSERT_EQ(got[i], want[i]) << "k" << t.k << " s" << t.s << " at " << i;
        ASSERT_EQ(got_nhwc[i], want[i]) << "NHWC out, k" << t.k << " s" << t.s << " at " << i;
        ASSERT_EQ(std::signbit(got[i]), std::signbit(want[i])) << "sign of zero, k" << t.k << " s" << t.s << " at " << i;
        ASSERT_EQ(std::signbit(got_nhwc[i]), std::signbit(want[i])) << "NHWC out, sign, k" << t.k << " s" << t.s << " at " << i;
      }
    }
  }
}

// The direct conv with the max pool that reads its resident output fused in
// (ops::make_pooled_direct_conv: pooled by bands of rows as the conv finishes them) against the
// two kernels one after the other: both outputs bit for bit, the pool's in resident planes and
// in NHWC. Large maps run the conv's tiles (rows pooled as they go, the rows across the threads'
// shares after), one case a 12-column map whose vector reads run three rows on; a small map
// pools everything after. The conv's output starts at 1e30 everywhere: a row pooled before
// the conv wrote it would show that maximum.
// Also: LeakyRelu (stored through the planar results, not straight from the registers), a
// stride-2 conv, pools with pads, ceil mode, stride 1 and a window wider than the map, and
// 1 to 4 threads, one kernel made for 1 thread and run on 4 (it must not pool as it goes: it
// has tmp rows for one thread; found by review, it wrote past its scratch).
TEST(ResidentPlanes, PoolFusedIntoDirectConvMatchesTheTwoKernels) {
  struct FuseCase {
    int64_t n, c, m, h, w, k, s, pad;
    bool ceil;
    int64_t conv_stride = 1;
    bool leaky = false;
    int made_on = 0, run_on = 0;  // threads (0: as the test runs)
  };
  const FuseCase cases[] = {{1, 5, 19, 100, 98, 2, 2, 0, false},
                            {2, 6, 20, 101, 97, 3, 2, 1, false, 1, true},
                            {1, 4, 10, 130, 60, 3, 1, 1, false},
                            {1, 8, 24, 23, 17, 2, 2, 0, true},
                            {1, 3, 7, 600, 12, 3, 2, 0, true, 1, false, 3, 3},
                            {1, 4, 10, 200, 120, 3, 2, 1, false, 2},
                            {3, 4, 12, 150, 40, 5, 3, 2, true, 1, true, 4, 4},
                            {1, 4, 12, 150, 20, 25, 1, 3, false},
                            {1, 5, 19, 100, 98, 2, 2, 0, false, 1, false, 1, 4}};
  const int threads = omp_get_max_threads();
  for (const FuseCase& t : cases) {
    OnnxBuilder b;
    b.input("x", {t.n, t.c, t.h, t.w}).init_random("w", {t.m, t.c, 3, 3}, 0.3f).init_random("b", {t.m});
    auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
    OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
    OnnxBuilder::attr_ints(conv, "strides", {t.conv_stride, t.conv_stride});
    if (t.leaky)
      OnnxBuilder::attr_float(b.node("LeakyRelu", {"y"}, {"r"}), "alpha", 0.1f);
    else
      b.node("Relu", {"y"}, {"r"});
    auto& pool = b.node("MaxPool", {"r"}, {"p"});
    OnnxBuilder::attr_ints(pool, "kernel_shape", {t.k, t.k});
    OnnxBuilder::attr_ints(pool, "strides", {t.s, t.s});
    OnnxBuilder::attr_ints(pool, "pads", {t.pad, t.pad, t.pad, t.pad});
    OnnxBuilder::attr_int(pool, "ceil_mode", t.ceil);
    b.output("p");
    Model model = b.load();
    runtime::Plan plan(*model.graph(), {}, nhwc_plan_options());
    const std::string what = std::to_string(t.c) + "->" + std::to_string(t.m) + " " + std::to_string(t.h) + "x" +
                             std::to_string(t.w) + " pool " + std::to_string(t.k) + "/" + std::to_string(t.s) +
                             " threads " + std::to_string(t.made_on) + "->" + std::to_string(t.run_on);
    for (bool planes_out : {true, false}) {
      graph::Graph g = plan.graph();
      graph::Node& cn = g.node(node_id(g, last_node(g, graph::OpType::Conv)));
      graph::Node& pn = g.node(node_id(g, last_node(g, graph::OpType::MaxPool)));
      ASSERT_EQ(pn.inputs[0], cn.outputs[0]) << "the Relu was not fused into the conv";
      g.value(cn.outputs[0]).layout = graph::Layout::Planar;
      pn.layout = graph::Layout::Planar;
      if (planes_out) g.value(pn.outputs[0]).layout = graph::Layout::Planar;
      const Shape xs = g.value(cn.inputs[0]).shape, ys = g.value(cn.outputs[0]).shape, ps = g.value(pn.outputs[0]).shape;
      const std::vector<float> x = normal(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]), 3);
      const size_t ysize = static_cast<size_t>(ys[0] * ys[1] * plane(ys[2], ys[3]));
      const size_t psize = static_cast<size_t>(planes_out ? ps[0] * ps[1] * plane(ps[2], ps[3]) : ps[0] * ps[1] * ps[2] * ps[3]);
      // Unfused.
      auto direct = ops::make_direct_conv(g, cn);
      auto pooled = ops::make_resident_pool(g, pn);
      ASSERT_NE(direct, nullptr);
      ASSERT_NE(pooled, nullptr);
      std::vector<float> want_y(ysize, 1e30f), want_p(psize, NAN);
      run_kernel(*direct, g, cn, x.data(), nullptr, want_y.data());
      run_kernel(*pooled, g, pn, want_y.data(), nullptr, want_p.data());
      // Fused: output 0 the conv's planes, output 1 the pool's; 1024 sentinels after each, and
      // after its scratch.
      omp_set_num_threads(t.made_on ? t.made_on : threads);
      auto fused = ops::make_pooled_direct_conv(g, cn, pn);
      omp_set_num_threads(t.run_on ? t.run_on : threads);
      ASSERT_NE(fused, nullptr) << what;
      EXPECT_EQ(fused->name().rfind("direct:planar+pool", 0), 0u) << fused->name();
      EXPECT_NE(fused->name().find("then its max pool"), std::string::npos) << fused->name();
      std::vector<float> y(ysize + 1024, 1e30f), p(psize + 1024, NAN);
      std::fill(y.begin() + static_cast<std::ptrdiff_t>(ysize), y.end(), 1234.5f);
      std::fill(p.begin() + static_cast<std::ptrdiff_t>(psize), p.end(), 1234.5f);
      ops::TensorView in[] = {{DType::Float32, xs, const_cast<float*>(x.data())}, {}, {}};
      ops::TensorView out[] = {{DType::Float32, ys, y.data()}, {DType::Float32, ps, p.data()}};
      std::vector<std::byte> scratch(fused->scratch_bytes() + 64 + 4096, std::byte{0x5a});
      auto* s0 = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64);
      fused->run({in, out, s0});
      omp_set_num_threads(threads);
      EXPECT_TRUE(std::all_of(s0 + fused->scratch_bytes(), scratch.data() + scratch.size(),
                              [](std::byte v) { return v == std::byte{0x5a}; }))
          << "wrote past its scratch: " << what;
      for (const auto* v : {&y, &p})
        EXPECT_TRUE(std::all_of(v->end() - 1024, v->end(), [](float f) { return f == 1234.5f; }))
            << "wrote past an output: " << what;
      y.resize(ysize);
      p.resize(psize);
      for (size_t i = 0; i < ysize; ++i) ASSERT_EQ(y[i], want_y[i]) << "conv output at " << i << ": " << what;
      for (size_t i = 0; i < psize; ++i)
        ASSERT_EQ(p[i], want_p[i]) << "pool output at " << i << (planes_out ? " (planes): " : " (NHWC): ") << what;
      if (planes_out) {
        int dirty = 0;
        from_resident(p, ps[0], ps[1], ps[2], ps[3], &dirty);
        EXPECT_EQ(dirty, 0) << what;
      }
    }
  }
}

// x -> conv1 (3 -> 20, Relu) -> MaxPool 3x3/2 -> conv2 (Relu) -> conv3 + pool output (residual,
// Relu) -> conv4 (stride 2, 20 -> 24) -> conv5 (1x1, 24 -> 10) -> y, on a size x size input;
// `sparse`: 7 of every 10 weights zero.
Model stem_and_block(int64_t size = 32, bool sparse = false, int64_t batch = 1) {
  OnnxBuilder b;
  b.input("x", {batch, 3, size, size});
  uint32_t seed = 40;
  auto conv = [&](const std::string& in, const std::string& name, int64_t c, int64_t m, int64_t k, int64_t s) {
    if (sparse) {
      std::vector<float> w = normal(static_cast<size_t>(m * c * k * k), ++seed);
      for (size_t i = 0; i < w.size(); ++i) w[i] = i % 10 < 7 ? 0.f : 0.3f * w[i];
      b.init(name + "_w", {m, c, k, k}, w);
    } else {
      b.init_random(name + "_w", {m, c, k, k}, 0.3f);
    }
    b.init_random(name + "_b", {m});
    auto& n = b.node("Conv", {in, name + "_w", name + "_b"}, {name});
    OnnxBuilder::attr_ints(n, "strides", {s, s});
    OnnxBuilder::attr_ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
  };
  conv("x", "c1", 3, 20, 3, 1);
  b.node("Relu", {"c1"}, {"r1"});
  auto& pool = b.node("MaxPool", {"r1"}, {"p"});
  OnnxBuilder::attr_ints(pool, "kernel_shape", {3, 3});
  OnnxBuilder::attr_ints(pool, "strides", {2, 2});
  OnnxBuilder::attr_ints(pool, "pads", {1, 1, 1, 1});
  conv("p", "c2", 20, 20, 3, 1);
  b.node("Relu", {"c2"}, {"r2"});
  conv("r2", "c3", 20, 20, 3, 1);
  b.node("Add", {"c3", "p"}, {"s3"});
  b.node("Relu", {"s3"}, {"r3"});
  conv("r3", "c4", 20, 24, 3, 2);
  conv("c4", "c5", 24, 10, 1, 1);
  b.output("c5");
  return b.load();
}

// Layouts keep_planes_resident gives when `direct` names the convs on the direct kernel and
// `takes` those on kernels that take planes (sparse; by their weight's name): "c1=P pool=- ..."
// says whether each conv's output and the pool's are planar (P), planar with wide rows (W) or not.
std::string planar_outputs(const Model& m, const std::set<std::string>& direct,
                           const std::set<std::string>& takes = {}) {
  runtime::Plan plan(*m.graph(), {}, {1, true});
  graph::Graph g = plan.graph();
  auto weight = [&](graph::NodeId id) {
    const graph::Node& n = g.node(id);
    return n.op == graph::OpType::Conv ? g.value(n.inputs[1]).name : std::string();
  };
  graph::passes::keep_planes_resident(
      g, [&](graph::NodeId id) { return direct.count(weight(id).substr(0, 2)) > 0; },
      [&](graph::NodeId id) { return takes.count(weight(id).substr(0, 2)) > 0; });
  std::string r;
  for (graph::NodeId id : g.topological_order()) {
    const graph::Node& n = g.node(id);
    if (n.op != graph::OpType::Conv && n.op != graph::OpType::MaxPool) continue;
    const graph::Value& y = g.value(n.outputs[0]);
    r += (n.op == graph::OpType::MaxPool ? std::string("pool") : weight(id).substr(0, 2)) + "=" +
         (y.layout != graph::Layout::Planar ? "-" : y.wide_rows ? "W" : "P") + " ";
    if (y.wide_rows) {
      EXPECT_EQ(y.layout, graph::Layout::Planar);
    }
    if (n.op == graph::OpType::MaxPool) {
      // A pool runs on planes when it reads them, whatever it writes; planes out need planes in,
      // or readers that are all sparse convs (`takes`).
      const bool in = g.value(n.inputs[0]).layout == graph::Layout::Planar;
      EXPECT_EQ(n.layout == graph::Layout::Planar, in);
      if (y.layout == graph::Layout::Planar && !in) {
        for (graph::NodeId c : y.consumers) EXPECT_EQ(takes.count(weight(c).substr(0, 2)), 1u) << weight(c);
      }
    }
  }
  return r;
}

TEST(KeepPlanesResident, KeepsPlanarOnlyBetweenDirectConvsAndPools) {
  Model m = stem_and_block();
  // All on the direct kernel: everything planar but c5's output (read by the reorder to the
  // graph output's NCHW).
  EXPECT_EQ(planar_outputs(m, {"c1", "c2", "c3", "c4", "c5"}), "c1=P pool=P c2=P c3=P c4=P c5=- ");
  // c2 on oneDNN: the pool output it reads is NHWC, but the pool still reads c1's planes (and
  // writes NHWC); c3 reads that residual as NHWC and then cannot write planes (an NHWC
  // residual is not added into planes).
  EXPECT_EQ(planar_outputs(m, {"c1", "c3", "c4", "c5"}), "c1=P pool=- c2=- c3=- c4=P c5=- ");
  // c1 on oneDNN: the pool reads NHWC; c3's residual is NHWC, so c3 writes NHWC; c2 -> c3 planar.
  EXPECT_EQ(planar_outputs(m, {"c2", "c3", "c4", "c5"}), "c1=- pool=- c2=P c3=- c4=P c5=- ");
  // c4 on oneDNN: c3 (whose output only c4 reads) writes NHWC, with its residual still planar.
  EXPECT_EQ(planar_outputs(m, {"c1", "c2", "c3", "c5"}), "c1=P pool=P c2=P c3=- c4=- c5=- ");
  EXPECT_EQ(planar_outputs(m, {}), "c1=- pool=- c2=- c3=- c4=- c5=- ");
}

// Sparse convs (kernels that take planes): planar between them, whatever the residual's layout;
// not into a pool (the NHWC pool is faster after them), but out of an NHWC pool that only they
// read; wide rows where the rows grow by at most 15% (12x12 after the pool: 14 -> 16 floats;
// 6x6 after the stride-2 conv: 8 -> 16, no), and only between sparse convs (or from such a
// pool), with a residual in planes of the same rows as the output.
TEST(KeepPlanesResident, SparseConvsTakePlanesWithWideRows) {
  Model m = stem_and_block(24);
  const std::set<std::string> all = {"c1", "c2", "c3", "c4", "c5"};
  // The NHWC pool writes planes for c2 and c3's residual.
  EXPECT_EQ(planar_outputs(m, {}, all), "c1=- pool=W c2=W c3=W c4=P c5=- ");
  // Not for a direct conv: c2 on the direct kernel reads the pool's output as NHWC; c3 adds
  // it into planes (wide: c3's output only c4, sparse, reads); c2's planes are narrow.
  EXPECT_EQ(planar_outputs(m, {"c2"}, {"c3", "c4", "c5"}), "c1=- pool=- c2=P c3=W c4=P c5=- ");
  // c1 and c2 on the direct kernel: the pool reads c1's planes and writes planes for c2 and
  // c3's residual, narrow (not a sparse conv's); c3's output would be wide, but its residual
  // is not: both narrow.
  EXPECT_EQ(planar_outputs(m, {"c1", "c2"}, {"c3", "c4", "c5"}), "c1=P pool=P c2=P c3=P c4=P c5=- ");
  // 32x32: 18-float rows would become 32, more than 15%: no wide rows.
  EXPECT_EQ(planar_outputs(stem_and_block(32), {}, all), "c1=- pool=P c2=P c3=P c4=P c5=- ");
}

// The same model with sparse weights on the sparse kernels (--sparse always): its wide rows
// and NHWC residual into planes give the reference kernels' answer, on 1 and 2 threads and at
// batch 1 and 3.
TEST(KeepPlanesResident, SparseModelWithWideRowsMatchesReference) {
  for (int64_t batch : {1, 3}) {
    Model m = stem_and_block(24, true, batch);
    const Tensor x = random_tensor({batch, 3, 24, 24}, 8);
    auto ref = Session(m, {1, false}).run({{"x", x}});
    for (int threads : {1, 2}) {
      SessionOptions o{threads, true};
      o.sparse = SparseMode::Always;
      Session sess(m, o);
      const std::string plan = sess.inspect(false);
      EXPECT_NE(plan.find("rows padded to 16 floats"), std::string::npos) << plan;
      auto got = sess.run({{"x", x}});
      EXPECT_LT(normalized_error(got.begin()->second, ref.begin()->second), 1e-5)
          << threads << " threads, batch " << batch;
    }
  }
}

// x -> conv (3 -> 7, Relu) -> conv (7 -> 7, Relu) -> MaxPool 2x2/2 -> conv (7 -> 5, Relu) -> y:
// a VGG stage slimmed to a few channels, on a map large enough that the direct kernel's
// timing wins clearly over oneDNN's 16-channel blocks (7 of 16 lanes).
Model thin_stage() {
  OnnxBuilder b;
  b.input("x", {2, 3, 96, 96});
  const char* names[] = {"c1", "c2", "c3"};
  const int64_t ch[] = {3, 7, 7, 5};
  std::string in = "x";
  for (int i = 0; i < 3; ++i) {
    const std::string n = names[i];
    b.init_random(n + "_w", {ch[i + 1], ch[i], 3, 3}, 0.3f).init_random(n + "_b", {ch[i + 1]});
    OnnxBuilder::attr_ints(b.node("Conv", {in, n + "_w", n + "_b"}, {n}), "pads", {1, 1, 1, 1});
    b.node("Relu", {n}, {"r" + n});
    in = "r" + n;
    if (i == 1) {
      auto& pool = b.node("MaxPool", {in}, {"p"});
      OnnxBuilder::attr_ints(pool, "kernel_shape", {2, 2});
      OnnxBuilder::attr_ints(pool, "strides", {2, 2});
      in = "p";
    }
  }
  b.output(in);
  return b.load();
}

// Whole models against the reference kernels, with resident planes and without, on 1 and 2
// threads; the sessions' own plans are checked for planar values (inspect). Where the measured
// choice put no conv on the direct kernel on this machine in any of them, nothing was resident:
// the test then says so rather than pass on the NHWC path alone.
// No step writes over bytes it reads, but for its kernel's in-place input. (A conv with its pool
// fused in writes the pool's output at its own step: that value once lived from the pool's step
// only, and shared the conv's input bytes.) Returns the pools fused.
int expect_outputs_apart_from_inputs(const runtime::Plan& plan) {
  const auto& slots = plan.slots();
  auto arena = [&](int s) { return s >= 0 && slots[s].kind == runtime::SlotKind::Arena; };
  for (const runtime::Step& st : plan.steps())
    for (size_t oi = 0; oi < st.out.size(); ++oi)
      for (size_t ii = 0; ii < st.in.size(); ++ii) {
        const int o = st.out[oi], i = st.in[ii];
        if (!arena(o) || !arena(i) || (oi == 0 && static_cast<int>(ii) == st.kernel->in_place_input())) continue;
        const bool apart = slots[o].offset + slots[o].bytes <= slots[i].offset ||
                           slots[i].offset + slots[i].bytes <= slots[o].offset;
        EXPECT_TRUE(apart) << plan.graph().node(st.node).name << " (" << st.kernel->name() << "): output " << oi
                           << " shares bytes with input " << ii;
      }
  int fused = 0;
  for (const auto& [name, count] : plan.pass_log())
    if (name == "fuse_pools") fused += count;
  return fused;
}


// With the direct kernel preferred, so that values are resident and pools fused whatever the
// machine's load (the measured choice is what the other tests run on).
TEST(ResidentPlanes, ModelsMatchReferenceWithAndWithout) {
  const PreferKernels prefer("direct");
  int fused_plans = 0;
  for (const auto& [m, shape] : {std::pair{stem_and_block(), Shape{1, 3, 32, 32}}, {thin_stage(), Shape{2, 3, 96, 96}}}) {
    const Tensor x = random_tensor(shape, 11);
    auto ref = Session(m, {1, false}).run({{"x", x}});
    for (bool resident : {true, false})
      for (int threads : {1, 2}) {
        SessionOptions o{threads, true};
        o.resident_planes = resident;
        runtime::Plan plan(*m.graph(), {}, o);
        int kept = -1;
        for (const auto& [name, count] : plan.pass_log())
          if (name == "keep_planes_resident") kept = count;
        EXPECT_EQ(kept >= 0, resident) << "the pass runs only with resident planes on";
        fused_plans += expect_outputs_apart_from_inputs(plan) > 0;
        for (const runtime::Step& st : plan.steps()) {  // MACs of the kernels made again, not of the first choice
          const int64_t own = st.kernel->executed_macs();
          EXPECT_EQ(st.executed_macs, own >= 0 ? own : ops::static_macs(plan.graph(), plan.graph().node(st.node)))
              << st.kernel->name();
        }
        Session sess(m, o);
        const bool planar = sess.inspect(true).find("\"planar\"") != std::string::npos;
        EXPECT_EQ(planar, resident) << (resident ? "no value kept planar with the direct kernel preferred"
                                                 : "--planes nhwc kept a value planar");
        auto got = sess.run({{"x", x}});
        EXPECT_LT(normalized_error(got.begin()->second, ref.begin()->second), 1e-5)
            << (resident ? "resident planes" : "NHWC") << ", " << threads << " threads";
      }
  }
  EXPECT_GT(fused_plans, 0) << "no plan fused a pool into its conv: the memory plan check saw none";
}

// A run's output tensors are not zero-filled (Plan::execute): every element must come from the
// step that computes it, or from the copy of a constant or input output. With glibc's
// M_PERTURB, fresh allocations hold 0x5a bytes (1.5e16 as floats): an element left unwritten
// shows against the reference kernels. Models: thin convs with a fused pool and a residual
// block (resident planes); outputs that are a graph input, a constant and a Relu of the input;
// a Dropout's mask.
TEST(RunOutputs, EveryElementIsWritten) {
  mallopt(M_PERTURB, 0xa5);
  OnnxBuilder b;
  b.input("x", {2, 3, 96, 96}).init_random("c", {4});
  b.node("Relu", {"x"}, {"r"});
  b.output("r").output("x").output("c");
  const Model passthrough = b.load();
  // A Dropout's mask as a graph output: identity elimination dropped the node, and no step wrote
  // the mask (found with this test's first form, after a probe).
  OnnxBuilder d(7);
  d.input("x", {2, 3, 96, 96});
  d.node("Dropout", {"x"}, {"y", "mask"});
  d.node("Relu", {"y"}, {"r"});
  d.output("r").output("mask");
  const Model dropout = d.load();
  for (const auto& [m, shape] : {std::pair{stem_and_block(), Shape{1, 3, 32, 32}}, {thin_stage(), Shape{2, 3, 96, 96}},
                                 {passthrough, Shape{2, 3, 96, 96}}, {dropout, Shape{2, 3, 96, 96}}}) {
    const Tensor x = random_tensor(shape, 5);
    const auto ref = Session(m, {1, false}).run({{"x", x}});
    for (int threads : {1, 2}) {
      Session sess(m, {threads, true});
      for (int run = 0; run < 2; ++run) {
        const auto got = sess.run({{"x", x}});
        ASSERT_EQ(got.size(), ref.size());
        for (const auto& [name, t] : ref)
          EXPECT_LT(normalized_error(got.at(name), t), 1e-5) << "output '" << name << "', " << threads << " threads";
      }
    }
  }
  mallopt(M_PERTURB, 0);
}

// A conv on a sparse kernel keeps it: with --sparse always (SparseMode::Always) every conv of a
// thin stage whose weights are 75% zero stays sparse (they were once timed again against the
// direct kernel on planes and replaced where it won, and their executed MACs still counted the
// sparse kernel's), and the values between them stay in resident planes, which the sparse
// kernels read and write (Kernel::takes_planes): the stage's answer is the reference kernels'.
TEST(ResidentPlanes, SparseKernelsKeepTheirChoice) {
  OnnxBuilder b;
  b.input("x", {1, 3, 48, 48});
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::string in = "x";
  for (int i = 0; i < 3; ++i) {
    const std::string n = "c" + std::to_string(i);
    const int64_t c = i == 0 ? 3 : 20;
    std::vector<float> w(static_cast<size_t>(20 * c * 9));
    for (size_t j = 0; j < w.size(); ++j) w[j] = j % 4 == 1 ? nd(rng) : 0.f;
    b.init(n + "_w", {20, c, 3, 3}, w).init_random(n + "_b", {20});
    OnnxBuilder::attr_ints(b.node("Conv", {in, n + "_w", n + "_b"}, {n}), "pads", {1, 1, 1, 1});
    b.node("Relu", {n}, {"r" + n});
    in = "r" + n;
  }
  b.output(in);
  Model m = b.load();
  SessionOptions o{1, true};
  o.sparse = SparseMode::Always;
  runtime::Plan plan(*m.graph(), {}, o);
  int planar_convs = 0;
  for (const runtime::Step& st : plan.steps()) {
    if (plan.graph().node(st.node).op != graph::OpType::Conv) continue;
    EXPECT_EQ(st.kernel->name().rfind("sparse:", 0), 0u) << st.kernel->name();
    EXPECT_EQ(st.executed_macs, st.kernel->executed_macs());
    planar_convs += st.kernel->name().find("resident planes") != std::string::npos;
  }
  EXPECT_EQ(planar_convs, 3);
  int kept = -1;
  for (const auto& [name, count] : plan.pass_log())
    if (name == "keep_planes_resident") kept = count;
  EXPECT_EQ(kept, 2);  // c0 -> c1 -> c2 (not the model's output)
  const Tensor x = random_tensor({1, 3, 48, 48}, 6);
  auto ref = Session(m, {1, false}).run({{"x", x}});
  for (int threads : {1, 2}) {
    SessionOptions so{threads, true};
    so.sparse = SparseMode::Always;
    auto got = Session(m, so).run({{"x", x}});
    EXPECT_LT(normalized_error(got.begin()->second, ref.begin()->second), 1e-5) << threads << " threads";
  }
}

// A conv on the direct kernel reads an NCHW model input as it is (Plan::read_nchw_inputs): no
// reorder to NHWC in front of it, and the reference kernels' output, at batch 2 on 1 and 2
// threads; with oneDNN preferred, the reorder is there. With --planes nhwc the reorder stays.
TEST(ReadNchwInputs, DirectStemReadsTheModelInput) {
  const Model m = thin_stage();
  const Tensor x = random_tensor({2, 3, 96, 96}, 12);
  auto ref = Session(m, {1, false}).run({{"x", x}});
  for (const char* prefer : {"direct", "onednn"}) {
    const PreferKernels p(prefer);
    const bool direct = std::string(prefer) == "direct";
    for (int threads : {1, 2}) {
      Session sess(m, {threads, true});
      const std::string plan = sess.inspect(false);
      EXPECT_EQ(plan.find("reads NCHW") != std::string::npos, direct) << prefer << " preferred\n" << plan;
      EXPECT_EQ(plan.find("x__to_nhwc") == std::string::npos, direct) << prefer << " preferred\n" << plan;
      auto got = sess.run({{"x", x}});
      EXPECT_LT(normalized_error(got.begin()->second, ref.begin()->second), 1e-5)
          << threads << " threads, " << prefer << " preferred";
    }
  }
  SessionOptions nhwc{1, true};
  nhwc.resident_planes = false;
  const PreferKernels p("direct");
  const std::string plan = Session(m, nhwc).inspect(false);
  EXPECT_NE(plan.find("x__to_nhwc"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("reads NCHW"), std::string::npos) << plan;
}

// AveragePool from NHWC into planes (narrow and wide rows; count_include_pad either way) against
// the same pool writing NHWC: 2x2 stride 2 and 3x3 stride 1 pad 1, 3, 16 and 37 channels, batch 2.
TEST(ResidentPlanes, NhwcAveragePoolWritesPlanes) {
  int runs = 0;
  for (int64_t c : {3, 16, 37})
    for (const auto& [k, st, pad] : {std::tuple{2, 2, 0}, {3, 1, 1}})
      for (int64_t include : {0, 1}) {
        OnnxBuilder b;
        b.input("x", {2, c, 30, 28});
        auto& pool = b.node("AveragePool", {"x"}, {"y"});
        OnnxBuilder::attr_ints(pool, "kernel_shape", {k, k});
        OnnxBuilder::attr_ints(pool, "strides", {st, st});
        OnnxBuilder::attr_ints(pool, "pads", {pad, pad, pad, pad});
        OnnxBuilder::attr_int(pool, "count_include_pad", include);
        b.output("y");
        Model m = b.load();
        runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
        graph::Graph g = plan.graph();
        graph::Node& node = g.node(node_id(g, last_node(g, graph::OpType::AveragePool)));
        node.layout = g.value(node.inputs[0]).layout = g.value(node.outputs[0]).layout = graph::Layout::NHWC;
        const Shape xs = g.value(node.inputs[0]).shape, ys = g.value(node.outputs[0]).shape;
        const std::vector<float> x = normal(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]), 6);
        auto nhwc = ops::make_nhwc_pool(g, node);
        ASSERT_NE(nhwc, nullptr);
        std::vector<float> want(static_cast<size_t>(ys[0] * ys[1] * ys[2] * ys[3]), NAN);
        run_kernel(*nhwc, g, node, x.data(), nullptr, want.data());
        for (bool wide : {false, true}) {
          g.value(node.outputs[0]).layout = graph::Layout::Planar;
          g.value(node.outputs[0]).wide_rows = wide;
          auto to_planes = ops::make_nhwc_pool(g, node);
          ASSERT_NE(to_planes, nullptr);
          std::vector<float> yp(static_cast<size_t>(ys[0] * ys[1] * plane(ys[2], ys[3], wide)), NAN);
          run_kernel(*to_planes, g, node, x.data(), nullptr, yp.data());
          int dirty = 0;
          const std::vector<float> got = from_resident(yp, ys[0], ys[1], ys[2], ys[3], &dirty, wide);
          EXPECT_EQ(dirty, 0);
          EXPECT_EQ(got, want) << c << " channels, k" << k << " wide " << wide;
          ++runs;
        }
      }
  EXPECT_EQ(runs, 24);
}

// A 1-channel NCHW input has NHWC's bytes: assign_layouts puts no reorder before it, so there is
// none to drop, and its convs keep whichever kernel they choose. (Such convs were taken for
// NCHW readers and forced onto the direct kernel, which refused a dilated, stride-3, unequal
// stride or 9x9 one with an internal error.)
TEST(ReadNchwInputs, OneChannelInputsKeepTheirKernels) {
  struct Case {
    int64_t k, sh, sw, dil;
  };
  for (const Case& c : {Case{3, 1, 1, 2}, Case{3, 3, 3, 1}, Case{3, 2, 1, 1}, Case{9, 1, 1, 1}, Case{3, 1, 1, 1}}) {
    OnnxBuilder b;
    b.input("x", {2, 1, 40, 36}).init_random("w", {20, 1, c.k, c.k}, 0.3f).init_random("b", {20});
    auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
    OnnxBuilder::attr_ints(conv, "strides", {c.sh, c.sw});
    OnnxBuilder::attr_ints(conv, "dilations", {c.dil, c.dil});
    b.node("Relu", {"y"}, {"z"});
    b.output("z");
    const Model m = b.load();
    const Tensor x = random_tensor({2, 1, 40, 36}, 4);
    const std::string what = "k " + std::to_string(c.k) + " strides " + std::to_string(c.sh) + "x" +
                             std::to_string(c.sw) + " dilation " + std::to_string(c.dil);
    for (int threads : {1, 2}) {
      Session sess(m, {threads, true});
      const std::string plan = sess.inspect(false);
      EXPECT_EQ(plan.find("reads NCHW"), std::string::npos) << what << "\n" << plan;
      EXPECT_EQ(plan.find("x__to_nhwc"), std::string::npos) << what << "\n" << plan;
      EXPECT_NE(plan.find("read_nchw_inputs=0"), std::string::npos) << what << "\n" << plan;
      EXPECT_LT(normalized_error(sess.run({{"x", x}})["z"], Session(m, {1, false}).run({{"x", x}})["z"]), 1e-5)
          << what << ", " << threads << " threads";
    }
  }
}

}  // namespace
}  // namespace sluice::testing
