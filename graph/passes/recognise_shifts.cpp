// Shift layers (design.md §8), recognised by what they compute, in either export form:
//
//  - a Conv (any stride and padding: a strided one also subsamples; a bias only where it folds into the readers,
//    see fold_shift_bias) whose every output
//    channel's kernel is one-hot with the value 1: output channel o copies the input channel c
//    of its group where the 1 is, moved by (i * dilation_h - pad_top, j * dilation_w -
//    pad_left), (i, j) the tap of the 1. Depthwise is the usual export; a dilated kernel
//    reaches further, and a grouped or full (group 1) conv with one 1 per output channel is a
//    shift that also picks channels;
//  - a channel Concat whose every input is the same tensor x seen through any chain of channel
//    Slice/Split, zero Pad (or a Concat on H or W with constant zero blocks, as
//    torch.cat([zeros, x[..., :-1]], 3) writes it) and spatial Slice that comes back to x's spatial size
//    and is a pure translation: every in-bounds position of the result still holds x (or, with
//    Slice steps s > 1 on H or W, the same for every s-th position: a strided shift, which also
//    subsamples, as YOLOv5's Focus and strided shift layers write it). A Pad
//    may crop (negative pads), also on one side while it pads the other;
//  - any other subgraph of value-moving ops from one tensor x to a tensor of x's spatial size:
//    PyTorch's slice assignment (out = zeros; out[:, c, 1:] = x[:, c, :-1]: ScatterND chains),
//    torch.roll times a 0/1 mask or under a Where that zeroes the wrapped edge, Expand, and the
//    Gather/Reshape/Squeeze/Unsqueeze/Transpose of integer indexing. It is
//    run on x labelled with its own element indices (twice, +i+1 and -(i+1), so no constant
//    in the subgraph can pass for a label), and taken for a shift when every output channel is
//    one input channel translated, zero outside. A region that moves nothing but selects
//    channels (ShuffleNet's channel shuffle, torch.chunk, a flip of the channels) becomes one
//    Gather on axis 1 instead (make_channel_gather).
//
// Both become one SluiceShift node (zero FLOPs). A shift whose only reader is a 1x1 conv
// (stride 1, no padding, group 1) is then fused into it (ConvParams::pre_shift); before a
// strided 1x1 conv the shift takes the stride (it subsamples) and the conv runs at stride 1.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"
#include "ops/op_registry.h"

