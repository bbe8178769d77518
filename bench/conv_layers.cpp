// Conv kernels on the layer shapes of ResNet-18, VGG-16 and MobileNetV2 (batch 1):
// Sluice's conv kernel (as a plan step runs it, NHWC in and out) next to oneDNN's own
// primitive alone on the same shape, so the ratio shows what Sluice's wrapping costs.
//   build/bench/sluice_bench_conv --benchmark_filter=resnet18 --benchmark_repetitions=5
//   build/bench/sluice_bench_conv --benchmark_filter='(sluice|sparse[0-9]+[as]?)/resnet18/.*k3_s1'  (sparse crossover; sparseNNa: the variant with aligned copies, sparseNNs: the split variant, sparseNNg: the gathered one for small maps)
//   build/bench/sluice_bench_conv --benchmark_filter='half_|gather_'  (gated layers at density 1/2; weight gathers)
//   build/bench/sluice_bench_conv --benchmark_filter='shift_'  (shift + 1x1 kernels vs the 1x1 conv alone;
//   built with SLUICE_NATIVE's -march, like the kernels, for shift_plain's vectors)
//   (OMP_NUM_THREADS=1 or 2 sets the threads)
#include <benchmark/benchmark.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <cstring>
#include <random>

#include "graph/graph.h"
#include "ops/common/onednn.h"
#include "ops/conv/planar.h"
#include "ops/gated/direct_conv.h"
#include "ops/gated/weight_gather.h"
#include "ops/shift/shift.h"
#include "ops/sparse/sparse.h"
#include "ops/kernel.h"

