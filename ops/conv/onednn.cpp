// Conv on oneDNN: NHWC activations, weights packed once into the layout the
// primitive chooses (format_tag::any), bias, fused sum and activation as post-ops.
//
// A second form runs the same conv with the activation layout oneDNN chooses too (blocked,
// nChw8c on AVX2), reordering the input in and the output back around it. Where that can
// pay is onednn::blocked_form_may_pay; whether it does is measured per layer (make_dense_conv).
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include <omp.h>

#include "ops/common/onednn.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

// The primitive for node n with activations src_md -> dst_md (concrete, or tag::any), its
// packed weights and bias. With `packed`, its weights and bias where its primitive takes the
// same layouts (another primitive of the same node: they are not packed again).
struct ConvSetup {
  dnnl::convolution_forward::primitive_desc pd;
  memory weights, bias;
};
ConvSetup setup_conv(const graph::Graph& g, const graph::Node& n, const memory::desc& src_md,
                     const memory::desc& dst_md, const ConvSetup* packed = nullptr) {
  const auto& p = n.p<graph::ConvParams>();
  const graph::Value& w = g.value(n.inputs[1]);
  const Shape& ys = g.value(n.outputs[0]).shape;
  memory::dims w_dims(w.shape.begin(), w.shape.end());
  tag w_tag = tag::oihw;
  if (p.group > 1) {
    w_dims = {p.group, w.shape[0] / p.group, w.shape[1], w.shape[2], w.shape[3]};
    w_tag = tag::goihw;
  }
  memory::desc w_any(w_dims, memory::data_type::f32, tag::any);
  const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
  memory::desc b_md = has_bias ? memory::desc({ys[1]}, memory::data_type::f32, tag::a) : memory::desc();
  memory::dims strides{p.strides[0], p.strides[1]}, dil{p.dilations[0] - 1, p.dilations[1] - 1};
  memory::dims pad_l{p.pads[0], p.pads[1]}, pad_r{p.pads[2], p.pads[3]};
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
                                    w_any, b_md, dst_md, strides, dil, pad_l, pad_r);
  dnnl::primitive_attr attr;
  attr.set_post_ops(onednn::make_post_ops(p.activation, p.fused_sum));
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  ConvSetup s{dnnl::convolution_forward::primitive_desc(d, attr, onednn::engine()), {}, {}};
  if (packed && packed->pd.weights_desc() == s.pd.weights_desc() && packed->pd.bias_desc() == s.pd.bias_desc()) {
    s.weights = packed->weights, s.bias = packed->bias;
    return s;
  }
  s.weights = onednn::pack(memory::desc(w_dims, memory::data_type::f32, w_tag), w.constant.raw(), s.pd.weights_desc());
  if (has_bias) {
    const graph::Value& b = g.value(n.inputs[2]);
    if (!b.is_constant()) throw Error("conv bias must be constant");
    s.bias = onednn::pack(b_md, b.constant.raw(), s.pd.bias_desc());
  }
  return s;
}

memory::desc activation_md(const Shape& s, tag t) {
  return memory::desc(memory::dims(s.begin(), s.end()), memory::data_type::f32, t);
}

class OneDnnConv final : public Kernel {
 public:
  OneDnnConv(const graph::Graph& g, const graph::Node& n) : fused_sum_(n.p<graph::ConvParams>().fused_sum) {
    const auto t = n.layout == graph::Layout::NHWC ? tag::nhwc : tag::nchw;
    src_md_ = activation_md(g.value(n.inputs[0]).shape, t);
    dst_md_ = activation_md(g.value(n.outputs[0]).shape, t);
    ConvSetup s = setup_conv(g, n, src_md_, dst_md_);
    impl_ = s.pd.impl_info_str();
    scratch_md_ = s.pd.scratchpad_desc();
    weights_ = s.weights, bias_ = s.bias;
    prim_ = dnnl::convolution_forward(s.pd);
  }

  void run(const KernelArgs& a) const override {
    void* dst = a.out[0].data;
    if (fused_sum_ && a.in[3].data != dst)
      std::memcpy(dst, a.in[3].data, static_cast<size_t>(a.out[0].numel()) * sizeof(float));
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(src_md_, onednn::engine(), a.in[0].data)},
        {DNNL_ARG_WEIGHTS, weights_},
        {DNNL_ARG_DST, memory(dst_md_, onednn::engine(), dst)}};
    if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
    onednn::execute(prim_, std::move(args), scratch_md_, a.scratch);
  }
  std::string name() const override { return "onednn:" + impl_; }
  size_t scratch_bytes() const override { return scratch_md_.get_size(); }
  // The fused-sum operand may share the output's buffer: the conv accumulates onto it.
  int in_place_input() const override { return fused_sum_ ? 3 : -1; }

 private:
  bool fused_sum_;
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::convolution_forward prim_;
  std::string impl_;
};