namespace sluice::graph::passes {

namespace {

// Form A. Returns false (and leaves the node) unless every output channel is a one-hot copy.
// A kernel whose one tap is some v other than 1 (a BatchNorm after the shift, folded into the
// conv by the exporter) is the shift scaled by v: `scale` gets v per output channel (empty when
// every v is 1), for the readers' weights (fold_shift_scale).
bool one_hot_conv_shift(const Graph& g, const Node& n, ShiftParams& sp, std::vector<float>& bias,
                        std::vector<float>& scale) {
  if (n.op != OpType::Conv) return false;
  const auto& p = n.p<ConvParams>();
  const Value& x = g.value(n.inputs[0]);
  const Value& w = g.value(n.inputs[1]);
  const Value& y = g.value(n.outputs[0]);
  if (x.shape.size() != 4 || y.shape.size() != 4 || !w.is_constant() || w.dtype != DType::Float32 ||
      w.shape.size() != 4)
    return false;
  const int64_t c = x.shape[1], m = y.shape[1], groups = p.group;
  if (groups < 1 || c % groups != 0 || m % groups != 0 || w.shape[0] != m || w.shape[1] != c / groups ||
      p.fused_sum || p.activation.kind != Activation::None)
    return false;
  if (p.strides[0] < 1 || p.strides[1] < 1 || p.dilations[0] < 1 || p.dilations[1] < 1) return false;
  if (p.strides[0] > INT32_MAX || p.strides[1] > INT32_MAX) return false;
  bias.clear();
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {  // a shift plus a per-channel constant
    const Value& b = g.value(n.inputs[2]);
    if (!b.is_constant() || b.dtype != DType::Float32 || b.constant.numel() != m) return false;
    bool zero = true;
    for (int64_t i = 0; i < m; ++i) zero = zero && b.constant.data<float>()[i] == 0.f;
    if (!zero) bias.assign(b.constant.data<float>(), b.constant.data<float>() + m);
  }
  const int64_t cg = c / groups, mg = m / groups, kh = w.shape[2], kw = w.shape[3], taps = cg * kh * kw;
  const float* W = w.constant.data<float>();
  scale.assign(static_cast<size_t>(m), 1.f);
  for (int64_t o = 0; o < m; ++o) {
    int64_t hot = -1;
    for (int64_t t = 0; t < taps; ++t) {
      const float v = W[o * taps + t];
      if (v == 0.f) continue;
      if (!std::isfinite(v) || hot >= 0) return false;
      hot = t;
      scale[static_cast<size_t>(o)] = v;
    }
    if (hot < 0) return false;  // an all-zero kernel: a dead channel, not a shift
    const int64_t tap = hot % (kh * kw);
    sp.src.push_back(static_cast<int32_t>((o / mg) * cg + hot / (kh * kw)));
    sp.dy.push_back(static_cast<int32_t>(tap / kw * p.dilations[0] - p.pads[0]));
    sp.dx.push_back(static_cast<int32_t>(tap % kw * p.dilations[1] - p.pads[1]));
  }
  sp.sy = static_cast<int32_t>(p.strides[0]);
  sp.sx = static_cast<int32_t>(p.strides[1]);
  if (sp.sy != 1 || sp.sx != 1 || y.shape[2] != x.shape[2] || y.shape[3] != x.shape[3]) {  // strided or cropped
    sp.out_h = y.shape[2];
    sp.out_w = y.shape[3];
  }
  if (sp.same_size() && !sp.moves()) return false;  // a channel copy or permutation (e.g. an identity 1x1 conv), not a shift
  if (std::all_of(scale.begin(), scale.end(), [](float v) { return v == 1.f; })) scale.clear();
  // (Recognised after static pruning, the conv counts the model's channels: dense_out outputs,
  // each reading dense_in inputs, 1 for a depthwise conv.)
  sp.dense_macs = (p.dense_out > 0 ? p.dense_out : m) * (p.dense_in > 0 ? p.dense_in : cg) * kh * kw * y.shape[2] * y.shape[3];
  sp.form = groups == c && m == c ? "depthwise one-hot conv" : "one-hot conv";
  return true;
}

// What a chain of Slice/Split/Pad does to x, per axis: out index i reads x index off + step * i
// (step > 1 after a strided Slice), x indices outside [lo, hi) have been replaced by zeros,
// len is the current size.
struct Axis {
  int64_t off = 0, lo = 0, hi = 0, len = 0, step = 1;
};

// Walks back from `v` to the source tensor through Slice/Split/Pad; fills axes (relative to
// that source) and returns it, or kNoValue when the chain has anything else.
ValueId trace(const Graph& g, ValueId v, std::array<Axis, 4>& ax, int depth = 0) {
  const Value& val = g.value(v);
  if (depth > 16 || val.shape.size() != 4) return kNoValue;
  const NodeId pid = val.producer;
  const auto fresh = [&](ValueId src) {
    const Shape& s = g.value(src).shape;
    for (size_t d = 0; d < 4; ++d) ax[d] = {0, 0, s[d], s[d], 1};
    return src;
  };
  if (pid < 0) return fresh(v);
  const Node& n = g.node(pid);
  // Keep indices start, start + step, ... (len of them) of the current axis. A stride or an
  // offset past int32 (chained huge steps: the shift's fields are int32) makes it no shift.
  bool too_far = false;
  auto window = [&](size_t d, int64_t start, int64_t len, int64_t step = 1) {
    Axis& a = ax[d];
    constexpr int64_t kMax = INT32_MAX;
    if (std::abs(start) > kMax || len > kMax || step > kMax / a.step || std::abs(a.off) + a.step * std::abs(start) > kMax) {
      too_far = true;
      return;
    }
    a.off += a.step * start;
    a.step *= step;
    a.len = len;
    a.lo = std::max(a.lo, a.off);
    a.hi = std::min(a.hi, a.off + a.step * (len - 1) + 1);
  };
  if (n.op == OpType::Concat) {  // on H or W, one tensor between blocks of constant zeros: a zero Pad
    const int64_t d = n.p<AxisParams>().axis < 0 ? n.p<AxisParams>().axis + 4 : n.p<AxisParams>().axis;
    int64_t k = -1, before = 0, after = 0;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const Value& iv = g.value(n.inputs[i]);
      bool zeros = iv.is_constant() && iv.constant.dtype() == DType::Float32 && iv.shape.size() == 4;
      for (int64_t j = 0; zeros && j < iv.constant.numel(); ++j) zeros = iv.constant.data<float>()[j] == 0.f;
      if (!zeros) {
        if (k >= 0) return fresh(v);
        k = static_cast<int64_t>(i);
      } else {
        (k < 0 ? before : after) += iv.shape[static_cast<size_t>(std::clamp<int64_t>(d, 0, 3))];
      }
    }
    if ((d != 2 && d != 3) || k < 0 || before + after == 0) return fresh(v);
    const ValueId src = trace(g, n.inputs[static_cast<size_t>(k)], ax, depth + 1);
    if (src == kNoValue) return kNoValue;
    window(static_cast<size_t>(d), -before, ax[static_cast<size_t>(d)].len + before + after);
    return too_far ? kNoValue : src;
  }
  if (n.op != OpType::Slice && n.op != OpType::Split && n.op != OpType::Pad) return fresh(v);
  ValueId src = trace(g, n.inputs[0], ax, depth + 1);
  if (src == kNoValue) return kNoValue;
  const Shape& in_shape = g.value(n.inputs[0]).shape;
  if (n.op == OpType::Slice) {
    auto starts = const_ints(g, n, 1), ends = const_ints(g, n, 2), axes = const_ints(g, n, 3), steps = const_ints(g, n, 4);
    if (starts.empty() || starts.size() != ends.size()) return kNoValue;
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    for (size_t i = 0; i < starts.size(); ++i) {
      // Steps of 1, or larger ones on H and W (a strided shift: x[..., 1::2, ::2], YOLOv5's Focus).
      const int64_t step = steps.empty() ? 1 : steps[i];
      const int64_t d = axes[i] < 0 ? axes[i] + 4 : axes[i];
      if (d < 0 || d > 3 || step < 1 || step > INT32_MAX || (step != 1 && d < 2)) return kNoValue;
      const int64_t dim = in_shape[static_cast<size_t>(d)];
      int64_t s = starts[i] < 0 ? starts[i] + dim : starts[i], e = ends[i] < 0 ? ends[i] + dim : ends[i];
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, s, dim);
      if (e == s) return kNoValue;
      window(static_cast<size_t>(d), s, (e - s + step - 1) / step, step);
    }
    return too_far ? kNoValue : src;
  }
  if (n.op == OpType::Split) {
    const auto& sp = n.p<SplitParams>();
    const int64_t d = sp.axis < 0 ? sp.axis + 4 : sp.axis;
    const size_t k = static_cast<size_t>(std::find(n.outputs.begin(), n.outputs.end(), v) - n.outputs.begin());
    if (d < 0 || d > 3 || k >= sp.split.size()) return kNoValue;
    int64_t start = 0;
    for (size_t i = 0; i < k; ++i) start += sp.split[i];
    window(static_cast<size_t>(d), start, sp.split[k]);
    return too_far ? kNoValue : src;
  }
  // Pad: constant mode with a zero value only.
  if (n.p<PadParams>().mode != "constant") return kNoValue;
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {
    const Value& cv = g.value(n.inputs[2]);
    if (!cv.is_constant() || cv.constant.dtype() != DType::Float32 || cv.constant.data<float>()[0] != 0.f) return kNoValue;
  }
  const auto& pads = n.p<PadParams>().pads;  // all 8, resolved by shape inference (also from opset 18's axes)
  if (pads.size() != 8) return kNoValue;
  // Out index i reads in index i - before on every axis: zeros where that falls outside, and a
  // negative pad crops. One rule covers padding, cropping and both at once.
  for (size_t d = 0; d < 4; ++d) {
    const int64_t before = pads[d], after = pads[d + 4];
    if (ax[d].len + before + after <= 0) return kNoValue;
    window(d, -before, ax[d].len + before + after);
  }
  return too_far ? kNoValue : src;
}

