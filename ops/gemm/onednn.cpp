// Gemm on oneDNN's inner product: Y = A * B^T + C for constant B and per-column C,
// weights packed once; from 8 rows also as a 1x1 conv, the faster measured. Other Gemm forms
// run the reference kernel. MatMul with a constant
// 2-D B (a Linear layer exported as MatMul, e.g. ConvNeXt's channel-last MLPs over
// [N, H, W, C]) runs the same primitive on A viewed as [prod(leading dims), K].
#include <unordered_map>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

class OneDnnGemm final : public Kernel {
 public:
  // Y[m, nn] = A[m, k] * W + bias: W is stored [nn, k] (trans_b) or [k, nn]; bias may be null.
  OneDnnGemm(int64_t m, int64_t k, int64_t nn, const void* w, bool trans_b, const void* bias,
             const graph::FusedActivation& act) {
    src_md_ = memory::desc({m, k}, memory::data_type::f32, tag::ab);
    dst_md_ = memory::desc({m, nn}, memory::data_type::f32, tag::ab);
    memory::desc w_any({nn, k}, memory::data_type::f32, tag::any);
    memory::desc b_md = bias ? memory::desc({nn}, memory::data_type::f32, tag::a) : memory::desc();
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src_md_, w_any, b_md, dst_md_);
    dnnl::primitive_attr attr;
    attr.set_post_ops(onednn::make_post_ops(act, false));
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::inner_product_forward::primitive_desc pd(d, attr, onednn::engine());
    impl_ = pd.impl_info_str();
    scratch_md_ = pd.scratchpad_desc();
    weights_ = onednn::pack(memory::desc({nn, k}, memory::data_type::f32, trans_b ? tag::ab : tag::ba), w,
                            pd.weights_desc());
    if (bias) bias_ = onednn::pack(b_md, bias, pd.bias_desc());
    prim_ = dnnl::inner_product_forward(pd);
  }

  void run(const KernelArgs& a) const override {
    onednn::execute_forward(prim_, src_md_, a.in[0].data, weights_, bias_, dst_md_, a.out[0].data, scratch_md_, a.scratch);
  }
  std::string name() const override { return "onednn:" + impl_; }
  size_t scratch_bytes() const override { return scratch_md_.get_size(); }

 private:
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::inner_product_forward prim_;
  std::string impl_;
};

// The same product, Y[m, nn] = A[m, k] * W + bias, as a 1x1 convolution over an NHWC "image"
// of M pixels and K channels: the same bytes (A row-major is [1, M, 1, K] NHWC, the output
// [M, N] is [1, M, 1, N]), run by oneDNN's 1x1 conv kernels, which on AVX2 outran the inner
// product's gemm fallback on ConvNeXt's channel-last MLPs.
class OneDnnMatMul1x1 final : public Kernel {
 public:
  OneDnnMatMul1x1(int64_t m, int64_t k, int64_t nn, const void* w, bool trans_b, const void* bias,
                  const graph::FusedActivation& act) {
    src_md_ = memory::desc({1, k, m, 1}, memory::data_type::f32, tag::nhwc);
    dst_md_ = memory::desc({1, nn, m, 1}, memory::data_type::f32, tag::nhwc);
    memory::desc w_any({nn, k, 1, 1}, memory::data_type::f32, tag::any);
    memory::desc b_md = bias ? memory::desc({nn}, memory::data_type::f32, tag::a) : memory::desc();
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md_,
                                      w_any, b_md, dst_md_, {1, 1}, {0, 0}, {0, 0});
    dnnl::primitive_attr attr;
    attr.set_post_ops(onednn::make_post_ops(act, false));
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::primitive_desc pd(d, attr, onednn::engine());
    impl_ = pd.impl_info_str();
    scratch_md_ = pd.scratchpad_desc();
    // W stored [N, K] (trans_b) is the weights [N, K, 1, 1]: oihw; B [K, N] is them stored
    // input-major: iohw.
    weights_ = onednn::pack(memory::desc({nn, k, 1, 1}, memory::data_type::f32, trans_b ? tag::oihw : tag::iohw), w,
                            pd.weights_desc());
    if (bias) bias_ = onednn::pack(b_md, bias, pd.bias_desc());
    prim_ = dnnl::convolution_forward(pd);
  }
  void run(const KernelArgs& a) const override {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src_md_, onednn::engine(), a.in[0].data)},
                                         {DNNL_ARG_WEIGHTS, weights_},
                                         {DNNL_ARG_DST, memory(dst_md_, onednn::engine(), a.out[0].data)}};
    if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
    onednn::execute(prim_, std::move(args), scratch_md_, a.scratch);
  }
  std::string name() const override { return "onednn:" + impl_ + " (as a 1x1 conv)"; }
  size_t scratch_bytes() const override { return scratch_md_.get_size(); }

 private:
  memory::desc src_md_, dst_md_, scratch_md_;
  memory weights_, bias_;
  dnnl::convolution_forward prim_;
  std::string impl_;
};

}  // namespace