namespace {

struct Layer {
  const char* model;
  int64_t c, h, m, k, stride, group;
};

// Distinct conv shapes of each model (input C, H=W, output M, kernel, stride, groups).
const Layer kLayers[] = {
    {"resnet18", 3, 224, 64, 7, 2, 1},    {"resnet18", 64, 56, 64, 3, 1, 1},   {"resnet18", 64, 56, 128, 3, 2, 1},
    {"resnet18", 128, 28, 128, 3, 1, 1},  {"resnet18", 128, 28, 256, 3, 2, 1}, {"resnet18", 256, 14, 256, 3, 1, 1},
    {"resnet18", 256, 14, 512, 3, 2, 1},  {"resnet18", 512, 7, 512, 3, 1, 1},  {"resnet18", 64, 56, 128, 1, 2, 1},
    {"vgg16", 3, 224, 64, 3, 1, 1},       {"vgg16", 64, 224, 64, 3, 1, 1},     {"vgg16", 64, 112, 128, 3, 1, 1},
    {"vgg16", 128, 112, 128, 3, 1, 1},    {"vgg16", 128, 56, 256, 3, 1, 1},    {"vgg16", 256, 56, 256, 3, 1, 1},
    {"vgg16", 256, 28, 512, 3, 1, 1},     {"vgg16", 512, 28, 512, 3, 1, 1},    {"vgg16", 512, 14, 512, 3, 1, 1},
    {"mobilenetv2", 32, 112, 32, 3, 1, 32}, {"mobilenetv2", 96, 112, 96, 3, 2, 96},
    {"mobilenetv2", 144, 56, 144, 3, 1, 144}, {"mobilenetv2", 192, 28, 192, 3, 1, 192},
    {"mobilenetv2", 384, 14, 384, 3, 1, 384}, {"mobilenetv2", 960, 7, 960, 3, 1, 960},
    {"mobilenetv2", 32, 112, 16, 1, 1, 1},  {"mobilenetv2", 16, 112, 96, 1, 1, 1},
    {"mobilenetv2", 144, 56, 24, 1, 1, 1},  {"mobilenetv2", 24, 56, 144, 1, 1, 1},
    {"mobilenetv2", 384, 14, 64, 1, 1, 1},  {"mobilenetv2", 960, 7, 320, 1, 1, 1}, {"mobilenetv2", 320, 7, 1280, 1, 1, 1},
    // ResNet-18 slimmed at 70% (bench/compare_pruned.py): the thin convs static pruning leaves.
    {"resnet18_p70", 3, 224, 20, 7, 2, 1}, {"resnet18_p70", 20, 56, 20, 3, 1, 1}, {"resnet18_p70", 20, 56, 39, 3, 2, 1},
    {"resnet18_p70", 39, 28, 39, 3, 1, 1}, {"resnet18_p70", 77, 14, 77, 3, 1, 1}, {"resnet18_p70", 154, 7, 154, 3, 1, 1},
    // VGG-16 slimmed at 70%: its first convs, thin channels on large maps.
    {"vgg16_p70", 3, 224, 19, 3, 1, 1}, {"vgg16_p70", 19, 224, 19, 3, 1, 1}, {"vgg16_p70", 19, 112, 38, 3, 1, 1},
    {"vgg16_p70", 38, 112, 38, 3, 1, 1},
};

std::vector<float> random_data(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  std::mt19937 rng(1);
  std::normal_distribution<float> d;
  for (auto& x : v) x = d(rng);
  return v;
}

int64_t out_size(const Layer& l) { return (l.h + 2 * (l.k / 2) - l.k) / l.stride + 1; }

void set_counters(benchmark::State& st, const Layer& l) {
  const int64_t o = out_size(l);
  const double flops = 2.0 * l.m * (l.c / l.group) * l.k * l.k * o * o;
  st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

// A graph holding one NHWC Conv node: x [1, c, h, h] -> y [1, m, o, o], weights w of
// shape ws, params p; kernels are made from it as a plan would make them.
struct OneConv {
  sluice::graph::Graph g;
  sluice::graph::NodeId id = -1;
  sluice::Shape xs, ys;
};
OneConv one_conv(int64_t c, int64_t h, int64_t m, int64_t o, const sluice::Shape& ws, const std::vector<float>& w,
                 const sluice::graph::ConvParams& p) {
  using namespace sluice;
  OneConv r;
  r.g.model_name = "bench";
  r.xs = {1, c, h, h}, r.ys = {1, m, o, o};
  graph::Value x, wv, y;
  x.name = "x", x.dtype = DType::Float32, x.shape = r.xs, x.shape_known = true;
  wv.name = "w", wv.dtype = DType::Float32, wv.shape = ws, wv.shape_known = true;
  wv.constant = Tensor::from_vector<float>(ws, w);
  y.name = "y", y.dtype = DType::Float32, y.shape = r.ys, y.shape_known = true;
  graph::Node n;
  n.op = graph::OpType::Conv;
  n.name = "conv";
  n.inputs = {r.g.add_value(x), r.g.add_value(wv)};
  n.outputs = {r.g.add_value(y)};
  n.params = p;
  n.layout = graph::Layout::NHWC;
  r.id = r.g.add_node(n);
  return r;
}

// Times kernel->run on random data of the node's shapes, with scratch 64-byte aligned as plans give it.
// With resident planes (graph::Layout::Planar) the buffers hold the planes.
void run_timed(benchmark::State& st, const sluice::ops::Kernel& kernel, const OneConv& cv) {
  using namespace sluice;
  auto numel = [&](const Shape& s, graph::ValueId v) {
    return cv.g.value(v).layout == graph::Layout::Planar ? ops::planar::resident_floats(s) : s[0] * s[1] * s[2] * s[3];
  };
  const graph::Node& n = cv.g.nodes[cv.id];
  std::vector<float> in = random_data(numel(cv.xs, n.inputs[0])), out(static_cast<size_t>(numel(cv.ys, n.outputs[0])));
  std::vector<std::byte> scratch(kernel.scratch_bytes() + 64);
  ops::TensorView iv{DType::Float32, cv.xs, in.data()}, ov{DType::Float32, cv.ys, out.data()};
  ops::TensorView ins[] = {iv, {}}, outs[] = {ov};
  void* sp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64);
  for (auto _ : st) kernel.run({std::span<const ops::TensorView>(ins, 1), outs, sp});
  st.SetLabel(kernel.name());
}

// Sluice's kernel, created the way a plan creates it (Conv + ReLU epilogue, NHWC).
// zeros > 0: that fraction of the weights set to zero at random, and the sparse direct kernel
// (ops/sparse, read as `variant` says) instead of the
// kernel a plan would pick.
// zeros < 0: the dense direct planar kernel (ops/conv/direct.cpp), which a plan times against oneDNN;
// -2: the same with its input and output in resident planes (as between two convs on it).
void BM_SluiceConv(benchmark::State& st, Layer l, double zeros, sluice::ops::SparseVariant variant) {
  using namespace sluice;
  std::vector<float> wd = random_data(l.m * (l.c / l.group) * l.k * l.k);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u;
  for (auto& v : wd)
    if (u(rng) < zeros) v = 0.f;
  graph::ConvParams p;
  p.kernel_shape = {l.k, l.k};
  p.strides = {l.stride, l.stride};
  p.dilations = {1, 1};
  p.pads = {l.k / 2, l.k / 2, l.k / 2, l.k / 2};
  p.group = l.group;
  p.activation.kind = graph::Activation::Relu;
  OneConv cv = one_conv(l.c, l.h, l.m, out_size(l), {l.m, l.c / l.group, l.k, l.k}, wd, p);
  if (zeros == -2)  // the direct conv between two others on it: input and output in resident planes
    for (graph::ValueId v : {cv.g.nodes[cv.id].inputs[0], cv.g.nodes[cv.id].outputs[0]})
      cv.g.value(v).layout = graph::Layout::Planar;
  auto kernel = zeros > 0   ? ops::make_sparse_conv(cv.g, cv.g.nodes[cv.id], variant)
                : zeros < 0 ? ops::make_direct_conv(cv.g, cv.g.nodes[cv.id])
                            : ops::make_kernel(cv.g, cv.id, {true});
  if (!kernel) {
    st.SkipWithError("this kernel does not apply to this shape");
    return;
  }
  run_timed(st, *kernel, cv);
  set_counters(st, l);
}

// oneDNN alone: the same primitive configuration, executed directly.
void BM_OneDnnAlone(benchmark::State& st, Layer l, bool any_layout) {
  using namespace dnnl;
  using tag = memory::format_tag;
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const int64_t o = out_size(l);
  memory::dims w_dims = l.group > 1 ? memory::dims{l.group, l.m / l.group, l.c / l.group, l.k, l.k}
                                    : memory::dims{l.m, l.c, l.k, l.k};
  const tag act = any_layout ? tag::any : tag::nhwc;
  memory::desc src({1, l.c, l.h, l.h}, memory::data_type::f32, act);
  memory::desc dst({1, l.m, o, o}, memory::data_type::f32, act);
  memory::desc wany(w_dims, memory::data_type::f32, tag::any);
  convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wany, dst,
                              {l.stride, l.stride}, {l.k / 2, l.k / 2}, {l.k / 2, l.k / 2});
  post_ops po;
  po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(po);
  convolution_forward::primitive_desc pd(d, attr, eng);
  auto in = random_data(l.c * l.h * l.h);
  std::vector<float> out(static_cast<size_t>(l.m * o * o));
  in.resize(pd.src_desc().get_size() / sizeof(float) + 16);
  out.resize(pd.dst_desc().get_size() / sizeof(float) + 16);
  memory sm(pd.src_desc(), eng, in.data()), dm(pd.dst_desc(), eng, out.data()), wm(pd.weights_desc(), eng);
  convolution_forward conv(pd);
  for (auto _ : st) {
    conv.execute(s, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dm}});
    s.wait();
  }
  st.SetLabel(pd.impl_info_str());
  set_counters(st, l);
}