// Form B: Concat on channels of translated slices of one tensor.
bool concat_shift(const Graph& g, const Node& n, ShiftParams& sp, ValueId& source) {
  if (n.op != OpType::Concat || n.inputs.size() < 2) return false;
  const Value& y = g.value(n.outputs[0]);
  if (y.shape.size() != 4 || y.dtype != DType::Float32) return false;
  const int64_t axis = n.p<AxisParams>().axis;
  if (axis != 1 && axis != -3) return false;
  source = kNoValue;
  bool moved = false;
  int64_t steps[2] = {0, 0};  // every input's, on H and W: the shift's stride
  for (ValueId in : n.inputs) {
    std::array<Axis, 4> ax;
    const ValueId src = trace(g, in, ax);
    if (src == kNoValue || (source != kNoValue && src != source)) return false;
    source = src;
    const Shape& xs = g.value(src).shape;
    if (xs[0] != y.shape[0]) return false;
    // Batch untouched; channels a plain window of x; spatial a translation back to x's size
    // that kept every in-bounds position of x it reads.
    if (ax[0].off != 0 || ax[0].len != xs[0] || ax[0].lo != 0 || ax[0].hi != xs[0]) return false;
    if (ax[1].off < 0 || ax[1].off + ax[1].len > xs[1] || ax[1].lo != ax[1].off || ax[1].hi != ax[1].off + ax[1].len)
      return false;
    // (Strided: out index i reads x at off + step * i; the x indices it needs are those of
    // [0, xs) on that lattice.)
    for (size_t d = 2; d < 4; ++d) {
      const Axis& a = ax[d];
      if (a.len != y.shape[d] || (a.step == 1 && a.len != xs[d])) return false;
      if (steps[d - 2] != 0 && steps[d - 2] != a.step) return false;
      steps[d - 2] = a.step;
      const int64_t first = a.off >= 0 ? 0 : (-a.off + a.step - 1) / a.step;  // first i with x >= 0
      const int64_t last = a.off >= xs[d] ? -1 : std::min(a.len - 1, (xs[d] - 1 - a.off) / a.step);
      const int64_t need_lo = a.off + a.step * first, need_hi = a.off + a.step * last + 1;
      if (first <= last && (a.lo > need_lo || a.hi < need_hi)) return false;
      if (a.lo < 0 || a.hi > xs[d]) return false;
    }
    moved |= ax[2].off != 0 || ax[3].off != 0 || ax[2].step != 1 || ax[3].step != 1;
    for (int64_t c = 0; c < ax[1].len; ++c) {
      sp.src.push_back(static_cast<int32_t>(ax[1].off + c));
      sp.dy.push_back(static_cast<int32_t>(ax[2].off));
      sp.dx.push_back(static_cast<int32_t>(ax[3].off));
    }
  }
  if (!moved) return false;  // a plain channel concat/permutation, nothing shifted
  if (steps[0] != 1 || steps[1] != 1) {  // strided: it subsamples
    sp.sy = static_cast<int32_t>(steps[0]);
    sp.sx = static_cast<int32_t>(steps[1]);
    sp.out_h = y.shape[2];
    sp.out_w = y.shape[3];
  }
  sp.form = "pad/slice/concat";
  return true;
}

