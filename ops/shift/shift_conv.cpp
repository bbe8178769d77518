// Shift fused into the 1x1 conv that reads it (design.md §8): the conv runs on tiles of
// output rows, and each tile's input is produced by the shift right before, into a buffer
// sized to stay in L2. The shifted tensor never exists in full: the shift costs a copy within
// cache instead of a pass over memory. The conv itself is oneDNN's 1x1 primitive, the same one
// the unfused conv uses (packed weights, bias, fused sum and activation as post-ops).
#include <cstring>

#include "ops/common/onednn.h"
#include "ops/kernel.h"
#include "ops/shift/shift.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

constexpr size_t kTileBytes = 512 * 1024;

class ShiftConv final : public Kernel {
 public:
  ShiftConv(const graph::Graph& g, const graph::Node& n) : p_(n.p<graph::ConvParams>()) {
    runs_ = shift::runs_of(p_.pre_shift);
    const Shape& xs = g.value(n.inputs[0]).shape;
    const graph::Value& w = g.value(n.inputs[1]);
    batch_ = xs[0];
    c_ = xs[1];
    h_ = xs[2];
    w_ = xs[3];
    m_ = w.shape[0];
    const int64_t row_bytes = w_ * c_ * static_cast<int64_t>(sizeof(float));
    tile_rows_ = std::max<int64_t>(1, std::min<int64_t>(h_, static_cast<int64_t>(kTileBytes) / std::max<int64_t>(row_bytes, 1)));
    full_ = make(tile_rows_, g, n);
    const int64_t rest = h_ % tile_rows_;
    if (rest) last_ = make(rest, g, n);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    weights_ = onednn::pack(memory::desc({m_, c_, 1, 1}, memory::data_type::f32, tag::oihw), w.constant.raw(),
                            full_.pd.weights_desc());
    if (has_bias)
      bias_ = onednn::pack(memory::desc({m_}, memory::data_type::f32, tag::a), g.value(n.inputs[2]).constant.raw(),
                           full_.pd.bias_desc());
    if (rest && last_.pd.weights_desc() != full_.pd.weights_desc())
      last_weights_ = onednn::pack(memory::desc({m_, c_, 1, 1}, memory::data_type::f32, tag::oihw), w.constant.raw(),
                                   last_.pd.weights_desc());
    tile_floats_ = tile_rows_ * w_ * c_;
    sp_bytes_ = std::max(full_.pd.scratchpad_desc().get_size(), rest ? last_.pd.scratchpad_desc().get_size() : 0);
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    auto* tile = static_cast<float*>(a.scratch);
    void* sp = static_cast<std::byte*>(a.scratch) + (tile_floats_ * sizeof(float) + 63) / 64 * 64;
    if (p_.fused_sum && a.in[3].data != a.out[0].data)
      std::memcpy(Y, a.in[3].data, static_cast<size_t>(a.out[0].numel()) * sizeof(float));
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xb = X + b * h_ * w_ * c_;
      for (int64_t y0 = 0; y0 < h_; y0 += tile_rows_) {
        const int64_t rows = std::min(tile_rows_, h_ - y0);
        shift::shift_rows(runs_, xb, h_, w_, c_, c_, y0, y0 + rows, tile);
        const Prim& pr = rows == tile_rows_ ? full_ : last_;
        const memory& wts = rows == tile_rows_ || !last_weights_ ? weights_ : last_weights_;
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(pr.src, onednn::engine(), tile)},
                                             {DNNL_ARG_WEIGHTS, wts},
                                             {DNNL_ARG_DST, memory(pr.dst, onednn::engine(), Y + ((b * h_ + y0) * w_) * m_)}};
        if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
        onednn::execute(pr.prim, std::move(args), pr.pd.scratchpad_desc(), sp);
      }
    }
  }
  std::string name() const override {
    return std::string("shift+conv1x1:onednn:") + full_.pd.impl_info_str() + " (" + std::to_string(tile_rows_) + "-row tiles)";
  }
  size_t scratch_bytes() const override { return (tile_floats_ * sizeof(float) + 63) / 64 * 64 + sp_bytes_; }
  int in_place_input() const override { return p_.fused_sum ? 3 : -1; }

 private:
  struct Prim {
    memory::desc src, dst;
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
  };

  Prim make(int64_t rows, const graph::Graph& g, const graph::Node& n) const {
    Prim pr;
    pr.src = memory::desc({1, c_, rows, w_}, memory::data_type::f32, tag::nhwc);
    pr.dst = memory::desc({1, m_, rows, w_}, memory::data_type::f32, tag::nhwc);
    memory::desc w_any({m_, c_, 1, 1}, memory::data_type::f32, tag::any);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue;
    memory::desc b_md = has_bias ? memory::desc({m_}, memory::data_type::f32, tag::a) : memory::desc();
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, pr.src,
                                      w_any, b_md, pr.dst, {1, 1}, {0, 0}, {0, 0}, {0, 0});
    dnnl::primitive_attr attr;
    attr.set_post_ops(onednn::make_post_ops(p_.activation, p_.fused_sum));
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    pr.pd = dnnl::convolution_forward::primitive_desc(d, attr, onednn::engine());
    pr.prim = dnnl::convolution_forward(pr.pd);
    (void)g;
    return pr;
  }

  graph::ConvParams p_;
  std::vector<shift::Run> runs_;
  int64_t batch_, c_, h_, w_, m_, tile_rows_;
  size_t tile_floats_ = 0, sp_bytes_ = 0;
  Prim full_, last_;
  memory weights_, last_weights_, bias_;
};

}  // namespace

std::unique_ptr<Kernel> make_shift_conv(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  if (n.layout != graph::Layout::NHWC || p.pre_shift.empty() || !g.value(n.inputs[1]).is_constant()) return nullptr;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return nullptr;
  return std::make_unique<ShiftConv>(g, n);
}

}  // namespace sluice::ops
