// FBS gate recognition and the gated conv kernel: which patterns become one
// SluiceGatedConv (and which must not), the numbers against the generic ops run by
// the reference plan, and the executed MACs and active channels the stats report.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <thread>

#include "ops/gated/gate.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {
namespace {

// Winners/Losers: ScatterElements of TopK; Threshold: Greater(g, ReduceMin(TopK values));
// WinnersMask: g * ScatterElements(zeros, TopK indices, ones); ThresholdSliceGe: Cast(GreaterOrEqual(g,
// TopK values[:, K-1:K])); ThresholdWhereGather: Where(LessOrEqual(values[:, -1] unsqueezed, g), g, 0);
// ThresholdLess: Less(ReduceMin(values), g) times g; ThresholdEarlierEntry: entry k-1 of TopK(g, k+1)
// values (still the k-th largest); ThresholdSortedAll: entry k-1 of TopK(g, M) (torch.sort(g,
// descending) exports so); IndexPutValues / IndexPutMask: pi[arange(N)[:, None], i] = v, or
// g * (ones put there), as ScatterND at (n, i[n, j]) pairs; IndexPutRowsReversed: the values put
// in row N-1-n (a look-alike: sample n's winners land in another sample); ThresholdMeanOfTopK: g >= the mean of TopK(g, k) values (a look-alike:
// no k-th largest anywhere).
enum class Form { Winners, Losers, Threshold, WinnersMask, ThresholdSliceGe, ThresholdWhereGather, ThresholdLess,
                  ThresholdEarlierEntry, ThresholdSortedAll, ThresholdSortedAscending, ThresholdKthValue,
                  ThresholdMeanOfTopK, IndexPutValues, IndexPutMask,
                  IndexPutRowsReversed, WinnersOneHotAxis1 };
// SumDiv: ReduceSum over H, W / (H W); L1Div: ReduceL1 over H, W / (H W) (the mean of |x|);
// WholeMapAvgPool: AveragePool with kernel H x W (F.avg_pool2d(x, x.shape[2:])).
// GlobalMax / ReduceMax / WholeMapMaxPool / ReduceL2: the maximum or L2 norm over H, W instead of the mean.
// ChannelLast: the model's input is [N, H, W, C], the conv reads it through Transpose(0, 3, 1,
// 2) and the gate averages the input over axes 1 and 2 (tf2onnx's form). ChannelLastInside:
// the same of an NCHW input transposed to NHWC and back (the pair folds before the gate is
// looked for).
enum class Pool { Gap, ReduceMean, AbsReduceMean, SumDiv, L1Div, WholeMapAvgPool, GlobalMax, ReduceMax, WholeMapMaxPool,
                  ReduceL2, ScaledMean, SqrtSumSquares, ChannelLast, ChannelLastInside };
// MatMulSub: s W - b; SubMatMul: b - s W; Conv1x1: on the [N, C, 1, 1] pool, then Flatten.
enum class Fc { Gemm, MatMulAdd, MatMulSub, SubMatMul, Conv1x1 };
// ReshapeC11: pi.view(-1, 1, 1), [M, 1, 1] (a batch of one only).
enum class Bcast { Unsqueeze, Reshape, ReshapeC11 };
enum class Beta { None, Masked, Unmasked };

struct GateCase {
  Form form = Form::Winners;
  Pool pool = Pool::Gap;
  Fc fc = Fc::Gemm;
  Bcast bcast = Bcast::Unsqueeze;
  Beta beta = Beta::Masked;
  bool relu = true;
  bool relu6 = false;  // Clip(0, 6) after the gate instead
  int64_t n = 2, c = 6, m = 8, hw = 7, k = 4;
  bool tied_gate = false;  // Wg = 0 and equal biases: every g ties
  int64_t stride = 1;      // the conv's
  bool relu_first = false;  // relu(conv) * pi (no beta, no Relu after): as relu(conv * pi), pi >= 0
  bool not_less = false;    // ThresholdSliceGe written Not(Less(g, t)), as opset 11 exports g >= t
  const char* act = "Relu";  // g = act(...): Relu, Sigmoid, LeakyRelu, Clip (relu6), HardSigmoid, Softplus, Elu, Tanh, Abs, or "" (none)
  float pool_scale = 0.5f;  // Pool::ScaledMean's
  bool hidden_layer = false;  // a Linear + Relu between the pool and the predictor
  float bg_offset = 1.5f;    // the predictor's biases are N(offset, 0.3): every g > 0 at the default
  bool masked_fill = false;  // ThresholdWhereGather as g.masked_fill(t > g, 0): Where(t > g, 0, g)
  bool beta_flat = false;    // masked beta as (beta * (pi > 0))[:, :, None, None]: the product on [N, M]
  bool abs_first = false;    // the pool reads Abs(x) (any Pool but AbsReduceMean, which has it already)
  bool beta_scrambled = false;  // a look-alike: beta [M, 1, 1] times the mask reshaped [M, N, 1], then [N, M, 1, 1]
  const char* reduction = nullptr;  // the scatter (Winners, Losers, IndexPut*) with this reduction (opset 16)
  int64_t group = 1;  // the conv's: c = m = group is depthwise
  // A hard 0/1 mask, no g multiplier: ones scattered at the winners (Winners, IndexPutMask
  // without the Mul), zeros at the losers into ones (Losers), the threshold test cast (the
  // threshold forms), or Where(test, 1, 0) / masked_fill of ones (ThresholdWhereGather).
  bool hard = false;
  // The selection applied as Where(pi4 > 0, conv, 0) instead of Mul: 1 where kept and g > 0.
  bool where_apply = false;
};

// Appends one gated conv reading `x` (C channels) and writing `y` (M channels); names
// are prefixed with `p` so several gates fit in one graph.
void add_gate(OnnxBuilder& b, const GateCase& gc, const std::string& p, const std::string& x, const std::string& y,
              int64_t c) {
  const int64_t m = gc.m, n = gc.n;
  b.init_random(p + "w", {m, c / gc.group, 3, 3}, 0.3f).init_random(p + "cb", {m}, 0.1f);
  auto& conv = b.node("Conv", {x, p + "w", p + "cb"}, {p + "conv"}, p + "Conv");
  OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
  if (gc.group != 1) OnnxBuilder::attr_int(conv, "group", gc.group);
  if (gc.stride != 1) OnnxBuilder::attr_ints(conv, "strides", {gc.stride, gc.stride});
  // Saliency.
  std::string pooled;
  std::string src = gc.pool == Pool::ChannelLast ? "x" : gc.pool == Pool::ChannelLastInside ? "x_nhwc" : x;  // (gate_model's)
  if (gc.pool == Pool::AbsReduceMean || gc.abs_first) {
    b.node("Abs", {src}, {p + "abs"});
    src = p + "abs";
  }
  if (gc.fc == Fc::Conv1x1) {
    b.node("GlobalAveragePool", {src}, {p + "s4"});
  } else if (gc.pool == Pool::Gap) {
    b.node("GlobalAveragePool", {src}, {p + "gap"});
    OnnxBuilder::attr_int(b.node("Flatten", {p + "gap"}, {p + "s"}), "axis", 1);
  } else if (gc.pool == Pool::L1Div) {
    b.init(p + "hw", {}, {static_cast<float>(gc.hw * gc.hw)});
    auto& l1 = b.node("ReduceL1", {src}, {p + "sum"});
    OnnxBuilder::attr_ints(l1, "axes", {2, 3});
    OnnxBuilder::attr_int(l1, "keepdims", 0);
    b.node("Div", {p + "sum", p + "hw"}, {p + "s"});
  } else if (gc.pool == Pool::GlobalMax) {
    b.node("GlobalMaxPool", {src}, {p + "gmp"});
    OnnxBuilder::attr_int(b.node("Flatten", {p + "gmp"}, {p + "s"}), "axis", 1);
  } else if (gc.pool == Pool::WholeMapMaxPool) {
    OnnxBuilder::attr_ints(b.node("MaxPool", {src}, {p + "mp"}), "kernel_shape", {gc.hw, gc.hw});
    OnnxBuilder::attr_int(b.node("Flatten", {p + "mp"}, {p + "s"}), "axis", 1);
  } else if (gc.pool == Pool::ReduceMax || gc.pool == Pool::ReduceL2) {
    auto& r = b.node(gc.pool == Pool::ReduceMax ? "ReduceMax" : "ReduceL2", {src}, {p + "s"});
    OnnxBuilder::attr_ints(r, "axes", {2, 3});
    OnnxBuilder::attr_int(r, "keepdims", 0);
  } else if (gc.pool == Pool::WholeMapAvgPool) {
    OnnxBuilder::attr_ints(b.node("AveragePool", {src}, {p + "ap"}), "kernel_shape", {gc.hw, gc.hw});
    OnnxBuilder::attr_int(b.node("Flatten", {p + "ap"}, {p + "s"}), "axis", 1);
  } else if (gc.pool == Pool::ScaledMean) {  // fc(mean(x) * pool_scale): x has negative values here
    b.init(p + "half", {}, {gc.pool_scale});
    auto& rm = b.node("ReduceMean", {src}, {p + "mean"});
    OnnxBuilder::attr_ints(rm, "axes", {2, 3});
    OnnxBuilder::attr_int(rm, "keepdims", 0);
    b.node("Mul", {p + "mean", p + "half"}, {p + "s"});
  } else if (gc.pool == Pool::SqrtSumSquares) {  // x.norm(dim=(2, 3)) as torch writes it
    b.init_i64(p + "sq_axes", {2}, {2, 3});
    b.node("Mul", {src, src}, {p + "sq"});
    OnnxBuilder::attr_int(b.node("ReduceSum", {p + "sq", p + "sq_axes"}, {p + "ss"}), "keepdims", 0);
    b.node("Sqrt", {p + "ss"}, {p + "s"});
  } else if (gc.pool == Pool::SumDiv) {
    b.init_i64(p + "hw_axes", {2}, {2, 3}).init(p + "hw", {}, {static_cast<float>(gc.hw * gc.hw)});
    OnnxBuilder::attr_int(b.node("ReduceSum", {src, p + "hw_axes"}, {p + "sum"}), "keepdims", 0);
    b.node("Div", {p + "sum", p + "hw"}, {p + "s"});
  } else {
    auto& rm = b.node("ReduceMean", {src}, {p + "s"});
    const bool last = gc.pool == Pool::ChannelLast || gc.pool == Pool::ChannelLastInside;
    OnnxBuilder::attr_ints(rm, "axes", last ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{2, 3});
    OnnxBuilder::attr_int(rm, "keepdims", 0);
  }
  // A hidden layer first (a two-layer predictor, which is not recognised): relu(s Wh^T).
  std::string s_in = p + "s";
  if (gc.hidden_layer) {
    b.init_random(p + "wh", {c, c}, 0.3f);
    OnnxBuilder::attr_int(b.node("Gemm", {p + "s", p + "wh"}, {p + "h0"}), "transB", 1);
    b.node("Relu", {p + "h0"}, {p + "sh"});
    s_in = p + "sh";
  }
  // Predictor; positive biases keep every g > 0 unless the case says otherwise.
  if (gc.tied_gate) {
    b.init(p + "wg", {m, c}, std::vector<float>(static_cast<size_t>(m * c), 0.f));
    b.init(p + "bg", {m}, std::vector<float>(static_cast<size_t>(m), 0.5f));
  } else {
    b.init_random(p + "wg", {m, c}, 0.2f).init_random(p + "bg", {m}, 0.3f, gc.bg_offset);
  }
  if (gc.fc == Fc::Conv1x1) {
    b.init_random(p + "wg4", {m, c, 1, 1}, 0.2f);
    b.node("Conv", {p + "s4", p + "wg4", p + "bg"}, {p + "z"});
  } else if (gc.fc == Fc::Gemm) {
    OnnxBuilder::attr_int(b.node("Gemm", {s_in, p + "wg", p + "bg"}, {p + "z"}), "transB", 1);
  } else {
    b.node("Transpose", {p + "wg"}, {p + "wgT"});
    b.node("MatMul", {s_in, p + "wgT"}, {p + "mm"});
    if (gc.fc == Fc::MatMulSub) b.node("Sub", {p + "mm", p + "bg"}, {p + "z"});
    else if (gc.fc == Fc::SubMatMul) b.node("Sub", {p + "bg", p + "mm"}, {p + "z"});
    else b.node("Add", {p + "bg", p + "mm"}, {p + "z"});
  }
  const std::string act = gc.act, g_act = p + (gc.fc == Fc::Conv1x1 ? "g4" : "g");
  if (act.empty()) {
    b.node("Identity", {p + "z"}, {g_act});
  } else if (act == "ReluRelu") {  // relu(relu(z)), as code that applies F.relu twice exports it
    b.node("Relu", {p + "z"}, {p + "z1"});
    b.node("Relu", {p + "z1"}, {g_act});
  } else if (act == "Clip" || act == "ClipInverted") {  // relu6, as opset 11+ exports it; or min > max: max everywhere
    b.init(p + "lo", {}, {act == "Clip" ? 0.f : 0.5f}).init(p + "hi", {}, {act == "Clip" ? 6.f : 0.25f});
    b.node("Clip", {p + "z", p + "lo", p + "hi"}, {g_act});
  } else {
    auto& an = b.node(act, {p + "z"}, {g_act});
    if (act == "LeakyRelu") OnnxBuilder::attr_float(an, "alpha", 0.1f);
    if (act == "Elu") OnnxBuilder::attr_float(an, "alpha", 0.7f);
    if (act == "HardSigmoid") OnnxBuilder::attr_float(an, "alpha", 1.f / 6), OnnxBuilder::attr_float(an, "beta", 0.5f);
  }
  if (gc.fc == Fc::Conv1x1) OnnxBuilder::attr_int(b.node("Flatten", {p + "g4"}, {p + "g"}), "axis", 1);
  // Selection.
  const std::string pi = p + "pi";
  if (gc.form == Form::Winners) {
    b.init_i64(p + "K", {1}, {gc.k});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    b.init(p + "zeros", {n, m}, std::vector<float>(static_cast<size_t>(n * m), 0.f));
    if (gc.hard) b.init(p + "ones", {n, gc.k}, std::vector<float>(static_cast<size_t>(n * gc.k), 1.f));
    auto& sc = b.node("ScatterElements", {p + "zeros", p + "ti", p + (gc.hard ? "ones" : "tv")}, {pi});
    OnnxBuilder::attr_int(sc, "axis", 1);
    if (gc.reduction) OnnxBuilder::attr_str(sc, "reduction", gc.reduction);
  } else if (gc.form == Form::IndexPutValues || gc.form == Form::IndexPutMask || gc.form == Form::IndexPutRowsReversed) {
    b.init_i64(p + "K", {1}, {gc.k});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < n; ++r) rows.insert(rows.end(), static_cast<size_t>(gc.k), gc.form == Form::IndexPutRowsReversed ? n - 1 - r : r);
    b.init_i64(p + "rows", {n, gc.k, 1}, rows).init_i64(p + "ax_last", {1}, {2});
    b.node("Unsqueeze", {p + "ti", p + "ax_last"}, {p + "ti3"});
    OnnxBuilder::attr_int(b.node("Concat", {p + "rows", p + "ti3"}, {p + "pairs"}), "axis", -1);
    b.init(p + "zeros", {n, m}, std::vector<float>(static_cast<size_t>(n * m), 0.f));
    if (gc.form == Form::IndexPutMask) {
      b.init(p + "ones", {n, gc.k}, std::vector<float>(static_cast<size_t>(n * gc.k), 1.f));
      auto& sc = b.node("ScatterND", {p + "zeros", p + "pairs", p + "ones"}, {p + "mask"});
      if (gc.reduction) OnnxBuilder::attr_str(sc, "reduction", gc.reduction);
      b.node(gc.hard ? "Identity" : "Mul", gc.hard ? std::vector<std::string>{p + "mask"} : std::vector<std::string>{p + "mask", p + "g"}, {pi});
    } else {
      auto& sc = b.node("ScatterND", {p + "zeros", p + "pairs", p + "tv"}, {pi});
      if (gc.reduction) OnnxBuilder::attr_str(sc, "reduction", gc.reduction);
    }
  } else if (gc.form == Form::Losers) {
    b.init_i64(p + "K", {1}, {m - gc.k});
    b.node("Neg", {p + "g"}, {p + "ng"});
    OnnxBuilder::attr_int(b.node("TopK", {p + "ng", p + "K"}, {p + "tv", p + "ti"}), "axis", -1);
    b.init(p + "zeros", {n, m - gc.k}, std::vector<float>(static_cast<size_t>(n * (m - gc.k)), 0.f));
    if (gc.hard) b.init(p + "ones", {n, m}, std::vector<float>(static_cast<size_t>(n * m), 1.f));
    auto& sc = b.node("ScatterElements", {p + (gc.hard ? "ones" : "g"), p + "ti", p + "zeros"}, {pi});
    OnnxBuilder::attr_int(sc, "axis", 1);
    if (gc.reduction) OnnxBuilder::attr_str(sc, "reduction", gc.reduction);
  } else if (gc.form == Form::Threshold || gc.form == Form::ThresholdLess) {
    b.init_i64(p + "K", {1}, {gc.k + 1});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    auto& rmin = b.node("ReduceMin", {p + "tv"}, {p + "thr"});
    OnnxBuilder::attr_ints(rmin, "axes", {1});
    if (gc.form == Form::Threshold)
      b.node("Greater", {p + "g", p + "thr"}, {p + "gt"});
    else
      b.node("Less", {p + "thr", p + "g"}, {p + "gt"});
    OnnxBuilder::attr_int(b.node("Cast", {p + "gt"}, {gc.hard ? pi : p + "mask"}), "to", 1);
    if (gc.hard) {
    } else if (gc.form == Form::Threshold) {
      b.node("Mul", {p + "g", p + "mask"}, {pi});
    } else {
      b.node("Mul", {p + "mask", p + "g"}, {pi});
    }
  } else if (gc.form == Form::WinnersOneHotAxis1) {
    // g * ReduceMax(OneHot(TopK(g).indices, M, [0, 1], axis 1) [N, M, k], over axis 2, kept) [N, M, 1]
    b.init_i64(p + "K", {1}, {gc.k}).init_i64(p + "depth", {}, {m}).init(p + "offon", {2}, {0.f, 1.f});
    b.init_i64(p + "nm", {2}, {n, m});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    OnnxBuilder::attr_int(b.node("OneHot", {p + "ti", p + "depth", p + "offon"}, {p + "oh"}), "axis", 1);
    OnnxBuilder::attr_ints(b.node("ReduceMax", {p + "oh"}, {p + "mask3"}), "axes", {2});
    b.node("Reshape", {p + "mask3", p + "nm"}, {p + "mask"});
    b.node("Mul", {p + "g", p + "mask"}, {pi});
  } else if (gc.form == Form::WinnersMask) {
    b.init_i64(p + "K", {1}, {gc.k});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    b.init(p + "zeros", {n, m}, std::vector<float>(static_cast<size_t>(n * m), 0.f));
    b.init(p + "ones", {n, gc.k}, std::vector<float>(static_cast<size_t>(n * gc.k), 1.f));
    OnnxBuilder::attr_int(b.node("ScatterElements", {p + "zeros", p + "ti", p + "ones"}, {p + "mask"}), "axis", 1);
    b.node("Mul", {p + "mask", p + "g"}, {pi});
  } else if (gc.form == Form::ThresholdSliceGe || gc.form == Form::ThresholdEarlierEntry ||
             gc.form == Form::ThresholdSortedAll || gc.form == Form::ThresholdMeanOfTopK ||
             gc.form == Form::ThresholdSortedAscending || gc.form == Form::ThresholdKthValue) {
    // Ascending: torch.sort(g) (all M smallest first) entry M-k; torch.kthvalue(g, M-k+1): the
    // last of the M-k+1 smallest.
    const bool ascending = gc.form == Form::ThresholdSortedAscending || gc.form == Form::ThresholdKthValue;
    const int64_t big_k = gc.form == Form::ThresholdEarlierEntry                                ? gc.k + 1
                          : gc.form == Form::ThresholdSortedAll || gc.form == Form::ThresholdSortedAscending ? m
                          : gc.form == Form::ThresholdKthValue                                   ? m - gc.k + 1
                                                                                                  : gc.k;
    b.init_i64(p + "K", {1}, {big_k});
    auto& topk = b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"});
    OnnxBuilder::attr_int(topk, "axis", 1);
    if (ascending) OnnxBuilder::attr_int(topk, "largest", 0);
    if (ascending) {
      b.init_i64(p + "st", {1}, {m - gc.k}).init_i64(p + "en", {1}, {m - gc.k + 1}).init_i64(p + "ax", {1}, {1});
      b.node("Slice", {p + "tv", p + "st", p + "en", p + "ax"}, {p + "thr"});
    } else if (gc.form == Form::ThresholdMeanOfTopK) {
      auto& rm = b.node("ReduceMean", {p + "tv"}, {p + "thr"});
      OnnxBuilder::attr_ints(rm, "axes", {1});
    } else {
      b.init_i64(p + "st", {1}, {gc.k - 1}).init_i64(p + "en", {1}, {gc.k}).init_i64(p + "ax", {1}, {1});
      b.node("Slice", {p + "tv", p + "st", p + "en", p + "ax"}, {p + "thr"});
    }
    if (gc.not_less) {
      b.node("Less", {p + "g", p + "thr"}, {p + "lt"});
      b.node("Not", {p + "lt"}, {p + "ge"});
    } else {
      b.node("GreaterOrEqual", {p + "g", p + "thr"}, {p + "ge"});
    }
    OnnxBuilder::attr_int(b.node("Cast", {p + "ge"}, {gc.hard ? pi : p + "mask"}), "to", 1);
    if (!gc.hard) b.node("Mul", {p + "g", p + "mask"}, {pi});
  } else {  // ThresholdWhereGather
    b.init_i64(p + "K", {1}, {gc.k});
    OnnxBuilder::attr_int(b.node("TopK", {p + "g", p + "K"}, {p + "tv", p + "ti"}), "axis", 1);
    b.init_i64(p + "last", {}, {-1}).init_i64(p + "ax1", {1}, {1});
    OnnxBuilder::attr_int(b.node("Gather", {p + "tv", p + "last"}, {p + "kth"}), "axis", 1);
    b.node("Unsqueeze", {p + "kth", p + "ax1"}, {p + "thr"});
    b.init(p + "zeros", {}, {0.f});
    if (gc.hard) b.init(p + "one", {}, {1.f});
    const std::string kept = p + (gc.hard ? "one" : "g");
    if (gc.masked_fill) {
      b.node("Greater", {p + "thr", p + "g"}, {p + "below"});
      b.node("Where", {p + "below", p + "zeros", kept}, {pi});
    } else {
      b.node("LessOrEqual", {p + "thr", p + "g"}, {p + "le"});
      b.node("Where", {p + "le", kept, p + "zeros"}, {pi});
    }
  }
  // Broadcast pi over H, W and apply it.
  if (gc.bcast == Bcast::Unsqueeze) b.init_i64(p + "ax2", {1}, {2}).init_i64(p + "ax3", {1}, {3});
  else if (gc.bcast == Bcast::Reshape) b.init_i64(p + "shape4", {4}, {-1, m, 1, 1});
  else b.init_i64(p + "shape4", {3}, {m, 1, 1});
  auto bcast = [&](const std::string& v, const std::string& out) {
    if (gc.bcast == Bcast::Unsqueeze) {
      b.node("Unsqueeze", {v, p + "ax2"}, {out + "_u"});
      b.node("Unsqueeze", {out + "_u", p + "ax3"}, {out});
    } else {
      b.node("Reshape", {v, p + "shape4"}, {out});
    }
  };
  bcast(pi, p + "pi4");
  // conv * pi4, or Where(pi4 > 0, conv, 0)
  auto apply = [&](const std::string& conv, const std::string& out) {
    if (!gc.where_apply) {
      b.node("Mul", {p + "pi4", conv}, {out});
      return;
    }
    b.init(p + "wzero", {}, {0.f});
    b.node("Greater", {p + "pi4", p + "wzero"}, {p + "pi4_on"});
    b.node("Where", {p + "pi4_on", conv, p + "wzero"}, {out});
  };
  if (gc.relu_first) {
    b.node("Relu", {p + "conv"}, {p + "rconv"});
    apply(p + "rconv", y);
    return;
  }
  apply(p + "conv", p + "y0");
  std::string cur = p + "y0";
  if (gc.beta != Beta::None) {
    b.init_random(p + "beta", gc.beta_flat ? Shape{m} : Shape{1, m, 1, 1}, 0.5f, gc.beta == Beta::Unmasked ? 0.3f : 0.f);
    std::string add_in = p + "beta";
    if (gc.beta == Beta::Masked && gc.beta_scrambled) {
      b.init_random(p + "beta3", {m, 1, 1}, 0.5f);
      b.init(p + "zero", {}, {0.f});
      b.node("Greater", {pi, p + "zero"}, {p + "on"});
      OnnxBuilder::attr_int(b.node("Cast", {p + "on"}, {p + "onf"}), "to", 1);
      b.init_i64(p + "mn1", {3}, {m, n, 1}).init_i64(p + "nm11", {4}, {n, m, 1, 1});
      b.node("Reshape", {p + "onf", p + "mn1"}, {p + "on_mn"});
      b.node("Mul", {p + "beta3", p + "on_mn"}, {p + "bm_mn"});
      b.node("Reshape", {p + "bm_mn", p + "nm11"}, {p + "bm"});
      add_in = p + "bm";
    } else if (gc.beta == Beta::Masked && gc.beta_flat) {
      b.init(p + "zero", {}, {0.f});
      b.node("Greater", {pi, p + "zero"}, {p + "on"});
      OnnxBuilder::attr_int(b.node("Cast", {p + "on"}, {p + "onf"}), "to", 1);
      b.node("Mul", {p + "onf", p + "beta"}, {p + "bm2"});
      bcast(p + "bm2", p + "bm");
      add_in = p + "bm";
    } else if (gc.beta == Beta::Masked) {
      b.init(p + "zero", {}, {0.f});
      b.node("Greater", {pi, p + "zero"}, {p + "on"});
      OnnxBuilder::attr_int(b.node("Cast", {p + "on"}, {p + "onf"}), "to", 1);
      bcast(p + "onf", p + "on4");
      b.node("Mul", {p + "beta", p + "on4"}, {p + "bm"});
      add_in = p + "bm";
    }
    b.node("Add", {cur, add_in}, {p + "y1"});
    cur = p + "y1";
  }
  if (gc.relu6) {  // F.relu6 after the gate: Clip(0, 6), taken into the gated conv
    b.init(p + "lo6", {}, {0.f}).init(p + "hi6", {}, {6.f});
    b.node("Clip", {cur, p + "lo6", p + "hi6"}, {y});
  } else if (gc.relu) {
    b.node("Relu", {cur}, {y});
  } else {
    b.node("Identity", {cur}, {y});
  }
}