// Form C. Ops that only copy, move or zero values, whatever the values are (up to the
// non-finite caveat of a 0/1 Mul mask: inf * 0 is NaN where the shift gives 0).
bool all_values_in(const Value& v, std::initializer_list<float> allowed) {
  if (!v.is_constant() || v.constant.dtype() != DType::Float32) return false;
  const float* d = v.constant.data<float>();
  for (int64_t i = 0; i < v.constant.numel(); ++i)
    if (std::find(allowed.begin(), allowed.end(), d[i]) == allowed.end()) return false;
  return true;
}

bool moves_values(const Graph& g, const Node& n) {
  switch (n.op) {
    case OpType::Slice:
    case OpType::Split:
    case OpType::Concat:
    case OpType::Expand:
    case OpType::Identity:
    case OpType::Transpose:
    case OpType::Squeeze:    // these and Reshape/Gather: x[:, c] with an integer c exports as
    case OpType::Unsqueeze:  // Gather, and its assignment reshapes the updates
    case OpType::Flatten: return true;
    case OpType::Reshape:
    case OpType::Gather: return n.inputs.size() > 1 && g.value(n.inputs[1]).is_constant();
    case OpType::ScatterND: return n.p<ScatterParams>().reduction == ScatterParams::Reduction::None;
    case OpType::Pad:
      return n.p<PadParams>().mode == "constant" &&
             (n.inputs.size() < 3 || n.inputs[2] == kNoValue || all_values_in(g.value(n.inputs[2]), {0.f}));
    case OpType::Mul:  // by a constant 0/1 mask
      return n.inputs.size() == 2 && (all_values_in(g.value(n.inputs[0]), {0.f, 1.f}) || all_values_in(g.value(n.inputs[1]), {0.f, 1.f}));
    case OpType::Where:  // constant condition, one branch constant zeros
      return n.inputs.size() == 3 && g.value(n.inputs[0]).is_constant() &&
             (all_values_in(g.value(n.inputs[1]), {0.f}) || all_values_in(g.value(n.inputs[2]), {0.f}));
    default: return false;
  }
}

