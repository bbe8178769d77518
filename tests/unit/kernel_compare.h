// Helpers for tests that run two kernels of one node of an optimised plan on the same data.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "ops/common/measure.h"
#include "ops/kernel.h"
#include "runtime/plan.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {

// While alive, every measured choice goes to the kernels whose name starts with `prefix`
// (ops::prefer_kernels_for_testing): for tests of what such a choice leads to, or that need
// the same choice in every plan they make.
struct PreferKernels {
  explicit PreferKernels(const char* prefix) { ops::prefer_kernels_for_testing(prefix); }
  ~PreferKernels() { ops::prefer_kernels_for_testing(""); }
};

// Options for a plan whose graph a test takes nodes from to run kernels on NHWC data: no
// resident planes and no conv reading an NCHW input in place (Plan::read_nchw_inputs).
inline SessionOptions nhwc_plan_options(bool optimize = true) {
  SessionOptions o{1, optimize};
  o.resident_planes = false;
  return o;
}

// The graph's last node of op `op`, or nullptr.
inline const graph::Node* last_node(const graph::Graph& g, graph::OpType op) {
  const graph::Node* found = nullptr;
  for (const auto& n : g.nodes)
    if (n.op == op) found = &n;
  return found;
}

// Max |a - b| over output 0 of kernels a and b, each run on the same seeded random inputs of
// node n's shapes: once with separate buffers, once with each kernel's in-place input (a fused
// sum) laid over its output as plans may do. Infinity if either output has a NaN (outputs start
// as NaN, so an output element a kernel never writes counts).
// in_activity: input 0's channel activity (a gated conv's input), given to both.
// A copy of g in which input `input` of node n (a constant) has element i set to v. The constant
// gets a buffer of its own: Tensor copies share their data, and writing through a copied graph
// would change g's (and the model's) weights too.
inline graph::Graph with_constant_element(const graph::Graph& g, const graph::Node& n, size_t input, int64_t i, float v) {
  graph::Graph gg = g;
  Tensor& t = gg.value(n.inputs[input]).constant;
  t = Tensor::copy_of(t.dtype(), t.shape(), t.raw());
  t.data<float>()[i] = v;
  return gg;
}

inline double max_kernel_diff(const ops::Kernel& a, const ops::Kernel& b, const graph::Graph& g,
                              const graph::Node& n, uint32_t seed, const ops::ChannelActivity* in_activity = nullptr) {
  double worst = 0;
  for (bool in_place : {false, true}) {
    ops::RandomNodeData da(g, n, seed), db(g, n, seed);
    if (in_place) da.share_in_place_input(a), db.share_in_place_input(b);
    ops::KernelArgs aa = da.args(a), ab = db.args(b);
    aa.in_activity = ab.in_activity = in_activity;
    a.run(aa);
    b.run(ab);
    for (size_t i = 0; i < da.output().size(); ++i) {
      const double d = std::fabs(static_cast<double>(da.output()[i]) - db.output()[i]);
      if (std::isnan(d)) return std::numeric_limits<double>::infinity();
      worst = std::max(worst, d);
    }
  }
  return worst;
}

// y -> [Add input "r" of r_shape] -> Relu, or y -> LeakyRelu(alpha); the result is output "z".
inline void add_epilogue(OnnxBuilder& b, const std::string& y, const Shape& r_shape, bool residual, float alpha) {
  if (residual) {
    b.input("r", r_shape);
    b.node("Add", {y, "r"}, {"t"});
    b.node("Relu", {"t"}, {"z"});
  } else {
    auto& lr = b.node("LeakyRelu", {y}, {"z"});
    OnnxBuilder::attr_float(lr, "alpha", alpha);
  }
  b.output("z");
}

// A conv case: batch, channels in and out, square map, square kernel ("same" pads), stride.
struct DenseCase {
  int64_t n, c, m, h, k, stride;
  bool residual;
  int64_t group = 1;
};

// x -> Conv (bias, "same" pads) -> add_epilogue: the conv of case t, loaded.
inline Model single_conv(const DenseCase& t) {
  OnnxBuilder b;
  const int64_t o = (t.h + 2 * (t.k / 2) - t.k) / t.stride + 1;
  b.input("x", {t.n, t.c, t.h, t.h}).init_random("w", {t.m, t.c / t.group, t.k, t.k}, 0.3f).init_random("b", {t.m});
  auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
  OnnxBuilder::attr_ints(conv, "strides", {t.stride, t.stride});
  OnnxBuilder::attr_ints(conv, "pads", {t.k / 2, t.k / 2, t.k / 2, t.k / 2});
  OnnxBuilder::attr_int(conv, "group", t.group);
  add_epilogue(b, "y", {t.n, t.m, o, o}, t.residual, 0.2f);
  return b.load();
}

// Case t's conv (single_conv) planned for NHWC kernels (nhwc_plan_options): the plan's graph
// and its conv node (null if the plan has none), for tests that build kernels of that node.
struct PlannedConv {
  explicit PlannedConv(const DenseCase& t)
      : model(single_conv(t)),
        plan(*model.graph(), {}, nhwc_plan_options()),
        node(last_node(plan.graph(), graph::OpType::Conv)) {}
  const graph::Graph& graph() const { return plan.graph(); }
  Model model;
  runtime::Plan plan;
  const graph::Node* node;
};

}  // namespace sluice::testing