// The gated conv's direct kernel at density 1/2 (every other input and output channel
// active, model weights read in place), next to oneDNN on the compact half-size layer: what a
// gated layer would cost if oneDNN's packed weights came for free.
void BM_DirectHalf(benchmark::State& st, Layer l) {
  const int64_t o = out_size(l), ki = l.c / 2, ko = l.m / 2;
  sluice::ops::gated::DirectConvShape s{l.c, l.m, l.h, l.h, l.k, l.k, o, o, l.k / 2, l.k / 2, l.stride};
  auto x = random_data(l.h * l.h * ki);
  auto w = random_data(l.m * l.c * l.k * l.k);
  std::vector<float> bias(static_cast<size_t>(l.m), 0.5f), y(static_cast<size_t>(o * o * ko));
  std::vector<int32_t> in_pos(static_cast<size_t>(ki)), in_ch(static_cast<size_t>(ki)), out_ch(static_cast<size_t>(ko));
  for (int64_t j = 0; j < ki; ++j) in_pos[j] = static_cast<int32_t>(j), in_ch[j] = static_cast<int32_t>(2 * j);
  for (int64_t j = 0; j < ko; ++j) out_ch[j] = static_cast<int32_t>(2 * j + 1);
  std::vector<char> scratch(sluice::ops::gated::direct_conv_scratch(s));
  for (auto _ : st)
    sluice::ops::gated::direct_conv(s, x.data(), ki, in_pos.data(), in_ch.data(), ki, w.data(), bias.data(),
                                    out_ch.data(), ko, y.data(), scratch.data());
  Layer half = l;
  half.c = ki, half.m = ko;
  set_counters(st, half);
}