// Runs `region` (in topological order) on x = `xv` with the reference kernels; y's value.
std::optional<Tensor> evaluate(const Graph& g, const std::vector<NodeId>& region, ValueId x, const Tensor& xv, ValueId y) {
  std::map<ValueId, Tensor> vals{{x, xv}};
  try {
    for (NodeId id : region) {
      const Node& n = g.node(id);
      std::vector<const Tensor*> inputs;
      for (ValueId in : n.inputs) {
        if (in == kNoValue) {
          inputs.push_back(nullptr);
          continue;
        }
        const auto it = vals.find(in);
        inputs.push_back(it != vals.end() ? &it->second : g.value(in).is_constant() ? &g.value(in).constant : nullptr);
        if (!inputs.back()) return std::nullopt;
      }
      std::vector<Tensor> results = run_reference(g, n, inputs);
      for (size_t i = 0; i < n.outputs.size(); ++i)
        if (n.outputs[i] != kNoValue) vals[n.outputs[i]] = std::move(results[i]);
    }
  } catch (const Error&) {  // e.g. an index out of range: not a shift; the run reports it
    return std::nullopt;
  }
  const auto it = vals.find(y);
  return it == vals.end() ? std::nullopt : std::optional<Tensor>(std::move(it->second));
}

// y (from labels sign * (i + 1) of x's elements) as a shift of x: every output channel one input
// channel translated, zero outside. A channel of zeros (a slice assignment that leaves it as
// the zeros it started from) is channel 0 translated by the map's height: every read falls
// outside, which every shift kernel and the fused 1x1 conv give as 0. Appends to sp; false if
// y is anything else, if every channel is zero (nothing of x is read), or if it has zero
// channels and moves none of the others: that is a channel mask (x * mask, torch.where(mask,
// x, 0)), which static pruning reads as dead channels and removes.
bool read_translation(const Tensor& y, const Shape& xs, float sign, ShiftParams& sp) {
  const int64_t n = xs[0], cx = xs[1], h = xs[2], w = xs[3], cy = y.shape()[1];
  const float* Y = y.data<float>();
  const auto label = [&](int64_t b, int64_t c, int64_t i, int64_t j) { return sign * static_cast<float>(((b * cx + c) * h + i) * w + j + 1); };
  bool reads_x = false, zeros = false, moves = false;
  for (int64_t o = 0; o < cy; ++o) {
    const float* ch = Y + o * h * w;  // batch 0
    int64_t at = 0;
    while (at < h * w && ch[at] == 0.f) ++at;
    int64_t c = 0, dy = h, dx = 0;  // a channel of zeros (checked on every sample below)
    if (at < h * w) {
      const float v = ch[at] * sign;
      if (!(v >= 1.f) || v > static_cast<float>(cx * h * w) || v != std::floor(v)) return false;
      const int64_t src = static_cast<int64_t>(v) - 1;
      c = src / (h * w), dy = src % (h * w) / w - at / w, dx = src % w - at % w;
      reads_x = true;
      moves = moves || dy != 0 || dx != 0;
    } else {
      zeros = true;
    }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t si = i + dy, sj = j + dx;
          const float want = si >= 0 && si < h && sj >= 0 && sj < w ? label(b, c, si, sj) : 0.f;
          if (Y[((b * cy + o) * h + i) * w + j] != want) return false;
        }
    if (sign > 0) {
      sp.src.push_back(static_cast<int32_t>(c));
      sp.dy.push_back(static_cast<int32_t>(dy));
      sp.dx.push_back(static_cast<int32_t>(dx));
    } else if (sp.src[static_cast<size_t>(o)] != c || sp.dy[static_cast<size_t>(o)] != dy || sp.dx[static_cast<size_t>(o)] != dx) {
      return false;
    }
  }
  return reads_x && (moves || !zeros);
}