Model gate_model(const GateCase& gc, int gates = 1) {
  OnnxBuilder b;
  std::string cur = "x";
  if (gc.pool == Pool::ChannelLast) {
    b.input("x", {gc.n, gc.hw, gc.hw, gc.c});
    OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"xc"}), "perm", {0, 3, 1, 2});
    cur = "xc";
  } else {
    b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
    if (gc.pool == Pool::ChannelLastInside) {
      OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"x_nhwc"}), "perm", {0, 2, 3, 1});
      OnnxBuilder::attr_ints(b.node("Transpose", {"x_nhwc"}, {"xc"}), "perm", {0, 3, 1, 2});
      cur = "xc";
    }
  }
  int64_t c = gc.c;
  for (int i = 0; i < gates; ++i) {
    // Appended, not "h" + to_string(i): GCC 12 warns falsely (-Wrestrict) on that inlined.
    std::string out = "h", prefix = "g";
    out.append(std::to_string(i));
    prefix.append(std::to_string(i)).append("_");
    if (i + 1 == gates) out = "y";
    add_gate(b, gc, prefix, cur, out, c);
    cur = out;
    c = gc.m;
  }
  b.output("y");
  return b.load("gate_test.onnx");
}

int count_gated(const runtime::Plan& p) {
  int c = 0;
  for (const auto& st : p.steps()) c += p.graph().node(st.node).op == graph::OpType::SluiceGatedConv;
  return c;
}

