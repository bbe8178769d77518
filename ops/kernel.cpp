#include "ops/kernel.h"

#include <algorithm>
#include <cmath>

namespace sluice::ops {

namespace {

// The plain reference kernel of an op, on NCHW data. Unary elementwise kernels
// read each element before writing it, so they may run in place.
class ReferenceKernel final : public Kernel {
 public:
  ReferenceKernel(const graph::Node& n, bool in_place) : node_(n), in_place_(in_place) {}
  void run(const KernelArgs& a) const override { schema(node_.op).reference(node_, a.in, a.out); }
  std::string name() const override { return "reference"; }
  int in_place_input() const override { return in_place_ ? 0 : -1; }

 private:
  graph::Node node_;
  bool in_place_;
};

using graph::is_unary_elementwise;

// A unary elementwise op without a vectorised kernel (Log, Sqrt, Sin, Softplus, ...) on a large
// float tensor: its reference kernel on chunks, in parallel (GELU's Erf ran single-threaded).
class ChunkedUnary final : public Kernel {
 public:
  explicit ChunkedUnary(const graph::Node& n) : node_(n) {}
  void run(const KernelArgs& a) const override {
    const int64_t n = a.in[0].numel(), chunks = (n + kChunk - 1) / kChunk;
    const auto* x = a.in[0].as<const float>();
    auto* y = a.out[0].as<float>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t len = std::min(kChunk, n - c * kChunk);
      const TensorView in{DType::Float32, {len}, const_cast<float*>(x + c * kChunk)};
      TensorView out{DType::Float32, {len}, y + c * kChunk};
      schema(node_.op).reference(node_, std::span<const TensorView>(&in, 1), std::span<TensorView>(&out, 1));
    }
  }
  std::string name() const override { return "reference (parallel chunks)"; }
  int in_place_input() const override { return 0; }

 private:
  static constexpr int64_t kChunk = 16384;
  graph::Node node_;
};

}  // namespace

std::unique_ptr<Kernel> make_kernel(const graph::Graph& g, graph::NodeId id, const KernelOptions& opts) {
  const graph::Node& n = g.node(id);
  using graph::OpType;
  if (opts.optimize) {
    std::unique_ptr<Kernel> k;
    if (sums_over_nothing(g, n)) {
      if (n.op == OpType::Conv && n.layout == graph::Layout::NHWC) return make_empty_conv(g, n);
    } else switch (n.op) {
      case OpType::Conv: k = make_conv(g, n, opts.sparse); break;
      case OpType::ConvTranspose:
        k = n.layout == graph::Layout::NHWC ? make_nhwc_deconv(g, n) : make_onednn_deconv(g, n);
        break;
      case OpType::Gemm: k = make_gemm(g, n, opts.sparse); break;
      case OpType::MatMul: k = make_matmul(g, n, opts.sparse); break;
      case OpType::SluiceGatedConv: k = make_gated_conv(g, n); break;
      case OpType::MaxPool: case OpType::AveragePool:
        k = n.layout == graph::Layout::Planar ? make_resident_pool(g, n) : make_nhwc_pool(g, n);
        break;
      case OpType::GlobalAveragePool:
        k = n.layout == graph::Layout::NHWC ? make_nhwc_pool(g, n) : make_fast_reduce_mean(g, n);
        break;
      case OpType::GlobalMaxPool:  // (NCHW: the reference kernel, plane by plane)
        if (n.layout == graph::Layout::NHWC) k = make_nhwc_pool(g, n);
        break;
      case OpType::BatchNormalization: k = make_channel_affine(g, n); break;
      case OpType::SluiceReorder: k = make_reorder(g, n); break;
      case OpType::SluiceShift: k = make_nhwc_shift(g, n); break;
      case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::Relu: case OpType::Sigmoid:
      case OpType::HardSwish: case OpType::LeakyRelu: case OpType::HardSigmoid: case OpType::Pow: case OpType::Erf:
      case OpType::PRelu: case OpType::Tanh: case OpType::Exp: case OpType::Softplus:
        k = make_fast_elementwise(g, n);
        break;
      case OpType::ReduceMean: k = make_fast_reduce_mean(g, n); break;
      case OpType::Transpose: k = make_layout_transpose(g, n); break;
      case OpType::Gather: k = make_channel_gather(g, n); break;
      case OpType::Concat: k = make_block_concat(g, n); break;
      case OpType::Resize: case OpType::Upsample: k = make_fast_resize(g, n); break;
      case OpType::InstanceNormalization: k = make_fast_instance_norm(g, n); break;
      case OpType::Softmax: k = make_fast_softmax(g, n); break;
      case OpType::DepthToSpace: k = make_nhwc_depth_to_space(g, n); break;
      default: break;
    }
    if (!k && is_unary_elementwise(n.op) && n.layout == graph::Layout::NCHW && g.value(n.inputs[0]).dtype == DType::Float32 &&
        TensorView{DType::Float32, g.value(n.inputs[0]).shape, nullptr}.numel() >= 65536)
      k = std::make_unique<ChunkedUnary>(n);
    if (k) return k;
    if (n.layout == graph::Layout::Planar) g.fail(id, "internal error: no kernel for resident planes");
    if (n.layout == graph::Layout::NHWC) {
      if (auto a = make_nhwc_adapter(g, n)) return a;
      g.fail(id, "internal error: no NHWC kernel for this op");
    }
  }
  if (n.layout != graph::Layout::NCHW && n.op != OpType::SluiceReorder)
    g.fail(id, "internal error: NHWC layout without an optimised kernel");
  return std::make_unique<ReferenceKernel>(n, is_unary_elementwise(n.op));
}