// concat_bounds: Concats bound regions (read as sources, and a value a Concat reads ends one),
// for channel selections that feed a Concat with other tensors, as ShuffleNet's do.
// nhwc (if given): a channel-last x is allowed too, the region ending in its Transpose to NCHW
// (a shift written on an NHWC model input, as tf2onnx exports Keras): sp then reads
// Transpose(x, (0, 3, 1, 2)), and *nhwc says so.
bool evaluated_shift(const Graph& g, const Node& n, ShiftParams& sp, ValueId& source, bool concat_bounds = false,
                     bool* nhwc = nullptr) {
  if (!moves_values(g, n) || n.outputs.size() != 1 || (concat_bounds && n.op == OpType::Concat)) return false;
  const Value& y = g.value(n.outputs[0]);
  if (y.shape.size() != 4 || y.dtype != DType::Float32 || y.is_constant()) return false;
  bool sink = y.is_output;
  for (NodeId c : y.consumers)
    sink = sink || !moves_values(g, g.node(c)) || (concat_bounds && g.node(c).op == OpType::Concat);
  if (!sink) return false;  // the region goes on: its last node is the one to replace
  // The region: value-moving producers back from y; exactly one non-constant value enters it.
  std::set<NodeId> region;
  std::vector<NodeId> todo{y.producer};
  source = kNoValue;
  while (!todo.empty()) {
    const NodeId id = todo.back();
    todo.pop_back();
    if (!region.insert(id).second) continue;
    if (region.size() > 4096) return false;
    for (ValueId in : g.node(id).inputs) {
      if (in == kNoValue || g.value(in).is_constant()) continue;
      const NodeId p = g.value(in).producer;
      if (p >= 0 && moves_values(g, g.node(p)) && !(concat_bounds && g.node(p).op == OpType::Concat)) {
        todo.push_back(p);
      } else if (source == kNoValue || source == in) {
        source = in;
      } else {
        return false;  // two tensors meet: not a shift of one
      }
    }
  }
  if (source == kNoValue) return false;
  const Value& x = g.value(source);
  if (x.dtype != DType::Float32 || x.shape.size() != 4 || x.shape[0] != y.shape[0]) return false;
  const bool last = !(x.shape[2] == y.shape[2] && x.shape[3] == y.shape[3]);  // channel-last x
  if (last && (!nhwc || x.shape[1] != y.shape[2] || x.shape[2] != y.shape[3])) return false;
  if (nhwc) *nhwc = last;
  // x as the shift reads it: [N, C, H, W]
  const Shape xs = last ? Shape{x.shape[0], x.shape[3], x.shape[1], x.shape[2]} : x.shape;
  const int64_t numel = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3];
  if (numel <= 0 || numel >= (int64_t{1} << 24)) return false;  // labels must stay exact in float
  std::vector<NodeId> order;
  bool scatter = false, mask = false;
  for (NodeId id : g.topological_order())
    if (region.count(id)) {
      order.push_back(id);
      scatter |= g.node(id).op == OpType::ScatterND;
      mask |= g.node(id).op == OpType::Mul || g.node(id).op == OpType::Where;
    }
  for (const float sign : {1.f, -1.f}) {
    Tensor labels(DType::Float32, x.shape);
    // (element (b, c, i, j) of xs labelled sign * (its NCHW index + 1), where x holds it)
    for (int64_t i = 0; i < numel; ++i) {
      int64_t at = i;
      if (last) {
        const int64_t c = i % xs[1], j = i / xs[1] % xs[3], h = i / xs[1] / xs[3] % xs[2], b = i / (xs[1] * xs[2] * xs[3]);
        at = ((b * xs[1] + c) * xs[2] + h) * xs[3] + j;
      }
      labels.data<float>()[i] = sign * static_cast<float>(at + 1);
    }
    const auto out = evaluate(g, order, source, labels, n.outputs[0]);
    if (!out || !read_translation(*out, xs, sign, sp)) return false;
  }
  // (If nothing moved, the region only selects channels: sp.src; recognise_shifts makes it a Gather.)
  sp.form = scatter ? "slice assignment (ScatterND)" : mask ? "masked roll/translation" : "value-moving subgraph";
  return true;
}

}  // namespace

// A one-hot conv with a bias b is a shift plus b. Where every reader is a conv without zero
// padding (group 1, constant weights), b adds sum_taps W_r[m, c] * b[c] to reader output m
// everywhere: it goes into their biases and the shift stays a pure shift. False (nothing
// changed) when some reader is anything else.
bool fold_shift_bias(Graph& g, ValueId out, const std::vector<float>& b) {
  const Value& ov = g.value(out);
  if (ov.is_output || ov.consumers.empty()) return false;
  for (NodeId r : ov.consumers) {
    const Node& rn = g.node(r);
    if (rn.op != OpType::Conv || rn.inputs[0] != out) return false;
    const auto& rp = rn.p<ConvParams>();
    if (rp.group != 1 || !rp.pre_shift.empty() || rp.fused_sum) return false;
    for (int64_t pad : rp.pads)
      if (pad != 0) return false;
    for (size_t i = 1; i < rn.inputs.size(); ++i)
      if (rn.inputs[i] == out || (rn.inputs[i] != kNoValue && i <= 2 && !g.value(rn.inputs[i]).is_constant())) return false;
    const Value& w = g.value(rn.inputs[1]);
    if (w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[1] != static_cast<int64_t>(b.size())) return false;
  }
  for (NodeId r : std::vector<NodeId>(ov.consumers)) {
    const Node& rn = g.node(r);
    const Tensor& w = g.value(rn.inputs[1]).constant;
    const int64_t cm = w.shape()[0], c = w.shape()[1], taps = w.shape()[2] * w.shape()[3];
    const bool had = rn.inputs.size() > 2 && rn.inputs[2] != kNoValue;
    Tensor nb(DType::Float32, {cm});
    for (int64_t mo = 0; mo < cm; ++mo) {
      double acc = had ? g.value(rn.inputs[2]).constant.data<float>()[mo] : 0.0;
      for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t t = 0; t < taps; ++t) acc += static_cast<double>(w.data<float>()[(mo * c + ci) * taps + t]) * b[static_cast<size_t>(ci)];
      nb.data<float>()[mo] = static_cast<float>(acc);
    }
    const ValueId bid = add_constant(g, rn.name + "__shift_bias", std::move(nb));
    set_input(g.node(r), 2, bid);
  }
  return true;
}