struct Outcome {
  double err = 0;        // fast vs the generic ops
  double err_off = 0;    // --gating off vs the generic ops
  RunStats stats;
  Tensor y;
};

Outcome run_both(const Model& m, const Shape& in, SessionOptions gated_opts = {}) {
  Tensor x = random_tensor(in, 7);
  gated_opts.threads = 1;
  SessionOptions off = gated_opts;
  off.gating = false;
  Session fast(m, gated_opts), dense(m, off), ref(m, {1, false});
  Outcome o;
  auto a = fast.run({{"x", x}}, &o.stats);
  auto r = ref.run({{"x", x}});
  auto d = dense.run({{"x", x}});
  o.err = normalized_error(a["y"], r["y"]);
  o.err_off = normalized_error(d["y"], r["y"]);
  o.y = a["y"];
  return o;
}

const LayerStats& gated_layer(const RunStats& s, size_t i = 0) {
  size_t seen = 0;
  for (const auto& l : s.layers)
    if (l.gated && seen++ == i) return l;
  throw std::runtime_error("no gated layer");
}

// A model with a second input that has no batch axis ([16], larger than the batch): the stats'
// batch is the gated layers' (it was the largest first dimension over the inputs, 16, and the
// gated layer then looked ungated at batch 2). A failed run leaves no earlier run's stats.
TEST(GateStats, BatchIsTheGatedLayersNotAnotherInputs) {
  GateCase gc;
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
  b.input("aux", {16});
  add_gate(b, gc, "g_", "x", "y", gc.c);
  b.node("Relu", {"aux"}, {"aux_out"});
  b.output("y");
  b.output("aux_out");
  Session s(b.load("gate_aux.onnx"), {1, true});
  RunStats st;
  s.run({{"x", random_tensor({gc.n, gc.c, gc.hw, gc.hw}, 3)}, {"aux", random_tensor({16}, 4)}}, &st);
  ASSERT_EQ(st.samples.size(), static_cast<size_t>(gc.n));
  const LayerStats& l = gated_layer(st);
  EXPECT_EQ(l.samples.size(), static_cast<size_t>(gc.n));
  EXPECT_LT(st.executed_macs, st.dense_macs);
  EXPECT_THROW(s.run({{"x", random_tensor({gc.n, gc.c + 1, gc.hw, gc.hw}, 3)}, {"aux", random_tensor({16}, 4)}}, &st),
               Error);
  EXPECT_TRUE(st.samples.empty());
  EXPECT_TRUE(st.layers.empty());
  EXPECT_EQ(st.dense_macs, 0);
}

