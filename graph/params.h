// Typed per-op parameters. The ONNX converter parses attributes once into these
// structs; kernels and passes never see attribute strings.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "sluice/sluice.h"

namespace sluice::graph {

struct NoParams {};

// An activation fused into the epilogue of a conv or gemm.
enum class Activation : uint8_t { None, Relu, LeakyRelu, Clip, Sigmoid, HardSwish, Swish };  // Swish: x * sigmoid(x) (SiLU)
struct FusedActivation {
  Activation kind = Activation::None;
  float alpha = 0.f;  // LeakyRelu slope, Clip min
  float beta = 0.f;   // Clip max
};
// The epilogue's activation, as oneDNN's post-ops compute it, so that a layer's answer does not
// depend on which kernel the measured choice picked: a fused Relu maps NaN to 0 and a fused Clip
// maps it to its min (a standalone Relu or Clip node keeps NaN, as ONNX Runtime does).
inline float apply_activation(const FusedActivation& a, float x) {
  switch (a.kind) {
    case Activation::None: return x;
    case Activation::Relu: return x > 0.f ? x : 0.f;  // a fused epilogue: NaN -> 0, as oneDNN's post-op
    case Activation::LeakyRelu: return x >= 0.f ? x : a.alpha * x;
    case Activation::Clip: return x > a.alpha ? std::min(x, a.beta) : a.alpha;  // NaN -> min, as oneDNN's post-op
    case Activation::Sigmoid: return 1.f / (1.f + std::exp(-x));
    case Activation::HardSwish: return x * std::min(std::max(x / 6.f + 0.5f, 0.f), 1.f);
    case Activation::Swish: return x * (1.f / (1.f + std::exp(-x)));
  }
  return x;
}

// A channel shift (design.md §8): output channel c is input channel src[c] moved so that
// out[c][y][x] = in[src[c]][y * sy + dy[c]][x * sx + dx[c]], zero where that falls outside. Zero
// FLOPs. Strides and an output size other than the input's come from one-hot convs with a stride
// (or without padding); such a shift runs alone, never fused into a 1x1 conv.
struct ShiftParams {
  std::vector<int32_t> src, dy, dx;
  int32_t sy = 1, sx = 1;
  int64_t out_h = 0, out_w = 0;  // 0: the input's
  bool same_size() const { return sy == 1 && sx == 1 && out_h == 0 && out_w == 0; }
  int64_t dense_macs = 0;  // per sample, of the depthwise conv it replaced (0 for Pad/Slice forms)
  std::string form;        // "depthwise one-hot conv" or "pad/slice/concat"
  bool empty() const { return src.empty(); }
  bool moves() const {  // some channel is translated (else only channels are selected)
    for (size_t o = 0; o < dy.size(); ++o)
      if (dy[o] != 0 || dx[o] != 0) return true;
    return false;
  }
};

struct ConvParams {
  std::vector<int64_t> kernel_shape;  // [kh, kw] (from the weight when absent)
  std::vector<int64_t> strides;       // [sh, sw]
  std::vector<int64_t> dilations;     // [dh, dw]
  std::vector<int64_t> pads;          // [top, left, bottom, right]
  std::string auto_pad = "NOTSET";    // resolved into pads by shape inference
  int64_t group = 1;
  FusedActivation activation;         // applied after the optional fused sum
  bool fused_sum = false;             // input 3 (if present) is added before the activation
  // Channel counts before passes::prune_channels removed dead channels (0: not pruned);
  // dense MACs count these, executed MACs what runs. dense_in is per group, of the model's
  // dense_group groups (a depthwise conv loses groups with its channels).
  int64_t dense_in = 0, dense_out = 0, dense_group = 0;
  // A shift fused into a 1x1 conv by passes::recognise_shifts: the conv reads its input shifted.
  ShiftParams pre_shift;
  // An NHWC conv on the direct kernel reading its NCHW input as it is, the reorder in between
  // dropped (Plan::read_nchw_inputs). (An NCHW value of 1 channel or a 1x1 map, which
  // assign_layouts gives no reorder, has NHWC's bytes: a conv reading it does not set this.)
  bool reads_nchw = false;
};

struct ConvTransposeParams {
  std::vector<int64_t> kernel_shape, strides, dilations;
  std::vector<int64_t> pads;            // [begin..., end...]; resolved by shape inference
  std::string auto_pad = "NOTSET";
  std::vector<int64_t> output_padding;  // per spatial axis
  std::vector<int64_t> output_shape;    // spatial (or full) output shape; empty: from the pads
  int64_t group = 1;
  int64_t dense_in = 0;  // the model's input channels when static pruning removed some (0: none)
};

struct PoolParams {
  std::vector<int64_t> kernel_shape;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // [top, left, bottom, right]
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false;
  bool count_include_pad = false;
  int64_t p = 2;  // LpPool, GlobalLpPool: the norm's order
};

struct GemmParams {
  float alpha = 1.f, beta = 1.f;
  bool trans_a = false, trans_b = false;
  int64_t dense_k = 0;  // K before passes::prune_channels (0: not pruned)
  int64_t dense_n = 0;  // N (output features) before passes::prune_channels (0: not pruned)
  FusedActivation activation;
};

struct BatchNormParams {
  float epsilon = 1e-5f;
  // Set by static pruning: the input channels whose outputs are kept, in order (output channel
  // j is input channel channels[j]); empty: all.
  std::vector<int32_t> channels;
};

struct LayerNormParams {  // LayerNormalization: normalise over axes [axis, rank)
  int64_t axis = -1;
  float epsilon = 1e-5f;
};

struct AxisParams {  // Concat, Flatten, Gather, GatherElements, OneHot, ScatterElements (reduction none)
  int64_t axis = 0;
};

struct SoftmaxParams {
  int64_t axis = -1;
  bool legacy_2d = false;  // opset < 13: coerce to 2-D at axis
};

struct SplitParams {
  int64_t axis = 0;
  std::vector<int64_t> split;  // from the attribute (opset < 13); else input 1 or equal parts
  int64_t num_outputs = 0;     // opset >= 18 attribute (0: not given); must equal the output count
};

struct TransposeParams {
  std::vector<int64_t> perm;  // empty: reverse
};

struct AxesParams {  // Squeeze / Unsqueeze (opset < 13 attribute form)
  std::vector<int64_t> axes;
  bool has_axes = false;
};

struct BlockParams {  // DepthToSpace / SpaceToDepth
  int64_t blocksize = 0;
  bool crd = false;  // DepthToSpace mode CRD (else DCR)
};

struct ResizeParams {  // Resize (and Upsample, as Resize with asymmetric coordinates)
  std::string mode = "nearest";         // nearest, linear or cubic
  float cubic_a = -0.75f;
  bool exclude_outside = false;         // cubic: taps outside the input get weight 0 (the rest renormalised)
  std::string coordinates = "half_pixel";  // coordinate_transformation_mode
  std::string nearest_mode = "round_prefer_floor";  // or "simple" (opset < 11): floor up, ceil down
  std::vector<int64_t> axes;            // opset 18; empty: all
  std::vector<float> scales;            // Upsample opset 7's attribute; else from the inputs
  std::vector<double> resolved;         // per input dim, output / input scale (set by inference)
};

struct ModParams {
  bool fmod = false;  // C fmod (the dividend's sign); else the divisor's sign, as Python's %
};

struct CumSumParams {
  bool exclusive = false, reverse = false;
};

struct IsInfParams {
  bool negative = true, positive = true;
};

struct ArgParams {  // ArgMax / ArgMin
  int64_t axis = 0;
  bool keepdims = true;
  bool select_last_index = false;
};

struct ReduceParams {
  std::vector<int64_t> axes;
  bool has_axes = false;
  bool keepdims = true;
  bool noop_with_empty_axes = false;
};

struct ClipParams {  // opset < 11 attribute form; opset >= 11 uses inputs 1, 2
  float min = -3.4028234663852886e38f, max = 3.4028234663852886e38f;
};

struct AlphaBetaParams {  // LeakyRelu (alpha), HardSigmoid (alpha, beta)
  float alpha = 0.f, beta = 0.f;
};

struct GeluParams {  // opset 20
  bool tanh = false;  // approximate="tanh"; else the exact erf form
};

struct CastParams {
  DType to = DType::Float32;
};

struct ConstantParams {  // Constant, ConstantOfShape (value)
  Tensor value;
};

struct PadParams {
  std::string mode = "constant";
  // Resolved by shape inference: 2 * rank amounts ([begin..., end...] over every axis), from
  // input 1 alone or, from opset 18, spread over the axes that input 3 names.
  std::vector<int64_t> pads;
};

struct ReshapeParams {
  bool allowzero = false;
};

struct ShapeParams {
  int64_t start = 0;
  int64_t end = INT64_MAX;
};

struct TopKParams {
  int64_t axis = -1;
  bool largest = true;
  bool sorted = true;
};

struct ScatterParams {  // ScatterElements (axis), ScatterND (axis unused)
  int64_t axis = 0;
  enum class Reduction : uint8_t { None, Add, Mul, Max, Min } reduction = Reduction::None;
};

// A convolution with its FBS gate fused in (design.md §3), made by recognise_gates.
// Inputs: x, W, B (or none), Wg [C_out, C_in], bg [C_out], beta [C_out] (or none).
//   s = mean_hw(x) (or mean_hw |x|);  g = relu(Wg s + bg);  pi = select(g);
//   y_c = act(pi_c * conv(x)_c + beta_c * m_c),  m_c = 1(pi_c > 0) (masked) or 1 (unmasked)
//   (unit_pi: pi_c = 1 where select keeps g_c, a hard mask; positive_pi as well: only where g_c > 0,
//   as Where(select(g) > 0, conv(x), 0) applies it)
enum class GateForm : uint8_t {
  Winners,    // TopK(g, k) -> ScatterElements(zeros, idx, values): keep the k largest (ties: lower index)
  Losers,     // TopK(-g, C-k) -> ScatterElements(g, idx, 0): zero the C-k smallest (ties: lower index)
  Threshold,  // keep g_c > (the k-th largest g), k = K of the graph's TopK
  ThresholdInclusive,  // keep g_c >= (the k-th largest g)
  // No gate of its own: every output channel, pi = 1 (inputs Wg and bg absent, k unused). A
  // plain conv that reads a gated conv's output (passes::read_gated_inputs): it computes
  // from only the input channels the gate left active, y = act(conv(x) [+ sum]).
  All,
};
enum class BetaMode : uint8_t { None, Masked, Unmasked };
// The activation of an FBS gate's predictor, g = act(Wg s + bg). Not all are >= 0: a channel is
// active wherever its pi is not 0, whatever its sign.
struct Saliency {
  // Gelu: (z * (erf(z / alpha) + 1)) * 0.5, as torch exports F.gelu (alpha = sqrt 2); GeluTanh: the
  // Gelu op's approximate="tanh".
  // Softmax: over the M channels of a sample (it ranks them as z does; g is the probability).
  enum class Act : uint8_t { Relu, Sigmoid, LeakyRelu, Clip, HardSigmoid, Softplus, Elu, Tanh, Abs, HardSwish, Silu, Gelu,
                             GeluTanh, Identity, Softmax } act = Act::Relu;
  float alpha = 0.f, beta = 0.f;
  // Whether g >= 0 for every input (relu(conv) * pi is then relu(conv * pi)).
  bool nonnegative() const {
    return act == Act::Relu || act == Act::Sigmoid || act == Act::HardSigmoid || act == Act::Softplus || act == Act::Abs ||
           act == Act::Softmax ||
           (act == Act::Clip && alpha >= 0.f && beta >= 0.f);  // min(max(x, lo), hi): hi alone when lo > hi
  }
  // Whether g > 0 is decided as ONNX Runtime decides it: the piecewise-linear forms, exact at
  // their kinks. Not sigmoid (ORT's is 0 below about -18, the exact one not until -88), nor the
  // other transcendental ones.
  bool sign_exact() const {
    return act == Act::Relu || act == Act::LeakyRelu || act == Act::Clip || act == Act::HardSigmoid || act == Act::Abs ||
           act == Act::Identity;
  }
};
const char* saliency_act_name(Saliency::Act a);
struct GatedConvParams {
  ConvParams conv;
  GateForm form = GateForm::Winners;
  int64_t k = 0;         // the form's K (see GateForm); the kept count for Winners/Losers
  int64_t k_exported = 0;  // k before a run-time density override
  bool threshold_by_difference = false;  // a threshold form tested as (g - t) >= 0 (> 0): false where g = t = inf
  // A hard 0/1 mask: pi = 1 for a kept channel instead of g (y = act(conv + beta * m)); the form
  // and k say which are kept, by g as ever.
  bool unit_pi = false;
  // With unit_pi: pi_c = 1 only where g_c > 0 too (the selection's values tested > 0, as
  // Where(pi > 0, conv, 0) applies it: a kept channel whose g is 0 or NaN is suppressed).
  bool positive_pi = false;
  bool abs_saliency = false;
  // g = act(Wg s + bg): the op that computes the saliency from the predictor's output, with its
  // attributes (LeakyRelu and Elu: alpha; HardSigmoid and HardSwish: alpha, beta; Clip: min, max).
  Saliency saliency;
  // How s pools each input channel over H x W (of x, or of |x| with abs_saliency): the mean
  // (FBS), the maximum (adaptive_max_pool2d), or the L2 norm (x.norm(2, (2, 3))).
  enum class Pool : uint8_t { Mean, Max, L2 } saliency_pool = Pool::Mean;
  BetaMode beta = BetaMode::None;
  FusedActivation activation;  // applied last (after the fused sum, if any)
  bool gating = true;          // false: compute every channel, then mask (the dense reference path)
  // A residual Add fused in (passes::fuse_residual_add): input kGatedSumInput is added to the
  // gated output before the activation: y = act(sum + pi * conv + beta * m).
  bool fused_sum = false;
};
constexpr size_t kGatedSumInput = 6;
struct Node;
// The convolution parameters of a Conv or a SluiceGatedConv node.
const ConvParams& conv_params(const Node& n);
const char* gate_form_name(GateForm f);
const char* beta_mode_name(BetaMode b);

// Layout conversion inserted by the layout pass. Planar (values only, and the pools that read
// and write them): per sample, each channel a zero-bordered plane that thin convs on the
// direct kernel read and write as it is (passes::keep_planes_resident, ops/conv/planar.h's
// resident planes); no reorder ever takes or makes it.
enum class Layout : uint8_t { NCHW, NHWC, Planar };
const char* layout_name(Layout l);  // "NCHW", "NHWC", "planar"
struct ReorderParams {
  Layout from = Layout::NCHW, to = Layout::NHWC;
};

// If: both branches as graph nodes, kept out of the graph until fold_constants knows the
// condition and splices the taken branch in (Graph's IfBranches, defined with Node).
struct IfBranches;
struct IfParams {
  std::shared_ptr<const IfBranches> branches;
};

// Einsum: the equation as given; shape inference parses it into one string of index letters per
// operand and the output's (implicit output: the letters seen once, in alphabetical order).
struct EinsumParams {
  std::string equation;
  std::vector<std::string> terms;
  std::string output;
  std::string broadcast;  // the letters an ellipsis stands for (they broadcast, numpy's way)
};

struct LrnParams {  // LRN: local response normalisation across channels
  float alpha = 1e-4f, beta = 0.75f, bias = 1.f;
  int64_t size = 1;
};

using Params = std::variant<NoParams, ConvParams, PoolParams, GemmParams, BatchNormParams, AxisParams,
                            SoftmaxParams, SplitParams, TransposeParams, AxesParams, ReduceParams,
                            ClipParams, AlphaBetaParams, CastParams, ConstantParams, PadParams,
                            ReshapeParams, ShapeParams, TopKParams, ScatterParams, ReorderParams,
                            GatedConvParams, ShiftParams, LayerNormParams, GeluParams, ArgParams, BlockParams,
                            IsInfParams, ConvTransposeParams, ModParams, CumSumParams, ResizeParams, LrnParams,
                            IfParams, EinsumParams>;

}  // namespace sluice::graph