// A one-hot conv whose taps are v_c (not 1) is the shift scaled per channel. Where every
// reader is a group-1 conv with constant weights reading it as its input (zero padding or
// not: v * 0 is 0), the scales go into the readers' weights, W[:, c] * v_c. `apply` false:
// only whether they can.
bool fold_shift_scale(Graph& g, ValueId out, const std::vector<float>& v, bool apply) {
  const Value& ov = g.value(out);
  if (ov.is_output || ov.consumers.empty()) return false;
  for (NodeId r : ov.consumers) {
    const Node& rn = g.node(r);
    if (rn.op != OpType::Conv || rn.inputs[0] != out || rn.p<ConvParams>().group != 1 ||
        !rn.p<ConvParams>().pre_shift.empty())
      return false;
    for (size_t i = 1; i < rn.inputs.size(); ++i)
      if (rn.inputs[i] == out) return false;
    const Value& w = g.value(rn.inputs[1]);
    if (!w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[1] != static_cast<int64_t>(v.size()))
      return false;
    // A finite weight times its scale past float's range (1e20 x 1e20) would be inf in the
    // reader, and 0 x inf NaN where the model computes (x v) W, finite for small x: not folded
    // (the one-hot conv then runs as the model wrote it).
    const int64_t c = w.shape[1], taps = w.shape[2] * w.shape[3];
    const float* wd = w.constant.data<float>();
    for (int64_t i = 0; i < w.constant.numel(); ++i)
      if (std::isfinite(wd[i]) && !std::isfinite(wd[i] * v[static_cast<size_t>(i / taps % c)])) return false;
  }
  if (!apply) return true;
  for (NodeId r : std::vector<NodeId>(ov.consumers)) {
    const Tensor& w = g.value(g.node(r).inputs[1]).constant;
    const int64_t c = w.shape()[1], taps = w.shape()[2] * w.shape()[3];
    Tensor nw(DType::Float32, w.shape());
    for (int64_t i = 0; i < w.numel(); ++i) nw.data<float>()[i] = w.data<float>()[i] * v[static_cast<size_t>(i / taps % c)];
    const ValueId wid = add_constant(g, g.node(r).name + "__shift_scaled", std::move(nw));
    set_input(g.node(r), 1, wid);
  }
  return true;
}

// A value-moving region that only selects channels of x (ShuffleNet's channel shuffle as
// Reshape -> Transpose -> Reshape, torch.chunk's Slices, a flip, a Concat of slices of one
// tensor): node `id` becomes Gather(x, idx, axis 1), one op that also runs on NHWC data (the
// shuffle's 5-D Transpose ran on NCHW with reorders around it).
void make_channel_gather(Graph& g, NodeId id, ValueId x, const std::vector<int32_t>& src) {
  Tensor idx(DType::Int64, {static_cast<int64_t>(src.size())});
  for (size_t i = 0; i < src.size(); ++i) idx.data<int64_t>()[i] = src[i];
  const ValueId iv = add_constant(g, g.node(id).name + "__channels", std::move(idx));
  Node& n = g.node(id);
  n.op = OpType::Gather;
  n.params = AxisParams{1};
  n.inputs = {x, iv};
}