struct Variant {
  const char* name;
  GateCase gc;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

class GateVariants : public ::testing::TestWithParam<Variant> {};

TEST_P(GateVariants, RecognisedAndExact) {
  const GateCase& gc = GetParam().gc;
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_TRUE(plan.graph().gates[0].recognised) << plan.graph().gates[0].reason;
  EXPECT_EQ(count_gated(plan), 1);
  int others = 0;  // besides the gated conv and the layout reorders around it
  for (const auto& st : plan.steps()) {
    auto op = plan.graph().node(st.node).op;
    others += op != graph::OpType::SluiceGatedConv && op != graph::OpType::SluiceReorder && op != graph::OpType::Identity &&
              !(op == graph::OpType::Transpose && gc.pool == Pool::ChannelLast);  // (the input's to NCHW)
  }
  EXPECT_EQ(others, 0) << "the whole gate should be one step:\n" << plan.describe(false);
  Outcome o = run_both(m, gc.pool == Pool::ChannelLast ? Shape{gc.n, gc.hw, gc.hw, gc.c} : Shape{gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  EXPECT_LT(o.err_off, 1e-5);
  // Every g > 0 here, so exactly k channels run per sample (threshold: the k above the (k+1)-th).
  const LayerStats& l = gated_layer(o.stats);
  ASSERT_EQ(l.samples.size(), static_cast<size_t>(gc.n));
  for (const auto& s : l.samples) {
    EXPECT_EQ(s.active_out_channels, gc.k);
    EXPECT_EQ(s.active_in_channels, gc.c);
    EXPECT_EQ(s.executed_macs, gc.k * gc.c * 9 * gc.hw * gc.hw);
    EXPECT_EQ(s.dense_macs, gc.m * gc.c * 9 * gc.hw * gc.hw);
  }
  EXPECT_EQ(l.gate_macs, gc.n * gc.m * gc.c);
  EXPECT_EQ(o.stats.skipped_macs(), o.stats.dense_macs - o.stats.executed_macs);
}

GateCase with(std::function<void(GateCase&)> f) {
  GateCase g;
  f(g);
  return g;
}

INSTANTIATE_TEST_SUITE_P(
    Forms, GateVariants,
    ::testing::Values(Variant{"winners_gap_gemm_unsqueeze_masked", with([](GateCase&) {})},
                      Variant{"losers", with([](GateCase& g) { g.form = Form::Losers; })},
                      Variant{"threshold", with([](GateCase& g) { g.form = Form::Threshold; })},
                      Variant{"winners_mask", with([](GateCase& g) { g.form = Form::WinnersMask; })},
                      Variant{"winners_one_hot_axis1", with([](GateCase& g) { g.form = Form::WinnersOneHotAxis1; })},
                      Variant{"relu6_after_gate", with([](GateCase& g) { g.relu6 = true; })},
                      Variant{"relu6_after_gate_unmasked_beta", with([](GateCase& g) { g.relu6 = true; g.beta = Beta::Unmasked; })},
                      Variant{"threshold_slice_ge", with([](GateCase& g) { g.form = Form::ThresholdSliceGe; })},
                      Variant{"threshold_where_gather", with([](GateCase& g) { g.form = Form::ThresholdWhereGather; })},
                      Variant{"threshold_less", with([](GateCase& g) { g.form = Form::ThresholdLess; })},
                      Variant{"threshold_ge_k1", with([](GateCase& g) { g.form = Form::ThresholdSliceGe; g.k = 1; })},
                      Variant{"threshold_not_less", with([](GateCase& g) { g.form = Form::ThresholdSliceGe; g.not_less = true; })},
                      Variant{"relu_then_gate", with([](GateCase& g) { g.relu_first = true; g.beta = Beta::None; })},
                      Variant{"relu_then_gate_losers", with([](GateCase& g) {
                        g.relu_first = true;
                        g.beta = Beta::None;
                        g.form = Form::Losers;
                      })},
                      Variant{"threshold_earlier_entry", with([](GateCase& g) { g.form = Form::ThresholdEarlierEntry; })},
                      Variant{"threshold_sorted_all", with([](GateCase& g) { g.form = Form::ThresholdSortedAll; })},
                      Variant{"threshold_sorted_all_k1", with([](GateCase& g) { g.form = Form::ThresholdSortedAll; g.k = 1; })},
                      Variant{"threshold_sorted_ascending", with([](GateCase& g) { g.form = Form::ThresholdSortedAscending; })},
                      Variant{"threshold_sorted_ascending_k1",
                              with([](GateCase& g) { g.form = Form::ThresholdSortedAscending; g.k = 1; })},
                      Variant{"threshold_kthvalue", with([](GateCase& g) { g.form = Form::ThresholdKthValue; })},
                      Variant{"threshold_kthvalue_kM", with([](GateCase& g) { g.form = Form::ThresholdKthValue; g.k = g.m; })},
                      Variant{"index_put_values", with([](GateCase& g) { g.form = Form::IndexPutValues; })},
                      Variant{"index_put_mask", with([](GateCase& g) { g.form = Form::IndexPutMask; })},
                      Variant{"index_put_batch5", with([](GateCase& g) { g.form = Form::IndexPutValues; g.n = 5; })},
                      Variant{"masked_fill", with([](GateCase& g) { g.form = Form::ThresholdWhereGather; g.masked_fill = true; })},
                      Variant{"sigmoid_g", with([](GateCase& g) { g.act = "Sigmoid"; })},
                      Variant{"relu6_g", with([](GateCase& g) { g.act = "Clip"; })},
                      Variant{"clip_min_above_max_g", with([](GateCase& g) { g.act = "ClipInverted"; g.bg_offset = 0.f; })},
                      Variant{"hardsigmoid_g", with([](GateCase& g) { g.act = "HardSigmoid"; })},
                      Variant{"softplus_g_negative_z", with([](GateCase& g) { g.act = "Softplus"; g.bg_offset = -1.f; })},
                      // Winners whose g is negative: active like any other (pi = g != 0).
                      Variant{"leaky_relu_g_negative", with([](GateCase& g) { g.act = "LeakyRelu"; g.bg_offset = -1.f; g.beta = Beta::Unmasked; })},
                      Variant{"elu_g_negative", with([](GateCase& g) { g.act = "Elu"; g.bg_offset = -1.f; g.beta = Beta::None; })},
                      Variant{"tanh_g_negative", with([](GateCase& g) { g.act = "Tanh"; g.bg_offset = -0.5f; g.beta = Beta::Unmasked; })},
                      Variant{"abs_g", with([](GateCase& g) { g.act = "Abs"; g.bg_offset = -0.5f; })},
                      Variant{"abs_g_relu_first", with([](GateCase& g) { g.act = "Abs"; g.relu_first = true; g.beta = Beta::None; })},
                      Variant{"no_activation_g_negative", with([](GateCase& g) { g.act = ""; g.bg_offset = -1.f; g.beta = Beta::None; g.form = Form::Losers; })},
                      Variant{"leaky_relu_g_threshold", with([](GateCase& g) { g.act = "LeakyRelu"; g.bg_offset = -1.f; g.beta = Beta::None; g.form = Form::ThresholdSliceGe; })},
                      Variant{"masked_beta_flat", with([](GateCase& g) { g.beta_flat = true; })},
                      Variant{"sigmoid_g_threshold", with([](GateCase& g) { g.act = "Sigmoid"; g.form = Form::ThresholdSliceGe; })},
                      Variant{"sigmoid_g_conv1x1", with([](GateCase& g) { g.act = "Sigmoid"; g.fc = Fc::Conv1x1; })},
                      Variant{"global_max_pool", with([](GateCase& g) { g.pool = Pool::GlobalMax; })},
                      Variant{"reduce_max_abs", with([](GateCase& g) { g.pool = Pool::ReduceMax; g.abs_first = true; })},
                      Variant{"whole_map_max_pool", with([](GateCase& g) { g.pool = Pool::WholeMapMaxPool; })},
                      Variant{"reduce_l2", with([](GateCase& g) { g.pool = Pool::ReduceL2; })},
                      Variant{"reducemean", with([](GateCase& g) { g.pool = Pool::ReduceMean; })},
                      Variant{"abs_reducemean", with([](GateCase& g) { g.pool = Pool::AbsReduceMean; })},
                      Variant{"channel_last_reducemean", with([](GateCase& g) { g.pool = Pool::ChannelLast; })},
                      Variant{"channel_last_abs", with([](GateCase& g) { g.pool = Pool::ChannelLast; g.abs_first = true; })},
                      Variant{"channel_last_inside", with([](GateCase& g) { g.pool = Pool::ChannelLastInside; })},
                      Variant{"channel_last_inside_abs", with([](GateCase& g) { g.pool = Pool::ChannelLastInside; g.abs_first = true; })},
                      Variant{"matmul_add", with([](GateCase& g) { g.fc = Fc::MatMulAdd; })},
                      Variant{"matmul_sub", with([](GateCase& g) { g.fc = Fc::MatMulSub; g.bg_offset = -1.5f; })},
                      Variant{"sub_matmul", with([](GateCase& g) { g.fc = Fc::SubMatMul; })},
                      Variant{"conv1x1_predictor", with([](GateCase& g) { g.fc = Fc::Conv1x1; })},
                      Variant{"sum_div_hw", with([](GateCase& g) { g.pool = Pool::SumDiv; })},
                      // (A scaled mean was first taken for a mean of |x|: a failed look for ReduceL1 / HW
                      // behind the Mul left its flag set; found by a probe.)
                      Variant{"scaled_mean", with([](GateCase& g) { g.pool = Pool::ScaledMean; })},
                      Variant{"relu_relu_g", with([](GateCase& g) { g.act = "ReluRelu"; })},
                      Variant{"sqrt_sum_squares", with([](GateCase& g) { g.pool = Pool::SqrtSumSquares; })},
                      Variant{"l1_div_hw", with([](GateCase& g) { g.pool = Pool::L1Div; })},
                      Variant{"whole_map_avgpool", with([](GateCase& g) { g.pool = Pool::WholeMapAvgPool; })},
                      Variant{"reshape", with([](GateCase& g) { g.bcast = Bcast::Reshape; })},
                      Variant{"reshape_c11_batch1", with([](GateCase& g) { g.bcast = Bcast::ReshapeC11; g.n = 1; })},
                      Variant{"where_positive", with([](GateCase& g) { g.where_apply = true; })},
                      Variant{"where_positive_threshold", with([](GateCase& g) { g.where_apply = true; g.form = Form::ThresholdSliceGe; })},
                      Variant{"where_positive_relu_first",
                              with([](GateCase& g) { g.where_apply = true; g.relu_first = true; g.beta = Beta::None; })},
                      Variant{"where_positive_hard_mask", with([](GateCase& g) { g.where_apply = true; g.hard = true; })},
                      Variant{"reshape_c11_batch1_unmasked",
                              with([](GateCase& g) { g.bcast = Bcast::ReshapeC11; g.n = 1; g.beta = Beta::Unmasked; })},
                      Variant{"unmasked_beta", with([](GateCase& g) { g.beta = Beta::Unmasked; })},
                      Variant{"no_beta", with([](GateCase& g) { g.beta = Beta::None; })},
                      Variant{"no_relu", with([](GateCase& g) { g.relu = false; })},
                      Variant{"k1", with([](GateCase& g) { g.k = 1; })},
                      Variant{"k_equals_c", with([](GateCase& g) { g.k = g.m; })},
                      Variant{"batch1", with([](GateCase& g) { g.n = 1; })},
                      Variant{"batch5_odd", with([](GateCase& g) { g.n = 5; g.c = 5; g.m = 11; g.k = 3; g.hw = 9; })},
                      // Hard 0/1 masks (no g multiplier): pi = 1 where kept. g negative in some, which
                      // changes nothing for them (the mask is still 0/1, so a Relu first and a masked
                      // beta are still exact).
                      Variant{"hard_winners", with([](GateCase& g) { g.hard = true; })},
                      Variant{"hard_winners_negative_g", with([](GateCase& g) { g.hard = true; g.act = ""; g.bg_offset = -1.f; })},
                      Variant{"hard_losers", with([](GateCase& g) { g.hard = true; g.form = Form::Losers; })},
                      Variant{"hard_threshold", with([](GateCase& g) { g.hard = true; g.form = Form::Threshold; })},
                      Variant{"hard_threshold_less", with([](GateCase& g) { g.hard = true; g.form = Form::ThresholdLess; })},
                      Variant{"hard_threshold_slice_ge", with([](GateCase& g) { g.hard = true; g.form = Form::ThresholdSliceGe; })},
                      Variant{"hard_threshold_not_less", with([](GateCase& g) {
                        g.hard = true;
                        g.form = Form::ThresholdSliceGe;
                        g.not_less = true;
                      })},
                      Variant{"hard_where", with([](GateCase& g) { g.hard = true; g.form = Form::ThresholdWhereGather; })},
                      Variant{"hard_masked_fill", with([](GateCase& g) {
                        g.hard = true;
                        g.form = Form::ThresholdWhereGather;
                        g.masked_fill = true;
                      })},
                      Variant{"hard_index_put", with([](GateCase& g) { g.hard = true; g.form = Form::IndexPutMask; })},
                      Variant{"hard_relu_first_negative_g", with([](GateCase& g) {
                        g.hard = true;
                        g.relu_first = true;
                        g.beta = Beta::None;
                        g.act = "";
                        g.bg_offset = -1.f;
                      })},
                      Variant{"hard_masked_beta_negative_g", with([](GateCase& g) {
                        g.hard = true;
                        g.act = "LeakyRelu";
                        g.bg_offset = -1.f;
                      })}),
    [](const ::testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

// torch.where(g >= t, 1.0, 0.0) exports with double constants, and torch then casts the conv's
// output to double for the product (and the Relu after it). With a 0/1 mask that is exactly
// the float gate's output cast: recognised, the gate runs in float, a Cast follows. With g
// itself as the multiplier in double (not exact in float) it stays generic.
TEST(GatedConv, HardMaskInDoubleRunsTheGateInFloatThenCasts) {
  for (bool soft : {false, true}) {
    const int64_t n = 2, c = 6, m = 8, hw = 7, k = 3;
    OnnxBuilder b;
    b.input("x", {n, c, hw, hw});
    b.init_random("w", {m, c, 3, 3}, 0.3f).init_random("cb", {m}, 0.1f);
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w", "cb"}, {"conv"}), "pads", {1, 1, 1, 1});
    b.node("GlobalAveragePool", {"x"}, {"gap"});
    OnnxBuilder::attr_int(b.node("Flatten", {"gap"}, {"s"}), "axis", 1);
    b.init_random("wg", {m, c}, 0.2f).init_random("bg", {m}, 0.3f, 1.5f);
    OnnxBuilder::attr_int(b.node("Gemm", {"s", "wg", "bg"}, {"g"}), "transB", 1);
    b.init_i64("K", {1}, {k}).init_i64("st", {1}, {k - 1}).init_i64("en", {1}, {k}).init_i64("ax", {1}, {1});
    OnnxBuilder::attr_int(b.node("TopK", {"g", "K"}, {"tv", "ti"}), "axis", 1);
    b.node("Slice", {"tv", "st", "en", "ax"}, {"thr"});
    b.node("GreaterOrEqual", {"g", "thr"}, {"ge"});
    b.init_f64("one", {}, {1.0}).init_f64("zero", {}, {0.0});
    b.node("Where", {"ge", "one", "zero"}, {"mask"});
    std::string pi = "mask";
    if (soft) {
      OnnxBuilder::attr_int(b.node("Cast", {"g"}, {"gd"}), "to", onnx::TensorProto::DOUBLE);
      b.node("Mul", {"gd", "mask"}, {"pi"});
      pi = "pi";
    }
    b.init_i64("ax2", {1}, {2}).init_i64("ax3", {1}, {3});
    b.node("Unsqueeze", {pi, "ax2"}, {"pi3"});
    b.node("Unsqueeze", {"pi3", "ax3"}, {"pi4"});
    OnnxBuilder::attr_int(b.node("Cast", {"conv"}, {"convd"}), "to", onnx::TensorProto::DOUBLE);
    b.node("Mul", {"convd", "pi4"}, {"yd"});
    b.node("Relu", {"yd"}, {"rd"});
    OnnxBuilder::attr_int(b.node("Cast", {"rd"}, {"y"}), "to", onnx::TensorProto::FLOAT);
    b.output("y");
    Model model = b.load("hard_mask_double.onnx");
    runtime::Plan plan(*model.graph(), {}, {1, true});
    // (Not recognised, the selection is listed a second time as multiplying a Cast's output.)
    ASSERT_EQ(plan.graph().gates.size(), soft ? 2u : 1u);
    EXPECT_EQ(plan.graph().gates[0].recognised, !soft) << plan.graph().gates[0].reason;
    EXPECT_EQ(count_gated(plan), soft ? 0 : 1);
    Outcome o = run_both(model, {n, c, hw, hw});
    EXPECT_LT(o.err, 1e-6);
    EXPECT_LT(o.err_off, 1e-6);
    if (soft) continue;
    for (const auto& s : gated_layer(o.stats).samples) EXPECT_EQ(s.executed_macs, k * c * 9 * hw * hw);
  }
}

// A hard mask whose g comes from a predictor in float64 (a Linear torch exported in double): no
// gate (its weights are doubles), and the model runs; it failed to load, the recogniser
// reading the double weights as floats (found by a review).
TEST(GateRecognition, DoublePredictorBehindAHardMaskRunsAsTheGenericOps) {
  const int64_t n = 2, c = 6, m = 8, hw = 7, k = 3;
  OnnxBuilder b;
  b.input("x", {n, c, hw, hw});
  b.init_random("w", {m, c, 3, 3}, 0.3f);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"conv"}), "pads", {1, 1, 1, 1});
  auto& rm = b.node("ReduceMean", {"x"}, {"s"});
  OnnxBuilder::attr_ints(rm, "axes", {2, 3});
  OnnxBuilder::attr_int(rm, "keepdims", 0);
  OnnxBuilder::attr_int(b.node("Cast", {"s"}, {"sd"}), "to", onnx::TensorProto::DOUBLE);
  std::vector<double> wg(static_cast<size_t>(m * c));
  for (size_t i = 0; i < wg.size(); ++i) wg[i] = 0.1 * static_cast<double>((i * 7) % 11) - 0.5;
  b.init_f64("wg", {m, c}, wg);
  OnnxBuilder::attr_int(b.node("Gemm", {"sd", "wg"}, {"g"}), "transB", 1);
  b.init_i64("K", {1}, {k}).init_i64("st", {1}, {k - 1}).init_i64("en", {1}, {k}).init_i64("ax", {1}, {1});
  OnnxBuilder::attr_int(b.node("TopK", {"g", "K"}, {"tv", "ti"}), "axis", 1);
  b.node("Slice", {"tv", "st", "en", "ax"}, {"thr"});
  b.node("GreaterOrEqual", {"g", "thr"}, {"ge"});
  OnnxBuilder::attr_int(b.node("Cast", {"ge"}, {"mask"}), "to", onnx::TensorProto::FLOAT);
  b.init_i64("shape4", {4}, {n, m, 1, 1});
  b.node("Reshape", {"mask", "shape4"}, {"pi4"});
  b.node("Mul", {"conv", "pi4"}, {"y"});
  b.output("y");
  Model model = b.load("double_predictor.onnx");
  runtime::Plan plan(*model.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_NE(plan.graph().gates[0].reason.find("float64"), std::string::npos) << plan.graph().gates[0].reason;
  Outcome o = run_both(model, {n, c, hw, hw});
  EXPECT_LT(o.err, 1e-6);
}

// FBS + network slimming: a stem conv with zeroed filters feeding a gated conv. Filter 1
// (bias 0: relu gives 0) goes, from the stem and from the gated conv's conv and saliency
// inputs; filter 4 (bias 0.5: the constant relu(0.5), which the gate's mean would see) stays,
// and inspect says why. Outputs equal the generic ops; dense MACs stay the model's.
TEST(GatedConv, ZeroChannelsFeedingItArePrunedNonZeroConstantsKept) {
  GateCase gc;
  gc.c = 6;
  OnnxBuilder b;
  b.input("x", {gc.n, 4, gc.hw, gc.hw});
  std::vector<float> w(6 * 4 * 9), bias(6, 0.1f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 37 % 17) / 17.0 - 0.45);
  for (int64_t o : {1, 4}) std::fill_n(w.begin() + o * 36, 36, 0.f);
  bias[1] = 0.f, bias[4] = 0.5f;
  b.init("sw", {6, 4, 3, 3}, w).init("sb", {6}, bias);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "sw", "sb"}, {"sc"}, "stem"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"sc"}, {"s"});
  add_gate(b, gc, "g_", "s", "y", 6);
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {1, true});
  const graph::Graph& g = plan.graph();
  ASSERT_EQ(g.pruning.size(), 1u);
  EXPECT_EQ(g.pruning[0].dead, 2);
  EXPECT_EQ(g.pruning[0].removed, 1);
  EXPECT_NE(g.pruning[0].kept_reason.find("read by a gated conv"), std::string::npos) << g.pruning[0].kept_reason;
  for (const auto& n : g.nodes)
    if (!n.dead && n.op == graph::OpType::SluiceGatedConv) {
      EXPECT_EQ(g.value(n.inputs[1]).shape[1], 5) << "the gated conv reads 5 of the stem's 6 channels";
      EXPECT_EQ(g.value(n.inputs[3]).shape, (Shape{gc.m, 5})) << "and its predictor too";
    }
  Outcome o = run_both(m, {gc.n, 4, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  EXPECT_LT(o.err_off, 1e-5);
  const LayerStats& l = gated_layer(o.stats);
  EXPECT_EQ(l.dense_macs, gc.n * gc.m * 6 * 9 * gc.hw * gc.hw) << "dense MACs count the model's 6 input channels";
  for (const auto& smp : l.samples) EXPECT_EQ(smp.executed_macs, gc.k * 5 * 9 * gc.hw * gc.hw);
}

// beta * mask computed as [M, N, 1] and reshaped to [N, M, 1, 1] adds beta[(n M + c) / N] to
// channel c of sample n, not beta[c]: the gate is taken without it, and the sum stays a
// generic op (a review's wrong answer: it was fused as a masked beta).
TEST(GatedConv, MaskedBetaLookAlikeOnAnotherLayoutStaysGeneric) {
  GateCase gc;
  gc.beta_scrambled = true;
  gc.n = 3;
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_TRUE(plan.graph().gates[0].recognised) << plan.graph().gates[0].reason;
  EXPECT_NE(plan.graph().gates[0].form.find("no beta"), std::string::npos) << plan.graph().gates[0].form;
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  EXPECT_LT(o.err_off, 1e-5);
}

// A gate whose g can be negative (leaky relu): a winner with g < 0 is active, but the graph's
// masked beta, beta * (pi > 0), leaves it out; so that beta stays a generic op. And
// relu(conv) * pi is no relu(conv * pi) there: that gate is not taken (a wrong answer otherwise).
TEST(GatedConv, NegativeSaliencyKeepsPiGreaterThanZeroMaskGeneric) {
  GateCase gc;
  gc.act = "LeakyRelu";
  gc.bg_offset = -0.2f;  // about a quarter of the winners negative
  gc.n = 3;
  gc.m = 16;
  gc.k = 8;
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_TRUE(plan.graph().gates[0].recognised) << plan.graph().gates[0].reason;
  EXPECT_NE(plan.graph().gates[0].form.find("no beta"), std::string::npos) << plan.graph().gates[0].form;
  EXPECT_NE(plan.graph().gates[0].form.find("leaky relu g"), std::string::npos) << plan.graph().gates[0].form;
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  EXPECT_LT(o.err_off, 1e-5);
  for (const auto& s : gated_layer(o.stats).samples) EXPECT_EQ(s.active_out_channels, gc.k);
}

// Where(pi > 0, conv, 0) with g = relu(...) that is 0 for some winners: those winners are
// suppressed (0, not conv), where conv * pi would give 0 too but a 0/1 mask of the kept channels
// would not; as many channels run as have g > 0 among the winners, and the numbers are exact.
// With a masked beta the same channels are the ones that get beta.
TEST(GatedConv, WhereOfPositiveSelectionSuppressesWinnersWhoseGIsZero) {
  for (Beta beta : {Beta::None, Beta::Masked}) {
    GateCase gc;
    gc.where_apply = true;
    gc.beta = beta;
    gc.bg_offset = -0.2f;  // relu: some g exactly 0, some among the winners
    gc.n = 4;
    gc.m = 16;
    gc.k = 12;
    Model m = gate_model(gc);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    ASSERT_EQ(plan.graph().gates.size(), 1u);
    EXPECT_TRUE(plan.graph().gates[0].recognised) << plan.graph().gates[0].reason;
    EXPECT_NE(plan.graph().gates[0].form.find("0/1 mask where g > 0"), std::string::npos) << plan.graph().gates[0].form;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5);
    EXPECT_LT(o.err_off, 1e-5);
    int64_t fewer = 0;
    for (const auto& s : gated_layer(o.stats).samples) {
      EXPECT_LE(s.active_out_channels, gc.k);
      fewer += s.active_out_channels < gc.k;
    }
    EXPECT_GT(fewer, 0) << "no sample had a winner with g = 0: the case tests nothing";
  }
}