// The NHWC conv in oneDNN's own activation layout: NHWC input -> its layout (scratch), conv
// (the fused sum's operand reordered into the destination first), its layout -> NHWC output.
class OneDnnConvBlocked final : public Kernel {
 public:
  OneDnnConvBlocked(const graph::Graph& g, const graph::Node& n, ConvSetup s)
      : fused_sum_(n.p<graph::ConvParams>().fused_sum),
        nhwc_src_(activation_md(g.value(n.inputs[0]).shape, tag::nhwc)),
        nhwc_dst_(activation_md(g.value(n.outputs[0]).shape, tag::nhwc)),
        src_md_(s.pd.src_desc()),
        dst_md_(s.pd.dst_desc()),
        scratch_md_(s.pd.scratchpad_desc()),
        weights_(s.weights),
        bias_(s.bias),
        prim_(s.pd),
        to_src_(dnnl::reorder::primitive_desc(onednn::engine(), nhwc_src_, onednn::engine(), src_md_)),
        to_dst_(dnnl::reorder::primitive_desc(onednn::engine(), nhwc_dst_, onednn::engine(), dst_md_)),
        from_dst_(dnnl::reorder::primitive_desc(onednn::engine(), dst_md_, onednn::engine(), nhwc_dst_)),
        impl_(s.pd.impl_info_str()) {}

  void run(const KernelArgs& a) const override {
    auto* base = static_cast<std::byte*>(a.scratch);
    memory src(src_md_, onednn::engine(), base);
    memory dst(dst_md_, onednn::engine(), base + aligned(src_md_.get_size()));
    void* conv_scratch = base + aligned(src_md_.get_size()) + aligned(dst_md_.get_size());
    memory x(nhwc_src_, onednn::engine(), a.in[0].data), y(nhwc_dst_, onednn::engine(), a.out[0].data);
    dnnl::stream& st = onednn::thread_stream();
    to_src_.execute(st, x, src);
    if (fused_sum_) {
      memory sum(nhwc_dst_, onednn::engine(), a.in[3].data);
      to_dst_.execute(st, sum, dst);
    }
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights_}, {DNNL_ARG_DST, dst}};
    if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
    onednn::execute(prim_, std::move(args), scratch_md_, conv_scratch);
    from_dst_.execute(st, dst, y);
    st.wait();
  }
  std::string name() const override { return "onednn:" + impl_ + " (blocked activations, reordered)"; }
  size_t scratch_bytes() const override {
    return aligned(src_md_.get_size()) + aligned(dst_md_.get_size()) + scratch_md_.get_size();
  }
  // Reads the fused-sum operand (into its own buffer) before it writes the output.
  int in_place_input() const override { return fused_sum_ ? 3 : -1; }

 private:
  static size_t aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }
  bool fused_sum_;
  memory::desc nhwc_src_, nhwc_dst_, src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::convolution_forward prim_;
  dnnl::reorder to_src_, to_dst_, from_dst_;
  std::string impl_;
};

// The NHWC conv in bands of output rows, one per thread, each band a single-threaded oneDNN
// primitive of its own (its input rows with the padding only at the map's real edges). On a
// thin map oneDNN's own split leaves a thread idle part of the time: the slimmed ResNet-18's
// 14x14 77-channel 3x3 conv ran 1.33x faster on 2 threads than on 1 (89.5 -> 67.4 us,
// sluice_bench_conv). Batch 1, group 1; timed against the plain oneDNN conv (make_dense_conv).
class OneDnnConvRows final : public Kernel {
 public:
  OneDnnConvRows(const graph::Graph& g, const graph::Node& n, int threads) : fused_sum_(n.p<graph::ConvParams>().fused_sum) {
    const auto& p = n.p<graph::ConvParams>();
    const Shape &xs = g.value(n.inputs[0]).shape, &ys = g.value(n.outputs[0]).shape;
    const int64_t c = xs[1], h = xs[2], w = xs[3], m = ys[1], oh = ys[2], ow = ys[3];
    const int64_t kh = g.value(n.inputs[1]).shape[2], st = p.strides[0], ext = (kh - 1) * p.dilations[0] + 1;
    in_row_ = w * c, out_row_ = ow * m;
    std::optional<ConvSetup> first;
    for (int b = 0; b < threads; ++b) {
      Band band;
      band.o0 = oh * b / threads;
      const int64_t o1 = oh * (b + 1) / threads;
      const int64_t i_start = band.o0 * st - p.pads[0], i_end = (o1 - 1) * st - p.pads[0] + ext;
      band.i0 = std::max<int64_t>(0, i_start);
      const int64_t i1 = std::min(h, i_end);
      band.out_rows = o1 - band.o0;
      graph::Node nb = n;
      auto& pb = nb.p<graph::ConvParams>();
      pb.pads = {band.i0 - i_start, p.pads[1], i_end - i1, p.pads[3]};
      band.src_md = activation_md({1, c, i1 - band.i0, w}, tag::nhwc);
      band.dst_md = activation_md({1, m, band.out_rows, ow}, tag::nhwc);
      // The bands' primitives take the same packed weights where their layouts agree.
      ConvSetup s = setup_conv(g, nb, band.src_md, band.dst_md, first ? &*first : nullptr);
      if (!first) first = s, impl_ = s.pd.impl_info_str();
      band.scratch_md = s.pd.scratchpad_desc();
      band.weights = s.weights, band.bias = s.bias;
      band.prim = dnnl::convolution_forward(s.pd);
      band.scratch_at = scratch_;
      scratch_ += (band.scratch_md.get_size() + 63) / 64 * 64;
      bands_.push_back(std::move(band));
    }
  }