// The gated conv's per-input weights at density 1/2 (every other input and output channel),
// for the compact oneDNN primitive: gathered in one pass into its layout (ops/gated/
// weight_gather.h), or gathered plain and then reordered by oneDNN (the old way). A fresh
// copy of the model's weights per iteration would not fit the caches of a whole model
// either: the weights here are spread over a buffer 8x the layer (a cold read every time).
void BM_GatherWeights(benchmark::State& st, Layer l, bool one_pass) {
  using namespace dnnl;
  using tag = memory::format_tag;
  const int64_t ki = l.c / 2, ko = l.m / 2, taps = l.k * l.k, copies = 8;
  const int64_t wsize = l.m * l.c * taps;
  auto w = random_data(wsize * copies);
  std::vector<int32_t> in_ch(static_cast<size_t>(ki)), out_ch(static_cast<size_t>(ko));
  for (int64_t j = 0; j < ki; ++j) in_ch[j] = static_cast<int32_t>(2 * j);
  for (int64_t j = 0; j < ko; ++j) out_ch[j] = static_cast<int32_t>(2 * j + 1);
  const int64_t o = out_size(l);
  memory::desc src({1, ki, l.h, l.h}, memory::data_type::f32, tag::nhwc), dst({1, ko, o, o}, memory::data_type::f32, tag::nhwc);
  memory::desc wany({ko, ki, l.k, l.k}, memory::data_type::f32, tag::any), wplain({ko, ki, l.k, l.k}, memory::data_type::f32, tag::oihw);
  convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wany, dst,
                              {l.stride, l.stride}, {l.k / 2, l.k / 2}, {l.k / 2, l.k / 2});
  convolution_forward::primitive_desc pd(d, sluice::ops::onednn::engine());
  const auto layout = sluice::ops::onednn::blocked_offsets(pd.weights_desc());
  memory packed(pd.weights_desc(), sluice::ops::onednn::engine());
  std::vector<float> plain(static_cast<size_t>(ko * ki * taps));
  memory plain_m(wplain, sluice::ops::onednn::engine(), plain.data());
  reorder ro(plain_m, packed);
  stream& s = sluice::ops::onednn::thread_stream();
  int64_t copy = 0;
  for (auto _ : st) {
    const float* W = w.data() + (copy++ % copies) * wsize;
    if (one_pass) {
      sluice::ops::gated::gather_weights(W, l.c, l.k, l.k, out_ch.data(), ko, in_ch.data(), ki, layout,
                                         static_cast<float*>(packed.get_data_handle()));
    } else {
#pragma omp parallel for if (ko * ki * taps > 65536)
      for (int64_t jo = 0; jo < ko; ++jo)
        for (int64_t ji = 0; ji < ki; ++ji)
          std::memcpy(plain.data() + (jo * ki + ji) * taps, W + (out_ch[jo] * l.c + in_ch[ji]) * taps, taps * sizeof(float));
      ro.execute(s, plain_m, packed);
      s.wait();
    }
    benchmark::ClobberMemory();
  }
  st.SetLabel(one_pass ? "one pass" : "plain + reorder");
}