// Where(pi > 0, conv, 0) of a sigmoid g is no gate: ORT's sigmoid is 0 below about -18, the
// exact one not until -88, so "g > 0" would keep channels there that ORT drops (a review's find);
// the generic ops run, and inspect says why.
TEST(GatedConv, WhereOfPositiveSigmoidSelectionStaysGeneric) {
  GateCase gc;
  gc.where_apply = true;
  gc.act = "Sigmoid";
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_NE(plan.graph().gates[0].reason.find("is 0 in ONNX Runtime where it is not here"), std::string::npos)
      << plan.graph().gates[0].reason;
  EXPECT_EQ(count_gated(plan), 0);
  EXPECT_LT(run_both(m, {gc.n, gc.c, gc.hw, gc.hw}).err, 1e-6);
}

// A pooled saliency times a scalar folds into the predictor's weights only for a power of two:
// (s k) W rounds as s (k W) does. With 0.1 a near tie in the top-k flipped (found by a review):
// such a gate stays unrecognised, and the numbers are the reference kernels'.
TEST(GatedConv, PoolScaleFoldsOnlyAsAPowerOfTwo) {
  for (float scale : {0.25f, 0.1f, 3.f}) {
    GateCase gc;
    gc.pool = Pool::ScaledMean;
    gc.pool_scale = scale;
    Model m = gate_model(gc);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    ASSERT_EQ(plan.graph().gates.size(), 1u);
    EXPECT_EQ(plan.graph().gates[0].recognised, scale == 0.25f) << scale << ": " << plan.graph().gates[0].reason;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5) << scale;
  }
}

// A two-layer predictor (a hidden Linear + Relu before the one that gives g) is not taken, and
// inspect says so (it said the pool was missing; found by a probe). The reference's numbers.
TEST(GatedConv, HiddenLayerPredictorIsRefusedWithItsReason) {
  GateCase gc;
  gc.hidden_layer = true;
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_NE(plan.graph().gates[0].reason.find("hidden layer"), std::string::npos) << plan.graph().gates[0].reason;
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
}

// A threshold written (g - t) >= 0 keeps what that computes: at g = t = inf the difference is
// NaN and the channel goes, where g >= t keeps it (found by a review).
TEST(GateSelect, DifferenceThresholdDropsInfinitiesAsTheGraphDoes) {
  const float inf = std::numeric_limits<float>::infinity();
  const float g[3] = {inf, inf, 1e38f};
  for (bool by_difference : {false, true}) {
    ops::gate::Spec spec;
    spec.c_out = 3;
    spec.form = graph::GateForm::ThresholdInclusive;
    spec.k = 2;
    spec.by_difference = by_difference;
    float pi[3];
    ops::gate::select(spec, g, pi);
    EXPECT_EQ(pi[0], by_difference ? 0.f : inf);
    EXPECT_EQ(pi[1], by_difference ? 0.f : inf);
    EXPECT_EQ(pi[2], 0.f);
  }
}

// The gate's selection against a stable sort, on saliencies with many ties and NaNs: the k
// kept are the largest numbers, the lower index first among equals, and a NaN ranks below every
// number (suppressed while numbers are left); the threshold is the k-th of that order. (select
// finds them with nth_element, whose scans an order broken by NaN would run out of range.)
TEST(GateSelect, KeepsTheLargestLowerIndexFirstAndNaNLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(7);
  const float pool[] = {nan, -inf, -1.f, 0.f, 0.5f, 0.5f, 2.f, inf, nan, 3.f};
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t m = 1 + static_cast<int64_t>(rng() % 97);
    std::vector<float> g(static_cast<size_t>(m));
    for (float& v : g) v = trial % 3 == 0 ? pool[rng() % 10] : static_cast<float>(rng() % 7) - 3.f;
    std::vector<int64_t> desc(static_cast<size_t>(m));
    std::iota(desc.begin(), desc.end(), 0);
    // larger first, NaN last, stable (index ascending among equals)
    std::stable_sort(desc.begin(), desc.end(), [&](int64_t a, int64_t b) {
      if (std::isnan(g[a]) || std::isnan(g[b])) return !std::isnan(g[a]) && std::isnan(g[b]);
      return g[a] > g[b];
    });
    std::vector<int64_t> asc(desc.size());  // smaller first, NaN first, index ascending among equals
    std::iota(asc.begin(), asc.end(), 0);
    std::stable_sort(asc.begin(), asc.end(), [&](int64_t a, int64_t b) {
      if (std::isnan(g[a]) || std::isnan(g[b])) return std::isnan(g[a]) && !std::isnan(g[b]);
      return g[a] < g[b];
    });
    const int64_t k = static_cast<int64_t>(rng() % static_cast<uint32_t>(m + 1));
    auto same = [](float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; };
    ops::gate::Spec spec;
    spec.c_out = m;
    spec.k = k;
    std::vector<float> pi(static_cast<size_t>(m));
    spec.form = graph::GateForm::Winners;
    ops::gate::select(spec, g.data(), pi.data());
    std::vector<float> want(static_cast<size_t>(m), 0.f);
    for (int64_t r = 0; r < k; ++r) want[desc[r]] = g[desc[r]];
    for (int64_t c = 0; c < m; ++c) ASSERT_TRUE(same(pi[c], want[c])) << "winners, m " << m << " k " << k << " c " << c;
    spec.form = graph::GateForm::Losers;
    ops::gate::select(spec, g.data(), pi.data());
    want = g;
    for (int64_t r = 0; r < m - k; ++r) want[asc[r]] = 0.f;
    for (int64_t c = 0; c < m; ++c) ASSERT_TRUE(same(pi[c], want[c])) << "losers, m " << m << " k " << k << " c " << c;
    if (k == 0) continue;
    const float thr = g[desc[k - 1]];  // NaN when fewer than k are numbers: nothing passes
    for (auto form : {graph::GateForm::Threshold, graph::GateForm::ThresholdInclusive}) {
      spec.form = form;
      ops::gate::select(spec, g.data(), pi.data());
      for (int64_t c = 0; c < m; ++c) {
        const bool keep = form == graph::GateForm::Threshold ? g[c] > thr : g[c] >= thr;
        ASSERT_TRUE(same(pi[c], keep ? g[c] : 0.f)) << "threshold, m " << m << " k " << k << " c " << c;
      }
    }
  }
}

// g = Gelu(z), the opset-20 op, exact and with approximate="tanh" (torch's F.gelu below opset
// 20, the erf written out, is in test_fbs_models.py): recognised, and equal to the generic ops.
TEST(GatedConv, GeluOpSaliency) {
  for (bool tanh : {false, true}) {
    GateCase gc;
    gc.act = "Gelu";
    gc.bg_offset = 0.2f;  // some g < 0 (Gelu's minimum is about -0.17)
    gc.m = 16;
    gc.k = 6;
    OnnxBuilder b(20);
    b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
    add_gate(b, gc, "g_", "x", "y", gc.c);
    for (auto& n : *b.proto().mutable_graph()->mutable_node())
      if (n.op_type() == "Gelu" && tanh) OnnxBuilder::attr_str(n, "approximate", "tanh");
    b.output("y");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, {1, true});
    ASSERT_EQ(plan.graph().gates.size(), 1u);
    EXPECT_TRUE(plan.graph().gates[0].recognised) << plan.graph().gates[0].reason;
    EXPECT_NE(plan.graph().gates[0].form.find(tanh ? "gelu (tanh approximation) g" : "gelu g"), std::string::npos)
        << plan.graph().gates[0].form;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5) << tanh;
    EXPECT_LT(o.err_off, 1e-5) << tanh;
  }
}

TEST(GatedConv, ReluBeforeGateWithNegativeSaliencyIsNotTaken) {
  for (const char* act : {"LeakyRelu", "Elu", "Tanh", ""}) {
    GateCase gc;
    gc.act = act;
    gc.bg_offset = -0.2f;
    gc.relu_first = true;
    gc.beta = Beta::None;
    gc.m = 16;
    gc.k = 8;
    Model m = gate_model(gc);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    ASSERT_EQ(plan.graph().gates.size(), 1u) << act;
    EXPECT_FALSE(plan.graph().gates[0].recognised) << act;
    EXPECT_NE(plan.graph().gates[0].reason.find("can be negative"), std::string::npos) << plan.graph().gates[0].reason;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5) << act;
  }
}

TEST(GatedConv, TiesKeepTheLowerIndexAsOnnxTopK) {
  GateCase gc;
  gc.tied_gate = true;
  gc.beta = Beta::None;
  gc.relu = false;
  Model m = gate_model(gc);
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  // All g equal: channels 0..k-1 win, the rest are exactly zero.
  const float* y = o.y.data<float>();
  const int64_t plane = gc.hw * gc.hw;
  for (int64_t ch = 0; ch < gc.m; ++ch) {
    double mag = 0;
    for (int64_t i = 0; i < plane; ++i) mag += std::fabs(y[ch * plane + i]);
    if (ch < gc.k) EXPECT_GT(mag, 0) << "channel " << ch;
    else EXPECT_EQ(mag, 0) << "channel " << ch;
  }
}

// The second gate's max or L2 pool reads the first gate's suppressed channels as the zeros
// they are (the fast kernel skips them), and equals the generic ops.
TEST(GatedConv, ChainedGatesWithMaxAndL2Pools) {
  for (Pool pool : {Pool::GlobalMax, Pool::ReduceL2}) {
    GateCase gc;
    gc.pool = pool;
    gc.beta = Beta::None;
    gc.relu = false;  // negative outputs: a max over a channel can be below the suppressed channels' 0
    Model m = gate_model(gc, 2);
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5);
    EXPECT_LT(o.err_off, 1e-5);
    EXPECT_EQ(gated_layer(o.stats, 1).samples[0].active_in_channels, gc.k);
  }
}

// Four chained gates of every form that applies its mask with Where: each must be found (a
// probe found only the first of a chain: the search for the TopK behind a Mul went depth first up
// g's branch, through the gates before it, and gave up before the TopK behind the condition).
TEST(GateRecognition, EveryGateOfAChainIsFound) {
  for (bool masked_fill : {false, true}) {
    GateCase gc;
    gc.form = Form::ThresholdWhereGather;
    gc.masked_fill = masked_fill;
    gc.m = gc.c;
    Model m = gate_model(gc, 4);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    ASSERT_EQ(plan.graph().gates.size(), 4u) << "masked_fill " << masked_fill;
    for (const auto& r : plan.graph().gates) EXPECT_TRUE(r.recognised) << r.conv << ": " << r.reason;
    EXPECT_EQ(count_gated(plan), 4);
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5);
  }
}

TEST(GatedConv, ChainedGatesReadOnlyTheActiveInputChannels) {
  GateCase gc;
  gc.beta = Beta::Masked;
  Model m = gate_model(gc, 2);
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  const LayerStats& second = gated_layer(o.stats, 1);
  for (const auto& s : second.samples) {
    EXPECT_EQ(s.active_in_channels, gc.k);
    EXPECT_EQ(s.executed_macs, gc.k * gc.k * 9 * gc.hw * gc.hw);
  }
}