bool sums_over_nothing(const graph::Graph& g, const graph::Node& n) {
  using graph::OpType;
  if (n.op != OpType::Conv && n.op != OpType::ConvTranspose && n.op != OpType::Gemm && n.op != OpType::MatMul)
    return false;
  auto numel = [&](graph::ValueId v) { return TensorView{g.value(v).dtype, g.value(v).shape, nullptr}.numel(); };
  if (n.outputs.empty() || !g.value(n.outputs[0]).shape_known || numel(n.outputs[0]) == 0) return false;
  for (graph::ValueId v : n.inputs)
    if (v != graph::kNoValue && g.value(v).shape_known && numel(v) == 0) return true;
  return false;
}

namespace {
int64_t count_macs(const graph::Graph& g, const graph::Node& n, bool dense) {
  using graph::OpType;
  auto shape = [&](graph::ValueId v) -> const Shape& { return g.value(v).shape; };
  auto prod = [](const Shape& s, size_t from) {
    int64_t p = 1;
    for (size_t i = from; i < s.size(); ++i) p *= s[i];
    return p;
  };
  switch (n.op) {
    case OpType::Conv:
    case OpType::SluiceGatedConv: {
      const Shape& w = shape(n.inputs[1]);  // [M, C/g, kh, kw]
      const Shape& y = shape(n.outputs[0]);  // [N, M, OH, OW]
      const graph::ConvParams& cp = graph::conv_params(n);
      // A fused shift's depthwise conv (if it was one) counts in the dense MACs, and runs none.
      const int64_t shift = dense ? y[0] * cp.pre_shift.dense_macs : 0;
      if (dense && cp.dense_out > 0)  // statically pruned: count the model's channels
        return shift + y[0] * cp.dense_out * cp.dense_in * prod(w, 2) * prod(y, 2);
      if (dense && cp.dense_in > 0)  // dead inputs removed (a gated conv's outputs stay)
        return shift + y[0] * y[1] * cp.dense_in * prod(w, 2) * prod(y, 2);
      return shift + y[0] * y[1] * prod(w, 1) * prod(y, 2);
    }
    case OpType::ConvTranspose: {  // each input pixel meets every tap of its group's filters:
      // N * C_in * (C_out / groups) * kh * kw * H_in * W_in (the conv it is the gradient of)
      const Shape& x = shape(n.inputs[0]);
      const int64_t in = shape(n.inputs[1])[0], dense_in = n.p<graph::ConvTransposeParams>().dense_in;
      const int64_t macs = x.size() < 3 ? 0 : x[0] * prod(shape(n.inputs[1]), 0) * prod(x, 2);
      return dense && dense_in > 0 && in > 0 ? macs / in * dense_in : macs;  // statically pruned inputs
    }
    case OpType::SluiceShift:
      return dense ? shape(n.outputs[0])[0] * n.p<graph::ShiftParams>().dense_macs : 0;
    case OpType::Gemm: {
      const auto& p = n.p<graph::GemmParams>();
      const Shape& a = shape(n.inputs[0]);
      const Shape& y = shape(n.outputs[0]);
      return y[0] * (dense && p.dense_n > 0 ? p.dense_n : y[1]) * (dense && p.dense_k > 0 ? p.dense_k : p.trans_a ? a[0] : a[1]);
    }
    case OpType::MatMul: {
      const Shape& a = shape(n.inputs[0]);
      return prod(shape(n.outputs[0]), 0) * a.back();
    }
    default: return 0;
  }
}

}  // namespace

bool all_finite(const Tensor& t) {
  // Exponent bits all ones (inf, NaN), or-ed over the tensor with no early exit: integer ops
  // that vectorise (std::isfinite took 5x as long: 2.5% of the slimmed ResNet-18's run).
  const int64_t n = t.numel();
  if (t.dtype() == DType::Float32) {
    const auto* p = static_cast<const uint32_t*>(t.raw());
    uint32_t bad = 0;
    // (On every thread for an image-sized input: Session::run checks its inputs before each
    // run while the other threads wait; a 192 x 28 x 28 input took ~8% of a 0.19 ms model.)
#pragma omp parallel for reduction(| : bad) schedule(static) if (n >= (int64_t{1} << 16))
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((p[i] & 0x7F800000u) == 0x7F800000u);
    return bad == 0;
  }
  if (t.dtype() == DType::Float64) {
    const auto* p = static_cast<const uint64_t*>(t.raw());
    constexpr uint64_t kExp = 0x7FF0000000000000ull;
    uint64_t bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static) if (n >= (int64_t{1} << 15))
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint64_t>((p[i] & kExp) == kExp);
    return bad == 0;
  }
  return true;
}

std::vector<float> constant_or_zeros(const graph::Graph& g, const graph::Node& n, size_t input, int64_t size,
                                     int64_t padded) {
  std::vector<float> v(static_cast<size_t>(std::max(size, padded)), 0.f);
  if (n.inputs.size() > input && n.inputs[input] != graph::kNoValue) {
    const float* p = g.value(n.inputs[input]).constant.data<float>();
    std::copy(p, p + size, v.begin());
  }
  return v;
}

int64_t dense_macs(const graph::Graph& g, const graph::Node& n) { return count_macs(g, n, true); }
int64_t static_macs(const graph::Graph& g, const graph::Node& n) { return count_macs(g, n, false); }

}  // namespace sluice::ops
