// Conv on oneDNN: NHWC activations, weights packed once into the layout the
// primitive chooses (format_tag::any), bias, fused sum and activation as post-ops.
#include <cstring>

#include "ops/common/onednn.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

class OneDnnConv final : public Kernel {
 public:
  OneDnnConv(const graph::Graph& g, const graph::Node& n) : fused_sum_(n.p<graph::ConvParams>().fused_sum) {
    const auto& p = n.p<graph::ConvParams>();
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Value& w = g.value(n.inputs[1]);
    const Shape& ys = g.value(n.outputs[0]).shape;
    const auto src_tag = n.layout == graph::Layout::NHWC ? tag::nhwc : tag::nchw;
    memory::dims src_dims(xs.begin(), xs.end()), dst_dims(ys.begin(), ys.end());
    memory::dims w_dims(w.shape.begin(), w.shape.end());
    tag w_tag = tag::oihw;
    if (p.group > 1) {
      w_dims = {p.group, w.shape[0] / p.group, w.shape[1], w.shape[2], w.shape[3]};
      w_tag = tag::goihw;
    }
    src_md_ = memory::desc(src_dims, memory::data_type::f32, src_tag);
    dst_md_ = memory::desc(dst_dims, memory::data_type::f32, src_tag);
    memory::desc w_any(w_dims, memory::data_type::f32, tag::any);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    memory::desc b_md = has_bias ? memory::desc({ys[1]}, memory::data_type::f32, tag::a) : memory::desc();
    memory::dims strides{p.strides[0], p.strides[1]}, dil{p.dilations[0] - 1, p.dilations[1] - 1};
    memory::dims pad_l{p.pads[0], p.pads[1]}, pad_r{p.pads[2], p.pads[3]};
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md_,
                                      w_any, b_md, dst_md_, strides, dil, pad_l, pad_r);
    dnnl::primitive_attr attr;
    attr.set_post_ops(onednn::make_post_ops(p.activation, fused_sum_));
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::primitive_desc pd(d, attr, onednn::engine());
    impl_ = pd.impl_info_str();
    scratch_md_ = pd.scratchpad_desc();
    weights_ = onednn::pack(memory::desc(w_dims, memory::data_type::f32, w_tag), w.constant.raw(), pd.weights_desc());
    if (has_bias) {
      const Value& b = g.value(n.inputs[2]);
      if (!b.is_constant()) throw Error("conv bias must be constant");
      bias_ = onednn::pack(b_md, b.constant.raw(), pd.bias_desc());
    }
    prim_ = dnnl::convolution_forward(pd);
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
  using Value = graph::Value;
  bool fused_sum_;
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::convolution_forward prim_;
  std::string impl_;
};

}  // namespace

std::unique_ptr<Kernel> make_onednn_conv(const graph::Graph& g, const graph::Node& n) {
  const auto& w = g.value(n.inputs[1]);
  if (!w.is_constant() || g.value(n.inputs[0]).shape.size() != 4) return nullptr;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return nullptr;
  return std::make_unique<OneDnnConv>(g, n);
}

}  // namespace sluice::ops