// On small maps the compact conv runs on the direct kernel or on oneDNN, whichever measures
// faster: both must give the same output for the input activities a gated producer reports
// (none, some channels of a dense tensor, a compact tensor), stride 1 and 2, batch 2, writing
// a compact output (read by the next gate) or a dense one (the graph's output). The same for
// the oneDNN convs on oneDNN's blocked activation layout (chosen by measurement on large layers).
TEST(GatedConv, DirectAndOneDnnSmallMapPathsAgree) {
  for (int64_t stride : {1, 2}) {
    GateCase gc;
    gc.c = 24, gc.m = 20, gc.hw = 11, gc.k = 9;
    OnnxBuilder b;
    b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
    add_gate(b, gc, "g0_", "x", "h0", gc.c);
    gc.c = gc.m;
    gc.stride = stride;  // the middle conv: phase-split planes when strided
    add_gate(b, gc, "g1_", "h0", "h1", gc.c);
    gc.stride = 1;
    add_gate(b, gc, "g2_", "h1", "y", gc.c);
    b.output("y");
    Model m = b.load("gate_paths.onnx");
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Graph& g = plan.graph();
    std::vector<const graph::Node*> gated;
    for (const auto& n : g.nodes)
      if (n.op == graph::OpType::SluiceGatedConv) gated.push_back(&n);
    ASSERT_EQ(gated.size(), 3u);
    for (const graph::Node* node : {gated[1], gated[2]}) {
      auto direct = ops::make_gated_conv_direct(g, *node), onednn = ops::make_gated_conv_onednn(g, *node);
      ASSERT_NE(direct, nullptr);
      ASSERT_NE(onednn, nullptr);
      EXPECT_NE(direct->name().find(":direct"), std::string::npos);
      EXPECT_EQ(onednn->name().find(":direct"), std::string::npos);
      const bool compact_out = direct->name().find("compact-out") != std::string::npos;
      EXPECT_EQ(compact_out, node == gated[1]) << "the middle gate's output is read by a gate only";
      ops::ChannelActivity some, compact;
      const std::vector<int32_t> active = {0, 3, 4, 7, 11, 12, 15, 16, 19};
      some.samples = compact.samples = {active, {1, 2, 5, 6, 8, 9, 10, 13, 18}};
      compact.compact = true;
      const ops::ChannelActivity* acts[] = {nullptr, &some, &compact};
      // The direct kernel, and the oneDNN convs on the blocked activation layout where oneDNN
      // has one, each against oneDNN on NHWC.
      auto blocked = ops::make_gated_conv_blocked(g, *node);
      std::vector<std::pair<std::string, const ops::Kernel*>> others{{"direct", direct.get()}};
      if (blocked) others.emplace_back("blocked", blocked.get());
      for (const auto& [name, other] : others)
        for (const ops::ChannelActivity* act : acts) {
          const std::string what = name + " vs onednn, stride " + std::to_string(stride) +
                                   (compact_out ? ", compact output" : ", dense output") +
                                   (act ? act->compact ? ", compact input" : ", some channels" : ", dense input");
          if (!compact_out) {
            EXPECT_LT(max_kernel_diff(*other, *onednn, g, *node, 4, act), 1e-4) << what;
            continue;
          }
          // A compact output holds, per sample, the listed channels of each pixel, packed: the
          // two kernels must list the same channels and agree on those values.
          ops::RandomNodeData dd(g, *node, 4), dn(g, *node, 4);
          ops::ChannelActivity out_d, out_n;
          ops::KernelArgs ad = dd.args(*other), an = dn.args(*onednn);
          ad.in_activity = an.in_activity = act;
          ad.out_activity = &out_d, an.out_activity = &out_n;
          other->run(ad);
          onednn->run(an);
          ASSERT_TRUE(out_d.compact && out_n.compact) << what;
          ASSERT_EQ(out_d.samples, out_n.samples) << what;
          const Shape& ys = g.value(node->outputs[0]).shape;
          const int64_t pixels = ys[2] * ys[3];
          double worst = 0;
          for (int64_t s = 0; s < ys[0]; ++s)
            for (int64_t i = 0; i < pixels * static_cast<int64_t>(out_d.samples[static_cast<size_t>(s)].size()); ++i) {
              const size_t at = static_cast<size_t>(s * pixels * ys[1] + i);
              const double d = std::fabs(static_cast<double>(dd.output()[at]) - dn.output()[at]);
              worst = std::isnan(d) ? INFINITY : std::max(worst, d);  // NaN: a value never written
            }
          EXPECT_LT(worst, 1e-4) << what;
        }
    }
  }
}

// Depthwise gated convs (group = C = M; MobileNet's 3x3 convs): output channel o reads input
// channel o alone, so a chained gate computes the channels active on both sides, and a selected
// channel whose input the gate before suppressed is its conv's bias (then gated). Three gates in a
// chain (compact output into compact input), each form of beta and selection, stride 1 and 2,
// against the generic ops; executed MACs count the channels computed, at most min(in, out).
TEST(GatedConv, DepthwiseChainComputesTheChannelsActiveOnBothSides) {
  for (Beta beta : {Beta::Masked, Beta::Unmasked, Beta::None})
    for (Form form : {Form::Winners, Form::Losers, Form::Threshold})
      for (int64_t stride : {1, 2}) {
        GateCase gc;
        gc.c = gc.m = gc.group = 12;
        gc.k = 5;
        gc.hw = 9;
        gc.beta = beta;
        gc.form = form;
        gc.stride = stride;
        const std::string what = "beta " + std::to_string(static_cast<int>(beta)) + ", form " +
                                 std::to_string(static_cast<int>(form)) + ", stride " + std::to_string(stride);
        Model m = gate_model(gc, 3);
        runtime::Plan plan(*m.graph(), {}, {1, true});
        for (const auto& r : plan.graph().gates) EXPECT_TRUE(r.recognised) << what << ": " << r.reason;
        EXPECT_EQ(count_gated(plan), 3) << what;
        Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
        EXPECT_LT(o.err, 1e-5) << what;
        EXPECT_LT(o.err_off, 1e-5) << what;
        int64_t fewer = 0;  // samples of the later gates that computed fewer channels than they kept
        for (size_t i = 0; i < 3; ++i) {
          const LayerStats& l = gated_layer(o.stats, i);
          for (const auto& s : l.samples) {
            const int64_t per_channel = s.dense_macs / gc.m;
            EXPECT_EQ(s.dense_macs % gc.m, 0) << what;
            EXPECT_EQ(s.executed_macs % per_channel, 0) << what;
            EXPECT_LE(s.executed_macs / per_channel, std::min(s.active_in_channels, s.active_out_channels)) << what;
            EXPECT_EQ(s.active_out_channels, gc.k) << what;
            if (i == 0) {
              EXPECT_EQ(s.executed_macs, gc.k * per_channel) << what;  // every input active
            }
            fewer += s.executed_macs / per_channel < s.active_out_channels;
          }
        }
        // Unmasked beta: most suppressed channels are relu(beta) > 0 downstream, so active.
        if (beta == Beta::Masked) {
          EXPECT_GT(fewer, 0) << what << ": a kept channel read a suppressed one";
        }
      }
}

TEST(GatedConv, UnmaskedBetaMakesSuppressedChannelsNonZeroDownstream) {
  GateCase gc;
  gc.beta = Beta::Unmasked;  // suppressed channels equal relu(beta) > 0 for most channels
  Model m = gate_model(gc, 2);
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  const LayerStats& second = gated_layer(o.stats, 1);
  for (const auto& s : second.samples) EXPECT_GT(s.active_in_channels, gc.k);
}

TEST(GatedConv, DensityOverrideLowersKAndMatchesTheModelExportedThere) {
  GateCase full;
  full.k = full.m;
  GateCase half = full;
  half.k = full.m / 2;
  Model mf = gate_model(full), mh = gate_model(half);  // same seeds: same weights
  SessionOptions o;
  o.threads = 1;
  o.density = 0.5f;
  Session overridden(mf, o), ref(mh, {1, false});
  Tensor x = random_tensor({full.n, full.c, full.hw, full.hw}, 7);
  RunStats st;
  auto a = overridden.run({{"x", x}}, &st);
  auto r = ref.run({{"x", x}});
  EXPECT_LT(normalized_error(a["y"], r["y"]), 1e-5);
  for (const auto& s : gated_layer(st).samples) EXPECT_EQ(s.active_out_channels, half.k);
  // An override never raises k.
  o.density = 1.f;
  Session raised(mh, o);
  raised.run({{"x", x}}, &st);
  for (const auto& s : gated_layer(st).samples) EXPECT_EQ(s.active_out_channels, half.k);
}

// A density override on a gate whose top-k the model also uses elsewhere (here the saliency
// pi is a graph output; a probe also had its mask added to the output outside the gate): that
// part would keep the file's k while the gated conv keeps fewer. Refused, naming the gate;
// without an override, or one that does not lower k, the model runs.
TEST(GatedConv, DensityOverrideRefusedWhereTheTopKIsUsedOutsideTheGate) {
  GateCase gc;
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
  add_gate(b, gc, "g_", "x", "y", gc.c);
  b.output("y");
  b.output("g_pi");
  Model m = b.load("gate_pi_out.onnx");
  SessionOptions o;
  o.threads = 1;
  o.density = 0.25f;
  try {
    Session s(m, o);
    ADD_FAILURE() << "a density override that would mix two k was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const std::string& part : {std::string("--density lowers the gate of conv 'g_Conv'"),
                                    std::string("also used outside the gated conv"), "k=" + std::to_string(gc.k)})
      EXPECT_NE(what.find(part), std::string::npos) << what;
  }
  Session plain(m, {1, true});
  Tensor x = random_tensor({gc.n, gc.c, gc.hw, gc.hw}, 7);
  auto out = plain.run({{"x", x}});
  EXPECT_EQ(out.count("g_pi"), 1u);
  o.density = 1.f;  // does not lower k
  Session same(m, o);
  Session ref(m, {1, false});
  EXPECT_LT(normalized_error(same.run({{"x", x}})["y"], ref.run({{"x", x}})["y"]), 1e-5);
}

// The refusal above is for this gate's own TopK only: a look-alike gate upstream, whose TopK
// stays a generic op that the model needs, is not taken for the recognised gate's (the search
// went up the saliency into the layers before and refused these models, naming the wrong gate).
TEST(GatedConv, DensityOverrideNotRefusedForAnotherGatesTopKUpstream) {
  for (Form form : {Form::WinnersMask, Form::Threshold, Form::ThresholdLess, Form::ThresholdWhereGather, Form::Winners}) {
    GateCase up, down;
    up.form = Form::ThresholdMeanOfTopK;  // not a gate (the mean of the top k is no k-th value)
    down.form = form;
    OnnxBuilder b;
    b.input("x", {up.n, up.c, up.hw, up.hw});
    add_gate(b, up, "a_", "x", "h", up.c);
    add_gate(b, down, "b_", "h", "y", up.m);
    b.output("y");
    Model m = b.load("gate_after_lookalike.onnx");
    SessionOptions o;
    o.threads = 1;
    o.density = 0.25f;
    Session s(m, o);
    RunStats st;
    s.run({{"x", random_tensor({up.n, up.c, up.hw, up.hw}, 5)}}, &st);
    // ceil(0.25 x 8) = 2 channels kept (the threshold forms' K becomes 3, which keeps 2).
    for (const auto& x : gated_layer(st).samples) EXPECT_EQ(x.active_out_channels, 2);
  }
}

// zeros.scatter_add(1, topk.indices, topk.values), exported at opset 16+ as ScatterElements with
// reduction "add": TopK's indices are distinct, so it writes the winners as the plain scatter
// does, and is the same gate; so is index_put's ScatterND with "add" into zeros (values or ones). Other reductions, and an addition into g (the losers form with
// "add" leaves g as it is), are not gates and run as the model's ops.
TEST(GatedConv, ScatterAddIntoZerosIsTheWinnersGate) {
  struct Case {
    Form form;
    const char* reduction;
    bool gate;
  };
  for (const Case& c : {Case{Form::Winners, "add", true}, Case{Form::Winners, "mul", false},
                        Case{Form::Winners, "max", false}, Case{Form::Losers, "add", false},
                        Case{Form::IndexPutValues, "add", true}, Case{Form::IndexPutMask, "add", true},
                        Case{Form::IndexPutValues, "mul", false}}) {
    GateCase gc;
    gc.form = c.form;
    gc.reduction = c.reduction;
    OnnxBuilder b(16);
    b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
    add_gate(b, gc, "g_", "x", "y", gc.c);
    b.output("y");
    Model m = b.load("gate_scatter_reduction.onnx");
    runtime::Plan plan(*m.graph(), {}, {1, true});
    EXPECT_EQ(count_gated(plan), c.gate ? 1 : 0) << c.reduction;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5) << c.reduction;
  }
}

// Network slimming inside a gated conv, with the predictor rows left as they are (another
// training recipe than models/train_slimming.py's, which zeroes them too): channels 1 and 5 have
// an all-zero filter and bias, and a predictor bias that puts them in every top-k. A selected
// pruned channel then gives act(pi * 0 + beta), its suppressed value, so it runs no MACs. With a
// masked beta that is non-zero (channel 1 in the second model) it gives act(beta) selected and
// act(0) suppressed: that channel is computed.
TEST(GatedConv, SelectedPrunedChannelsRunNoMacs) {
  for (Beta beta : {Beta::None, Beta::Masked}) {
    GateCase gc;
    gc.beta = beta;
    OnnxBuilder b;
    b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
    add_gate(b, gc, "g_", "x", "y", gc.c);
    b.output("y");
    auto tensor = [&](const std::string& name) -> onnx::TensorProto& {
      for (auto& t : *b.proto().mutable_graph()->mutable_initializer())
        if (t.name() == name) return t;
      throw std::runtime_error("no initializer " + name);
    };
    for (int64_t o : {1, 5}) {
      for (int64_t i = 0; i < gc.c * 9; ++i) tensor("g_w").set_float_data(static_cast<int>(o * gc.c * 9 + i), 0.f);
      tensor("g_cb").set_float_data(static_cast<int>(o), 0.f);
      tensor("g_bg").set_float_data(static_cast<int>(o), 100.f);  // always among the winners
    }
    if (beta == Beta::Masked) {
      tensor("g_beta").set_float_data(1, 0.7f);
      tensor("g_beta").set_float_data(5, 0.f);
    }
    Model m = b.load("slimmed_gate.onnx");
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5);
    EXPECT_LT(o.err_off, 1e-5);
    const int64_t computed = beta == Beta::Masked ? gc.k - 1 : gc.k - 2;
    const LayerStats& l = gated_layer(o.stats);
    ASSERT_EQ(l.samples.size(), static_cast<size_t>(gc.n));
    for (const auto& smp : l.samples) {
      EXPECT_EQ(smp.active_out_channels, computed);
      EXPECT_EQ(smp.executed_macs, computed * gc.c * 9 * gc.hw * gc.hw);
    }
  }
}