// Shift + 1x1 conv (ShiftNet-like: C channels in 9 shift groups, then C -> M), the two fused
// kernels (ops/shift/shift.h; offset: the shift as a read offset, tiled: oneDNN on shifted row
// tiles) next to oneDNN's 1x1 conv alone (sluice/ on the unshifted node): the fused / alone
// ratio at kernel level. Shapes as bench/compare_shift.py.
// A plain NHWC 1x1 conv to 64 channels with the offset-read kernel's register block (6 pixels
// x 4 vectors) and no shift, border or epilogue: what that block reaches when nothing else is
// in the loop (shift_plain rows).
typedef float v16x __attribute__((vector_size(64), aligned(4)));
__attribute__((noinline)) void plain_layer(const float* w, const float* x, long HW, long K, float* y) {
  for (long p0 = 0; p0 + 6 <= HW; p0 += 6) {
    const float* xp[6];
    for (int i = 0; i < 6; ++i) xp[i] = x + (p0 + i) * K;
    v16x acc[6][4] = {};
    for (long q = 0; q < K; ++q) {
      v16x wv[4];
      for (int v = 0; v < 4; ++v) wv[v] = *reinterpret_cast<const v16x*>(w + (q * 4 + v) * 16);
      for (int i = 0; i < 6; ++i) {
        const float xv = xp[i][q];
        for (int v = 0; v < 4; ++v) acc[i][v] += wv[v] * xv;
      }
    }
    for (int i = 0; i < 6; ++i)
      for (int v = 0; v < 4; ++v) *reinterpret_cast<v16x*>(y + (p0 + i) * 64 + v * 16) = acc[i][v];
  }
}
void BM_ShiftConv(benchmark::State& st, int64_t h, int64_t c, int64_t m, int variant) {
  using namespace sluice;
  if (variant == 3) {
    auto w = random_data(c * 64), x = random_data(c * h * h);
    std::vector<float> y(static_cast<size_t>(64 * h * h) + 64);
    for (auto _ : st) plain_layer(w.data(), x.data(), h * h, c, y.data());
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * 64 * c * (h * h / 6 * 6), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
    return;
  }
  graph::ConvParams p;
  p.kernel_shape = {1, 1}, p.strides = {1, 1}, p.dilations = {1, 1}, p.pads = {0, 0, 0, 0};
  if (variant > 0)  // channel groups of C/9 for the 9 shifts of a 3x3 neighbourhood
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t grp = std::min<int64_t>(8, ch * 9 / c);
      p.pre_shift.src.push_back(static_cast<int32_t>(ch));
      p.pre_shift.dy.push_back(static_cast<int32_t>(grp / 3 - 1));
      p.pre_shift.dx.push_back(static_cast<int32_t>(grp % 3 - 1));
    }
  const OneConv cv = one_conv(c, h, m, h, {m, c, 1, 1}, random_data(m * c), p);
  const graph::Node& node = cv.g.nodes[cv.id];
  std::unique_ptr<ops::Kernel> kernel = variant == 0   ? ops::make_kernel(cv.g, cv.id, {true})
                                        : variant == 1 ? ops::make_shift_conv_offset(cv.g, node)
                                                       : ops::make_shift_conv_tiled(cv.g, node);
  if (!kernel) {
    st.SkipWithError("not available in this build");
    return;
  }
  run_timed(st, *kernel, cv);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * c * h * h, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

