// Gemm on oneDNN's inner product: Y = A * B^T + C for constant B and per-column C,
// weights packed once. Other Gemm forms run the reference kernel.
#include "ops/common/onednn.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

class OneDnnGemm final : public Kernel {
 public:
  OneDnnGemm(const graph::Graph& g, const graph::Node& n) {
    const auto& p = n.p<graph::GemmParams>();
    const Shape& a = g.value(n.inputs[0]).shape;
    const auto& b = g.value(n.inputs[1]);
    const int64_t m = a[0], k = a[1], nn = g.value(n.outputs[0]).shape[1];
    src_md_ = memory::desc({m, k}, memory::data_type::f32, tag::ab);
    dst_md_ = memory::desc({m, nn}, memory::data_type::f32, tag::ab);
    memory::desc w_any({nn, k}, memory::data_type::f32, tag::any);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    memory::desc b_md = has_bias ? memory::desc({nn}, memory::data_type::f32, tag::a) : memory::desc();
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src_md_, w_any, b_md, dst_md_);
    dnnl::primitive_attr attr;
    attr.set_post_ops(onednn::make_post_ops(p.activation, false));
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::inner_product_forward::primitive_desc pd(d, attr, onednn::engine());
    impl_ = pd.impl_info_str();
    scratch_md_ = pd.scratchpad_desc();
    weights_ = onednn::pack(memory::desc({nn, k}, memory::data_type::f32, p.trans_b ? tag::ab : tag::ba),
                            b.constant.raw(), pd.weights_desc());
    if (has_bias) bias_ = onednn::pack(b_md, g.value(n.inputs[2]).constant.raw(), pd.bias_desc());
    prim_ = dnnl::inner_product_forward(pd);
  }

  void run(const KernelArgs& a) const override {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src_md_, onednn::engine(), a.in[0].data)},
                                         {DNNL_ARG_WEIGHTS, weights_},
                                         {DNNL_ARG_DST, memory(dst_md_, onednn::engine(), a.out[0].data)}};
    if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
    onednn::execute(prim_, std::move(args), scratch_md_, a.scratch);
  }
  std::string name() const override { return "onednn:" + impl_; }
  size_t scratch_bytes() const override { return scratch_md_.get_size(); }

 private:
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::inner_product_forward prim_;
  std::string impl_;
};

}  // namespace

std::unique_ptr<Kernel> make_onednn_gemm(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::GemmParams>();
  if (p.trans_a || p.alpha != 1.f || !g.value(n.inputs[1]).is_constant()) return nullptr;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue) {
    const auto& c = g.value(n.inputs[2]);
    const int64_t cols = g.value(n.outputs[0]).shape[1];
    if (p.beta != 1.f || !c.is_constant() || c.constant.numel() != cols) return nullptr;
    if (c.shape.size() == 2 && c.shape[0] != 1) return nullptr;
  }
  return std::make_unique<OneDnnGemm>(g, n);
}

}  // namespace sluice::ops