TEST(GatedConv, GatingOffExecutesEveryMac) {
  GateCase gc;
  Model m = gate_model(gc);
  SessionOptions off;
  off.threads = 1;
  off.gating = false;
  RunStats st;
  Session(m, off).run({{"x", random_tensor({gc.n, gc.c, gc.hw, gc.hw})}}, &st);
  EXPECT_EQ(st.executed_macs, st.dense_macs);
  EXPECT_EQ(gated_layer(st).executed_macs, gc.n * gc.m * gc.c * 9 * gc.hw * gc.hw);
}

// A plain conv behind a gate (FBS code that gates some convs only) reads the gate's channel
// activity: passes::read_gated_inputs makes it a SluiceGatedConv with no gate of its own.
// `via`: what stands between them ("" directly, "MaxPool", "Relu", a zero "Pad"); `residual`: the conv's
// output plus x, then Relu (fused into it); `zero_weights`: that share of its weights zeroed.
struct PlainAfterGate {
  // The leading fields in order, as the cases list them (act and gate_after are set by name).
  PlainAfterGate(std::string via_ = "", bool residual_ = false, double zero_weights_ = 0, int64_t k_ = 4,
                 int64_t m2_ = 5, int64_t kernel_ = 3, int64_t stride_ = 1, int64_t dilation_ = 1)
      : via(std::move(via_)), residual(residual_), zero_weights(zero_weights_), k(k_), m2(m2_), kernel(kernel_),
        stride(stride_), dilation(dilation_) {}
  std::string via;
  bool residual;
  double zero_weights;
  int64_t k;
  int64_t m2;  // the plain conv's outputs (residual: x's channel count)
  int64_t kernel, stride, dilation;  // the plain conv's (padded to keep the map when stride 1)
  std::string act;          // after the plain conv: "", "LeakyRelu" (0.1) or "Clip" (-0.5, 0.5)
  bool gate_after = false;  // the plain conv's only reader is another gate (it then writes compact)
};

Model plain_after_gate_model(const GateCase& gc, const PlainAfterGate& pa,
                             const std::function<void(OnnxBuilder&)>& edit = {}) {
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
  add_gate(b, gc, "g_", "x", "h", gc.c);
  std::string in = "h";
  if (pa.via == "MaxPool") {
    auto& mp = b.node("MaxPool", {"h"}, {"hp"});
    OnnxBuilder::attr_ints(mp, "kernel_shape", {3, 3});
    OnnxBuilder::attr_ints(mp, "pads", {1, 1, 1, 1});
    in = "hp";
  } else if (pa.via == "Relu") {
    b.node("Relu", {"h"}, {"hr"});
    in = "hr";
  } else if (pa.via == "Pad" || pa.via == "PadOnes") {  // on top and on the right (the conv's pads keep the map)
    b.init_i64("padding", {8}, {0, 0, 1, 0, 0, 0, 0, 1});
    if (pa.via == "PadOnes") {
      b.init("one", {}, {1.f});
      b.node("Pad", {"h", "padding", "one"}, {"hpad"});
    } else {
      b.node("Pad", {"h", "padding"}, {"hpad"});
    }
    in = "hpad";
  }
  const int64_t m2 = pa.residual ? gc.c : pa.m2;
  b.init_random("pw", {m2, gc.m, pa.kernel, pa.kernel}, 0.3f).init_random("pb", {m2}, 0.1f);
  if (pa.zero_weights > 0)
    for (auto& t : *b.proto().mutable_graph()->mutable_initializer())
      if (t.name() == "pw")
        for (int i = 0; i < t.float_data_size(); ++i)
          if ((i * 7919 % 100) < pa.zero_weights * 100) t.set_float_data(i, 0.f);
  const std::string plain_out = pa.residual || !pa.act.empty() || pa.gate_after ? "p" : "y";
  auto& plain = b.node("Conv", {in, "pw", "pb"}, {plain_out}, "plain");
  const int64_t pad = (pa.kernel - 1) * pa.dilation / 2;
  if (pa.via == "Pad" || pa.via == "PadOnes")
    OnnxBuilder::attr_ints(plain, "pads", {0, pad, pad, 0});
  else
    OnnxBuilder::attr_ints(plain, "pads", {pad, pad, pad, pad});
  if (pa.stride != 1) OnnxBuilder::attr_ints(plain, "strides", {pa.stride, pa.stride});
  if (pa.dilation != 1) OnnxBuilder::attr_ints(plain, "dilations", {pa.dilation, pa.dilation});
  std::string cur = plain_out;
  if (pa.residual) {
    b.node("Add", {"p", "x"}, {"s"});
    b.node("Relu", {"s"}, {"r"});
    cur = "r";
  }
  if (pa.act == "LeakyRelu") {
    OnnxBuilder::attr_float(b.node("LeakyRelu", {cur}, {"a"}), "alpha", 0.1f);
    cur = "a";
  } else if (pa.act == "Clip") {
    b.init("lo", {}, {-0.5f}).init("hi", {}, {0.5f});
    b.node("Clip", {cur, "lo", "hi"}, {"a"});
    cur = "a";
  }
  if (pa.gate_after) {
    GateCase g2 = gc;
    add_gate(b, g2, "g2_", cur, "y", m2);
  } else if (cur != "y") {
    b.node("Identity", {cur}, {"y"});
  }
  b.output("y");
  if (edit) edit(b);
  return b.load("plain_after_gate.onnx");
}

const graph::Node* plain_node(const runtime::Plan& plan) {
  for (const auto& st : plan.steps())
    if (plan.graph().node(st.node).name == "plain") return &plan.graph().node(st.node);
  return nullptr;
}

TEST(GatedInput, PlainConvBehindAGateReadsOnlyTheActiveChannels) {
  for (const PlainAfterGate& pa : {PlainAfterGate{""}, PlainAfterGate{"MaxPool"}, PlainAfterGate{"Relu"}, PlainAfterGate{"Pad"},
                                   PlainAfterGate{"", true}, PlainAfterGate{"MaxPool", true}}) {
    GateCase gc;
    gc.k = pa.k;
    const std::string what = "via '" + pa.via + "'" + (pa.residual ? ", residual" : "");
    Model m = plain_after_gate_model(gc, pa);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Node* n = plain_node(plan);
    ASSERT_NE(n, nullptr) << what;
    ASSERT_EQ(n->op, graph::OpType::SluiceGatedConv) << what;
    EXPECT_EQ(n->p<graph::GatedConvParams>().form, graph::GateForm::All) << what;
    EXPECT_EQ(n->p<graph::GatedConvParams>().fused_sum, pa.residual) << what;
    Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
    EXPECT_LT(o.err, 1e-5) << what;
    EXPECT_LT(o.err_off, 1e-5) << what;
    const LayerStats& l = gated_layer(o.stats, 1);
    EXPECT_EQ(l.name, "plain") << what;
    EXPECT_EQ(l.gate_macs, 0) << what;
    const int64_t m2 = pa.residual ? gc.c : pa.m2;
    ASSERT_EQ(l.samples.size(), static_cast<size_t>(gc.n)) << what;
    for (const auto& smp : l.samples) {
      EXPECT_EQ(smp.active_in_channels, gc.k) << what;
      EXPECT_EQ(smp.active_out_channels, m2) << what;
      EXPECT_EQ(smp.executed_macs, m2 * gc.k * 9 * gc.hw * gc.hw) << what;
    }
  }
}

// A plain depthwise conv behind a gate reads only the channels the gate kept: the others are
// zero, so their outputs are the conv's bias, computed by no MAC. Not a depthwise conv (group 2
// of 8): not gated, with the reason, and run by the generic ops.
TEST(GatedInput, PlainDepthwiseConvBehindAGateComputesOnlyTheKeptChannels) {
  GateCase gc;
  gc.m = 8;
  gc.k = 3;
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
  add_gate(b, gc, "g_", "x", "h", gc.c);
  b.init_random("dw", {gc.m, 1, 3, 3}, 0.3f).init_random("db", {gc.m}, 0.2f);
  auto& dw = b.node("Conv", {"h", "dw", "db"}, {"y"}, "plain");
  OnnxBuilder::attr_ints(dw, "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_int(dw, "group", gc.m);
  b.output("y");
  Model m = b.load("plain_depthwise.onnx");
  runtime::Plan plan(*m.graph(), {}, {1, true});
  const graph::Node* n = plain_node(plan);
  ASSERT_NE(n, nullptr);
  ASSERT_EQ(n->op, graph::OpType::SluiceGatedConv);
  EXPECT_EQ(n->p<graph::GatedConvParams>().form, graph::GateForm::All);
  Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(o.err, 1e-5);
  EXPECT_LT(o.err_off, 1e-5);
  const LayerStats& l = gated_layer(o.stats, 1);
  for (const auto& s : l.samples) {
    EXPECT_EQ(s.active_in_channels, gc.k);
    EXPECT_EQ(s.active_out_channels, gc.m);
    EXPECT_EQ(s.executed_macs, gc.k * 9 * gc.hw * gc.hw);
  }

  GateCase grouped;
  grouped.c = grouped.m = 8;
  grouped.group = 2;
  Model mg = gate_model(grouped);
  runtime::Plan pg(*mg.graph(), {}, {1, true});
  ASSERT_EQ(pg.graph().gates.size(), 1u);
  EXPECT_FALSE(pg.graph().gates[0].recognised);
  EXPECT_NE(pg.graph().gates[0].reason.find("other than depthwise"), std::string::npos) << pg.graph().gates[0].reason;
  EXPECT_LT(run_both(mg, {grouped.n, grouped.c, grouped.hw, grouped.hw}).err, 1e-5);
}

// A weight of inf or NaN: the gated conv's direct and input-list kernels, which pad a copy of
// the input with zeros (inf x 0 = NaN at the borders, where oneDNN skips the padded taps), do
// not take the node; oneDNN on the gathered weights still does. Finite weights: both apply.
TEST(GatedInput, NonFiniteWeightsStayOnOneDnn) {
  GateCase gc;
  gc.c = 20, gc.m = 24, gc.hw = 11, gc.k = 9;
  Model m = plain_after_gate_model(gc, PlainAfterGate{});
  runtime::Plan plan(*m.graph(), {}, {1, true});
  const graph::Node* node = plain_node(plan);
  ASSERT_NE(node, nullptr);
  ASSERT_EQ(node->op, graph::OpType::SluiceGatedConv);
  const graph::Graph& g = plan.graph();
  ASSERT_NE(ops::make_gated_conv_input_list(g, *node), nullptr);
  ASSERT_NE(ops::make_gated_conv_direct(g, *node), nullptr);
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    const graph::Graph gg = with_constant_element(g, *node, 1, 7, bad);
    const graph::Node& nn = gg.node(static_cast<graph::NodeId>(node - g.nodes.data()));
    EXPECT_EQ(ops::make_gated_conv_input_list(gg, nn), nullptr) << bad;
    EXPECT_EQ(ops::make_gated_conv_direct(gg, nn), nullptr) << bad;
    EXPECT_NE(ops::make_gated_conv_onednn(gg, nn), nullptr) << bad;
  }
  EXPECT_NE(ops::make_gated_conv_direct(g, *node), nullptr) << "the plan's own weights stay finite";
}