int register_all() {
  using Variant = sluice::ops::SparseVariant;
  for (auto [h, c, m] : {std::array<int64_t, 3>{56, 96, 64}, {28, 192, 128}, {14, 384, 256}}) {
    const std::string name = "/h" + std::to_string(h) + "_c" + std::to_string(c) + "_m" + std::to_string(m);
    benchmark::RegisterBenchmark(("shift_alone" + name).c_str(), BM_ShiftConv, h, c, m, 0)->UseRealTime();
    benchmark::RegisterBenchmark(("shift_offset" + name).c_str(), BM_ShiftConv, h, c, m, 1)->UseRealTime();
    benchmark::RegisterBenchmark(("shift_tiled" + name).c_str(), BM_ShiftConv, h, c, m, 2)->UseRealTime();
#ifdef __AVX512F__  // the block is written for 16-lane vectors
    if (m == 64) benchmark::RegisterBenchmark(("shift_plain" + name).c_str(), BM_ShiftConv, h, c, m, 3)->UseRealTime();
#endif
  }
  for (const Layer& l : kLayers) {
    std::string name = std::string(l.model) + "/c" + std::to_string(l.c) + "_h" + std::to_string(l.h) + "_m" +
                       std::to_string(l.m) + "_k" + std::to_string(l.k) + "_s" + std::to_string(l.stride) +
                       (l.group > 1 ? "_dw" : "");
    benchmark::RegisterBenchmark(("sluice/" + name).c_str(), BM_SluiceConv, l, 0.0, Variant::Plain)->UseRealTime();
    benchmark::RegisterBenchmark(("onednn/" + name).c_str(), BM_OneDnnAlone, l, false)->UseRealTime();
    if (l.group == 1 && l.k > 1)
      benchmark::RegisterBenchmark(("direct/" + name).c_str(), BM_SluiceConv, l, -1.0, Variant::Plain)->UseRealTime();
    if (l.group == 1 && l.k > 1 && std::string(l.model).find("_p70") != std::string::npos)
      benchmark::RegisterBenchmark(("resident/" + name).c_str(), BM_SluiceConv, l, -2.0, Variant::Plain)->UseRealTime();
    // oneDNN's preferred activation layout (blocked nChw8c on AVX2), with the reorders to it left out.
    benchmark::RegisterBenchmark(("onednn_any/" + name).c_str(), BM_OneDnnAlone, l, true)->UseRealTime();
    // The sparse kernel at uniform random sparsities (GFLOP/s counts the dense FLOPs, so the
    // rows compare directly with sluice/ on the same layer).
    // Also the 7x7 stride-2 stem, which global magnitude pruning leaves sparse too.
    if (l.group == 1 && ((l.k == 3 && l.c >= 64 && (l.stride == 1 || l.h <= 14)) || l.k == 7))
      for (int z : {50, 60, 70, 80, 90, 95})
        for (auto [variant, tag] : {std::pair{Variant::Plain, "/"}, std::pair{Variant::Copies, "a/"},
                                    std::pair{Variant::Split, "s/"}, std::pair{Variant::Gather, "g/"}})
          benchmark::RegisterBenchmark(("sparse" + std::to_string(z) + tag + name).c_str(), BM_SluiceConv, l,
                                       z / 100.0, variant)
              ->UseRealTime();
    if (l.group == 1 && l.k == 3 && l.c >= 64) {
      Layer half = l;
      half.c /= 2, half.m /= 2;
      benchmark::RegisterBenchmark(("half_direct/" + name).c_str(), BM_DirectHalf, l)->UseRealTime();
      benchmark::RegisterBenchmark(("half_onednn/" + name).c_str(), BM_OneDnnAlone, half, false)->UseRealTime();
      benchmark::RegisterBenchmark(("gather_packed/" + name).c_str(), BM_GatherWeights, l, true)->UseRealTime();
      benchmark::RegisterBenchmark(("gather_reorder/" + name).c_str(), BM_GatherWeights, l, false)->UseRealTime();
    }
  }
  return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