namespace {

// Whether Gemm n is a form oneDNN's kernels here take: constant B, A not transposed, alpha 1,
// no C or a constant per-column one with beta 1.
bool onednn_gemm_form(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::GemmParams>();
  if (p.trans_a || p.alpha != 1.f || !g.value(n.inputs[1]).is_constant()) return false;
  if (g.value(n.inputs[0]).dtype != DType::Float32 || g.value(n.inputs[1]).dtype != DType::Float32)
    return false;  // (float64: the reference kernel)
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue) {
    const auto& c = g.value(n.inputs[2]);
    const int64_t cols = g.value(n.outputs[0]).shape[1];
    if (p.beta != 1.f || !c.is_constant() || c.constant.numel() != cols) return false;
    if (c.shape.size() == 2 && c.shape[0] != 1) return false;
  }
  return true;
}

// Y[m, nn] = A[m, k] * W + bias on oneDNN's inner product; from 8 rows also as a 1x1 conv, and
// the faster of the two measured on node n.
std::unique_ptr<Kernel> faster_form(const graph::Graph& g, const graph::Node& n, int64_t m, int64_t k, int64_t nn,
                                    const void* w, bool trans_b, const void* bias, const graph::FusedActivation& act) {
  auto ip = std::make_unique<OneDnnGemm>(m, k, nn, w, trans_b, bias, act);
  if (m < 8 || m > (int64_t{1} << 31)) return ip;  // a few rows (a classifier head): the inner product
  auto conv = std::make_unique<OneDnnMatMul1x1>(m, k, nn, w, trans_b, bias, act);
  const std::vector<double> t = time_kernels({ip.get(), conv.get()}, g, n, 5);
  char note[96];
  std::snprintf(note, sizeof note, "[measured: inner product %.3f ms, 1x1 conv %.3f ms]", t[0], t[1]);
  if (t[1] < t[0]) return with_note(std::move(conv), note);
  return with_note(std::move(ip), note);
}

}  // namespace

std::unique_ptr<Kernel> make_onednn_gemm(const graph::Graph& g, const graph::Node& n) {
  if (!onednn_gemm_form(g, n)) return nullptr;
  const auto& p = n.p<graph::GemmParams>();
  const Shape& a = g.value(n.inputs[0]).shape;
  const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
  return faster_form(g, n, a[0], a[1], g.value(n.outputs[0]).shape[1], g.value(n.inputs[1]).constant.raw(), p.trans_b,
                     has_bias ? g.value(n.inputs[2]).constant.raw() : nullptr, p.activation);
}

namespace {

// Rows (the product of A's leading dims), or 0 when MatMul n is not A [..., K] x constant B [K, N].
int64_t matmul_rows(const graph::Graph& g, const graph::Node& n) {
  const graph::Value& a = g.value(n.inputs[0]);
  const graph::Value& b = g.value(n.inputs[1]);
  if (n.layout != graph::Layout::NCHW || a.dtype != DType::Float32 || !b.is_constant() || b.dtype != DType::Float32 ||
      a.shape.size() < 2 || b.shape.size() != 2 || a.shape.back() != b.shape[0] || b.shape[0] == 0 || b.shape[1] == 0)
    return 0;
  int64_t m = 1;
  for (size_t d = 0; d + 1 < a.shape.size(); ++d) m *= a.shape[d];
  return m;
}

}  // namespace

std::unique_ptr<Kernel> make_onednn_matmul_1x1(int64_t m, int64_t k, int64_t nn, const void* w, bool trans_b,
                                               const void* bias, const graph::FusedActivation& act) {
  return std::make_unique<OneDnnMatMul1x1>(m, k, nn, w, trans_b, bias, act);
}

std::unique_ptr<Kernel> make_onednn_1x1(const graph::Graph& g, const graph::Node& n) {
  if (n.op == graph::OpType::Gemm) {
    if (!onednn_gemm_form(g, n)) return nullptr;
    const auto& p = n.p<graph::GemmParams>();
    const Shape& a = g.value(n.inputs[0]).shape;
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    return std::make_unique<OneDnnMatMul1x1>(a[0], a[1], g.value(n.outputs[0]).shape[1],
                                             g.value(n.inputs[1]).constant.raw(), p.trans_b,
                                             has_bias ? g.value(n.inputs[2]).constant.raw() : nullptr, p.activation);
  }
  const int64_t m = matmul_rows(g, n);
  if (m == 0 || m > (int64_t{1} << 31)) return nullptr;
  const graph::Value& b = g.value(n.inputs[1]);
  return std::make_unique<OneDnnMatMul1x1>(m, b.shape[0], b.shape[1], b.constant.raw(), false, nullptr,
                                           graph::FusedActivation{});
}

std::unique_ptr<Kernel> make_onednn_matmul(const graph::Graph& g, const graph::Node& n) {
  const int64_t m = matmul_rows(g, n);
  if (m == 0) return nullptr;
  const graph::Value& b = g.value(n.inputs[1]);
  return faster_form(g, n, m, b.shape[0], b.shape[1], b.constant.raw(), false, nullptr, graph::FusedActivation{});
}

}  // namespace sluice::ops