// Every path of such a conv (the input-list kernel, the direct kernel on small maps, oneDNN on
// gathered weights, and on oneDNN's blocked form where it has one) agrees with oneDNN on NHWC for
// every input activity: strides, dilations, 1x1 and 5x5 kernels, output counts that fill no
// vector or chunk, a fused residual sum. One of them also ran against the generic ops above.
TEST(GatedInput, EveryPathAgrees) {
  GateCase gc;
  gc.c = 20, gc.m = 24, gc.hw = 11, gc.k = 9;
  PlainAfterGate cases[] = {{"", false}, {"", true}, {"MaxPool", false, 0, 9, 70}, {"", false, 0, 9, 7, 1},
                            {"", false, 0, 9, 33, 5}, {"", false, 0, 9, 16, 3, 2}, {"", false, 0, 9, 40, 3, 1, 2}};
  for (const PlainAfterGate& pa : cases) {
    const std::string what = "via '" + pa.via + "'" + (pa.residual ? ", residual" : "") + ", m " +
                             std::to_string(pa.m2) + ", " + std::to_string(pa.kernel) + "x" + std::to_string(pa.kernel) +
                             " stride " + std::to_string(pa.stride) + " dilation " + std::to_string(pa.dilation);
    Model m = plain_after_gate_model(gc, pa);
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Node* node = plain_node(plan);
    ASSERT_NE(node, nullptr) << what;
    ASSERT_EQ(node->op, graph::OpType::SluiceGatedConv) << what;
    const graph::Graph& g = plan.graph();
    auto onednn = ops::make_gated_conv_onednn(g, *node);
    ASSERT_NE(onednn, nullptr) << what;
    EXPECT_EQ(onednn->name().rfind("gated-input:onednn", 0), 0u) << onednn->name();
    std::vector<std::pair<std::string, std::unique_ptr<ops::Kernel>>> others;
    others.emplace_back("input-list", ops::make_gated_conv_input_list(g, *node));
    ASSERT_NE(others.back().second, nullptr) << what;
    EXPECT_NE(others.back().second->name().find(":input-list"), std::string::npos);
    if (auto direct = ops::make_gated_conv_direct(g, *node)) others.emplace_back("direct", std::move(direct));
    if (auto blocked = ops::make_gated_conv_blocked(g, *node)) others.emplace_back("blocked", std::move(blocked));
    ops::ChannelActivity some, compact, all_but_one, none;
    some.samples = compact.samples = {{0, 3, 4, 7, 11, 12, 15, 16, 23}, {1, 2, 5, 6, 8, 9, 10, 13, 18}};
    compact.compact = true;
    std::vector<int32_t> most;
    for (int32_t i = 1; i < gc.m; ++i) most.push_back(i);  // 23 of 24: dense from 85%
    all_but_one.samples = {most, most};
    none.samples = {{}, {2}};
    for (const auto& [name, other] : others)
      for (const ops::ChannelActivity* act :
           std::vector<const ops::ChannelActivity*>{nullptr, &some, &compact, &all_but_one, &none})
        EXPECT_LT(max_kernel_diff(*other, *onednn, g, *node, 4, act), 1e-4)
            << name << ", " << what << ", activity "
            << (act == nullptr ? "none given" : act == &some ? "some" : act == &compact ? "compact"
                                              : act == &none ? "(none, one)" : "all but one");
  }
}

// Its fused activation, whatever it is, on every path, also where it writes a compact output
// for the next gate: inputs where the gate before keeps some channels, and where it suppresses
// them all (no active input: every output is act(bias)).
TEST(GatedInput, AnyFusedActivationOnACompactOutput) {
  for (const char* act : {"LeakyRelu", "Clip"})
    for (bool silenced : {false, true}) {
      GateCase gc;
      PlainAfterGate pa;
      pa.act = act;
      pa.gate_after = true;
      pa.m2 = 7;
      const std::string what = std::string(act) + (silenced ? ", every g = 0" : "");
      Model m = plain_after_gate_model(gc, pa, [&](OnnxBuilder& b) {
        for (auto& t : *b.proto().mutable_graph()->mutable_initializer()) {
          if (t.name() == "pb")  // biases of both signs, beyond the Clip: act(bias) != bias
            for (int i = 0; i < t.float_data_size(); ++i) t.set_float_data(i, i % 2 ? 1.5f : -1.5f);
          if (t.name() == "g_bg" && silenced)
            for (int i = 0; i < t.float_data_size(); ++i) t.set_float_data(i, -100.f);
        }
      });
      runtime::Plan plan(*m.graph(), {}, {1, true});
      bool compact = false;
      for (const auto& st : plan.steps())
        if (plan.graph().node(st.node).name == "plain") compact = st.kernel->name().find("compact-out") != std::string::npos;
      EXPECT_TRUE(compact) << what;
      Outcome o = run_both(m, {gc.n, gc.c, gc.hw, gc.hw});

      EXPECT_LT(o.err, 1e-5) << what;
      EXPECT_LT(o.err_off, 1e-5) << what;
    }
}

TEST(GatedInput, StaysPlainWhereEveryChannelIsActiveOrTheWeightsAreSparse) {
  GateCase gc;
  struct Case {
    const char* what;
    PlainAfterGate pa;
    std::function<void(GateCase&)> gate;
    bool gating = true;
  };
  const Case cases[] = {
      {"k = C_out", {"", false, 0, gc.m}, [](GateCase&) {}},
      {"sparse weights", {"", false, 0.7}, [](GateCase&) {}},
      {"padded with ones", {"PadOnes"}, [](GateCase&) {}},  // a suppressed channel is 1 at the border
      {"gating off", {""}, [](GateCase&) {}, false},
      // An unmasked beta: every suppressed channel is relu(beta) > 0.
      {"unmasked positive beta", {""}, [](GateCase& g) { g.beta = Beta::Unmasked; }},
  };
  for (const Case& c : cases) {
    GateCase g = gc;
    g.k = c.pa.k;
    c.gate(g);
    Model m = plain_after_gate_model(g, c.pa, [](OnnxBuilder& b) {
      for (auto& t : *b.proto().mutable_graph()->mutable_initializer())
        if (t.name() == "g_beta")
          for (int i = 0; i < t.float_data_size(); ++i) t.set_float_data(i, 0.25f + 0.1f * static_cast<float>(i));
    });
    SessionOptions so;
    so.threads = 1;
    so.gating = c.gating;
    runtime::Plan plan(*m.graph(), {}, so);
    const graph::Node* n = plain_node(plan);
    ASSERT_NE(n, nullptr) << c.what;
    EXPECT_EQ(n->op, graph::OpType::Conv) << c.what;
  }
  // Behind a gated conv with a fused residual sum (an FBS ResNet block's second conv, then the
  // shortcut and Relu): every channel of the sum is active.
  {
    GateCase r = gc;
    r.relu = false;
    r.m = r.c;
    OnnxBuilder b;
    b.input("x", {r.n, r.c, r.hw, r.hw});
    add_gate(b, r, "g_", "x", "h", r.c);
    b.node("Add", {"h", "x"}, {"s"});
    b.node("Relu", {"s"}, {"sr"});
    b.init_random("pw", {5, r.c, 3, 3}, 0.3f);
    OnnxBuilder::attr_ints(b.node("Conv", {"sr", "pw"}, {"y"}, "plain"), "pads", {1, 1, 1, 1});
    b.output("y");
    Model m = b.load("residual_then_plain.onnx");
    runtime::Plan plan(*m.graph(), {}, {1, true});
    const graph::Node* n = plain_node(plan);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->op, graph::OpType::Conv) << "behind a gated residual sum";
    EXPECT_EQ(graph::gated_activity_source(plan.graph(), n->inputs[0]), nullptr);
    int fused = 0;
    for (const auto& st : plan.steps()) {
      const graph::Node& gn = plan.graph().node(st.node);
      fused += gn.op == graph::OpType::SluiceGatedConv && gn.p<graph::GatedConvParams>().fused_sum;
    }
    EXPECT_EQ(fused, 1);
  }
  // Sparse weights where the sparse kernel may not run (--sparse off) read the gate's channels.
  GateCase g = gc;
  Model m = plain_after_gate_model(g, {"", false, 0.7});
  SessionOptions off;
  off.threads = 1;
  off.sparse = SparseMode::Off;
  runtime::Plan plan(*m.graph(), {}, off);
  ASSERT_NE(plain_node(plan), nullptr);
  EXPECT_EQ(plain_node(plan)->op, graph::OpType::SluiceGatedConv);
}

TEST(GateRecognition, SqueezeExcitationIsNotAGate) {
  // GAP -> FC -> ReLU -> FC -> Sigmoid -> Mul: a look-alike with no top-k.
  OnnxBuilder b;
  b.input("x", {1, 6, 7, 7}).init_random("w", {8, 6, 3, 3}, 0.3f);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}, "conv"), "pads", {1, 1, 1, 1});
  b.node("GlobalAveragePool", {"c"}, {"p"});
  b.node("Flatten", {"p"}, {"f"});
  b.init_random("w1", {4, 8}, 0.3f).init_random("w2", {8, 4}, 0.3f);
  OnnxBuilder::attr_int(b.node("Gemm", {"f", "w1"}, {"z1"}), "transB", 1);
  b.node("Relu", {"z1"}, {"r"});
  OnnxBuilder::attr_int(b.node("Gemm", {"r", "w2"}, {"z2"}), "transB", 1);
  b.node("Sigmoid", {"z2"}, {"s"});
  b.init_i64("shape", {4}, {1, 8, 1, 1});
  b.node("Reshape", {"s", "shape"}, {"s4"});
  b.node("Mul", {"c", "s4"}, {"y"});
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {1, true});
  EXPECT_TRUE(plan.graph().gates.empty());
  EXPECT_EQ(count_gated(plan), 0);
  Tensor x = random_tensor({1, 6, 7, 7});
  EXPECT_LT(normalized_error(Session(m).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
}

TEST(GateRecognition, GateOnAnotherTensorIsReportedNotFused) {
  // The predictor pools the conv's input plus one: not the conv's input, so not exact to fuse.
  GateCase gc;
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw}).init("one", {}, {1.f});
  b.node("Add", {"x", "one"}, {"x1"});
  add_gate(b, gc, "g_", "x", "y", gc.c);
  // Point the gate's pooling at x1.
  for (auto& n : *b.proto().mutable_graph()->mutable_node())
    if (n.op_type() == "GlobalAveragePool") n.set_input(0, "x1");
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_NE(plan.graph().gates[0].reason.find("different tensor"), std::string::npos) << plan.graph().gates[0].reason;
  EXPECT_NE(plan.describe(false).find("NOT"), std::string::npos);
  EXPECT_EQ(count_gated(plan), 0);
  Tensor x = random_tensor({gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(normalized_error(Session(m).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
}

// The gate's Mul applied after a residual Add (conv(x) + x): no conv's output is gated, so
// nothing is taken, and inspect says so on a line of its own (it listed no candidate at all).
TEST(GateRecognition, GateAfterAResidualAddIsListedWithItsReason) {
  GateCase gc;
  gc.m = gc.c;
  gc.beta = Beta::None;
  gc.relu = false;
  OnnxBuilder b;
  b.input("x", {gc.n, gc.c, gc.hw, gc.hw});
  add_gate(b, gc, "g_", "x", "y", gc.c);
  b.node("Add", {"g_conv", "x"}, {"res"}, "residual");
  for (auto& n : *b.proto().mutable_graph()->mutable_node())
    if (n.op_type() == "Mul")
      for (int i = 0; i < n.input_size(); ++i)
        if (n.input(i) == "g_conv") n.set_input(i, "res");
  b.output("y");
  Model m = b.load();
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u) << plan.describe(false);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_EQ(plan.graph().gates[0].conv, "residual");
  EXPECT_NE(plan.graph().gates[0].reason.find("multiplies the output of Add 'residual', not a conv's"), std::string::npos)
      << plan.graph().gates[0].reason;
  Tensor x = random_tensor({gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(normalized_error(Session(m).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
}

// A look-alike: one gate candidate, not recognised (its reason names `why`), no gated step,
// and the generic ops give the reference kernels' output.
void expect_not_a_gate(const GateCase& gc, const std::string& why) {
  Model m = gate_model(gc);
  runtime::Plan plan(*m.graph(), {}, {1, true});
  ASSERT_EQ(plan.graph().gates.size(), 1u);
  EXPECT_FALSE(plan.graph().gates[0].recognised);
  EXPECT_NE(plan.graph().gates[0].reason.find(why), std::string::npos) << plan.graph().gates[0].reason;
  EXPECT_EQ(count_gated(plan), 0);
  Tensor x = random_tensor({gc.n, gc.c, gc.hw, gc.hw});
  EXPECT_LT(normalized_error(Session(m).run({{"x", x}})["y"], Session(m, {1, false}).run({{"x", x}})["y"]), 1e-5);
}

TEST(GateRecognition, ThresholdAtTheMeanOfTopKIsNotAGate) {
  // g >= mean(TopK(g, k) values): a mask, but not the k-th largest; it stays generic ops, exactly.
  GateCase gc;
  gc.form = Form::ThresholdMeanOfTopK;
  expect_not_a_gate(gc, "k-th largest");
}

TEST(GateRecognition, IndexPutIntoOtherRowsIsNotAGate) {
  // Sample n's winners written into row N-1-n: no per-sample gate computes it; generic, exact.
  GateCase gc;
  gc.form = Form::IndexPutRowsReversed;
  gc.n = 3;
  expect_not_a_gate(gc, "ScatterND");
}

TEST(GateRecognition, TopKLargerThanTheChannelCountIsRefusedByName) {
  GateCase gc;
  gc.k = gc.m + 3;
  try {
    Model m = gate_model(gc);
    Session(m).run({{"x", random_tensor({gc.n, gc.c, gc.hw, gc.hw})}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("TopK"), std::string::npos) << msg;
    EXPECT_NE(msg.find("K = 11"), std::string::npos) << msg;
  }
}

TEST(GatedConv, ConcurrentRunsGiveTheirOwnSelections) {
  GateCase gc;
  Model m = gate_model(gc, 2);
  Session s(m, {2});
  std::vector<Tensor> xs, expect;
  for (uint32_t i = 0; i < 4; ++i) {
    xs.push_back(random_tensor({gc.n, gc.c, gc.hw, gc.hw}, 100 + i));
    expect.push_back(Session(m, {1, false}).run({{"x", xs.back()}})["y"]);
  }
  std::vector<double> err(4, 1.0);
  std::vector<std::thread> th;
  for (size_t i = 0; i < 4; ++i)
    th.emplace_back([&, i] {
      for (int r = 0; r < 5; ++r) err[i] = std::max(r == 0 ? 0.0 : err[i], normalized_error(s.run({{"x", xs[i]}})["y"], expect[i]));
    });
  for (auto& t : th) t.join();
  for (double e : err) EXPECT_LT(e, 1e-5);
}

}  // namespace
}  // namespace sluice::testing