int recognise_shifts(Graph& g) {
  g.rebuild_links();
  int found = 0;
  for (NodeId id : g.topological_order()) {
    ShiftParams sp;
    ValueId src = kNoValue;
    const Node& n = g.node(id);
    std::vector<float> bias, scale;
    if (one_hot_conv_shift(g, n, sp, bias, scale)) {
      const ValueId out = n.outputs[0];
      // The bias first (it meets the readers' weights unscaled: W (v shift + b) = (W v) shift + W b).
      // Scales or a bias that cannot go into the readers (a ReLU or a padded conv reads the
      // shift, or it is an output): the one-hot conv stays a depthwise conv, which oneDNN runs
      // with the BatchNorm folded in and the ReLU fused (0.125 ms at 56x56 x 96 channels). As a
      // shift step, an affine step and a ReLU (tried in stop 28) the three took 0.60 ms, and
      // with the shift step gathered since, 0.13 + 0.04 + 0.03 ms.
      if (!scale.empty() && !fold_shift_scale(g, out, scale, false)) continue;
      if (!bias.empty() && !fold_shift_bias(g, out, bias)) continue;
      if (!scale.empty()) fold_shift_scale(g, out, scale, true);
      src = g.node(id).inputs[0];
    } else if (!concat_shift(g, n, sp, src)) {
      sp = ShiftParams{};
      bool nhwc = false;
      if (!evaluated_shift(g, n, sp, src, false, &nhwc)) continue;
      if (!sp.moves()) continue;  // a channel selection: the second pass below
      if (nhwc) {  // the shift reads x transposed to NCHW, one Transpose node ahead of it
        const Shape& xs = g.value(src).shape;
        Value t;
        t.name = g.node(id).name + "__input_to_nchw";  // (one per shift: two shifts may read one x)
        t.dtype = DType::Float32;
        t.shape = {xs[0], xs[3], xs[1], xs[2]};
        t.shape_known = true;
        Node tn;
        tn.op = OpType::Transpose;
        tn.name = g.node(id).name + "__input_to_nchw";
        tn.params = TransposeParams{{0, 3, 1, 2}};
        tn.inputs = {src};
        tn.outputs = {g.add_value(std::move(t))};
        src = tn.outputs[0];
        g.add_node(std::move(tn));
      }
    }
    Node& m = g.node(id);
    m.op = OpType::SluiceShift;
    m.params = sp;
    m.inputs = {src};
    ++found;
  }
  g.rebuild_links();
  // Regions that only select channels, now with Concats as their bounds (ShuffleNet's shuffle
  // reads a Concat of two branches, and its chunks feed the next Concat): Gathers. After the
  // shifts, so that no shift written as a Concat of slices loses a part to a Gather first.
  for (NodeId id : g.topological_order()) {
    ShiftParams sp;
    ValueId src = kNoValue;
    const Node& n = g.node(id);
    if (n.op == OpType::Gather || n.dead || !evaluated_shift(g, n, sp, src, true) || sp.moves()) continue;
    bool identity = static_cast<int64_t>(sp.src.size()) == g.value(src).shape[1];
    for (size_t o = 0; o < sp.src.size() && identity; ++o) identity = sp.src[o] == static_cast<int32_t>(o);
    if (!identity) make_channel_gather(g, id, src, sp.src);  // an identity (an output's Identity node) stays
  }
  g.rebuild_links();
  // Fuse into a 1x1 conv that is the shift's only reader.
  for (NodeId id : g.topological_order()) {
    Node& s = g.node(id);
    if (s.op != OpType::SluiceShift || s.dead) continue;
    const Value& out = g.value(s.outputs[0]);
    if (out.is_output || out.consumers.size() != 1) continue;
    Node& c = g.node(out.consumers[0]);
    if (c.op != OpType::Conv || c.inputs[0] != s.outputs[0] || !s.p<ShiftParams>().same_size()) continue;
    auto& cp = c.p<ConvParams>();
    const Value& w = g.value(c.inputs[1]);
    bool ok = w.is_constant() && w.shape.size() == 4 && w.shape[2] == 1 && w.shape[3] == 1 && cp.pre_shift.empty();
    for (int64_t p : cp.pads) ok = ok && p == 0;
    for (size_t i = 1; i < c.inputs.size(); ++i) ok = ok && c.inputs[i] != s.outputs[0];
    if (!ok) continue;
    if (cp.strides[0] != 1 || cp.strides[1] != 1) {
      // A strided 1x1 conv reads every s-th pixel of the shift's output: the shift itself can
      // subsample (a quarter of the copy at stride 2), and the conv runs at stride 1 on what it
      // reads (ShiftResNet's downsampling blocks).
      if (cp.strides[0] > INT32_MAX || cp.strides[1] > INT32_MAX) continue;
      auto& sp = s.p<ShiftParams>();
      const Shape& cy = g.value(c.outputs[0]).shape;
      sp.sy = static_cast<int32_t>(cp.strides[0]);
      sp.sx = static_cast<int32_t>(cp.strides[1]);
      sp.out_h = cy[2];
      sp.out_w = cy[3];
      cp.strides = {1, 1};
      g.value(s.outputs[0]).shape = {cy[0], static_cast<int64_t>(sp.src.size()), cy[2], cy[3]};
      continue;
    }
    if (cp.group != 1 || static_cast<int64_t>(s.p<ShiftParams>().src.size()) != g.value(s.inputs[0]).shape[1]) continue;
    c.p<ConvParams>().pre_shift = s.p<ShiftParams>();
    c.inputs[0] = s.inputs[0];
    s.dead = true;
  }
  g.rebuild_links();
  return found;
}

}  // namespace sluice::graph::passes