  void run(const KernelArgs& a) const override {
    const auto* x = a.in[0].as<const float>();
    auto* y = a.out[0].as<float>();
    const float* sum = fused_sum_ ? a.in[3].as<const float>() : nullptr;
    const int nb = static_cast<int>(bands_.size());
#pragma omp parallel num_threads(nb)
    {
      // (Fewer threads than bands, if the runtime gives fewer: each takes its share.)
      for (int b = omp_get_thread_num(); b < nb; b += omp_get_num_threads()) {
        const Band& band = bands_[static_cast<size_t>(b)];
        float* yb = y + band.o0 * out_row_;
        if (sum && sum != y)
          std::memcpy(yb, sum + band.o0 * out_row_, static_cast<size_t>(band.out_rows * out_row_) * sizeof(float));
        std::unordered_map<int, memory> args{
            {DNNL_ARG_SRC, memory(band.src_md, onednn::engine(), const_cast<float*>(x + band.i0 * in_row_))},
            {DNNL_ARG_WEIGHTS, band.weights},
            {DNNL_ARG_DST, memory(band.dst_md, onednn::engine(), yb)}};
        if (band.bias) args.emplace(DNNL_ARG_BIAS, band.bias);
        onednn::execute(band.prim, std::move(args), band.scratch_md, static_cast<std::byte*>(a.scratch) + band.scratch_at);
      }
    }
  }
  std::string name() const override {
    return "onednn:" + impl_ + " (" + std::to_string(bands_.size()) + " bands of rows, one per thread)";
  }
  size_t scratch_bytes() const override { return scratch_; }
  int in_place_input() const override { return fused_sum_ ? 3 : -1; }

 private:
  struct Band {
    int64_t o0 = 0, out_rows = 0, i0 = 0;  // first output row, output rows, first input row
    memory::desc src_md, dst_md, scratch_md;
    memory weights, bias;
    dnnl::convolution_forward prim;
    size_t scratch_at = 0;
  };
  bool fused_sum_;
  int64_t in_row_ = 0, out_row_ = 0;  // floats per NHWC row
  std::vector<Band> bands_;
  size_t scratch_ = 0;
  std::string impl_;
};

bool supported(const graph::Graph& g, const graph::Node& n) {
  const auto& w = g.value(n.inputs[1]);
  if (!w.is_constant() || g.value(n.inputs[0]).shape.size() != 4) return false;
  return n.inputs.size() <= 2 || n.inputs[2] == graph::kNoValue || g.value(n.inputs[2]).is_constant();
}

}  // namespace

std::unique_ptr<Kernel> make_onednn_conv(const graph::Graph& g, const graph::Node& n) {
  if (!supported(g, n)) return nullptr;
  return std::make_unique<OneDnnConv>(g, n);
}

std::unique_ptr<Kernel> make_onednn_conv_rows(const graph::Graph& g, const graph::Node& n) {
  if (!supported(g, n) || n.layout != graph::Layout::NHWC) return nullptr;
  const auto& p = n.p<graph::ConvParams>();
  const Shape& xs = g.value(n.inputs[0]).shape;
  const int threads = omp_get_max_threads();
  if (threads < 2 || xs[0] != 1 || p.group != 1 || g.value(n.outputs[0]).shape[2] < 2 * threads) return nullptr;
  return std::make_unique<OneDnnConvRows>(g, n, threads);
}

std::unique_ptr<Kernel> make_onednn_conv_blocked(const graph::Graph& g, const graph::Node& n) {
  if (!supported(g, n) || n.layout != graph::Layout::NHWC) return nullptr;
  const memory::desc src_any = activation_md(g.value(n.inputs[0]).shape, tag::any);
  const memory::desc dst_any = activation_md(g.value(n.outputs[0]).shape, tag::any);
  ConvSetup s = setup_conv(g, n, src_any, dst_any);
  if (s.pd.src_desc() == activation_md(g.value(n.inputs[0]).shape, tag::nhwc)) return nullptr;  // nothing to gain
  return std::make_unique<OneDnnConvBlocked>(g, n, std::move(s));
}

}  // namespace sluice::ops
