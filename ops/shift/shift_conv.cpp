// Shift fused into the 1x1 conv that reads it (design.md §8). Two kernels:
//
// - ShiftConvDirect (AVX-512 builds): Sluice's own NHWC 1x1 conv in which the shift is only an
//   address offset. Output pixels of a row in blocks of 6, output channels in blocks of 64 (4
//   vectors, weights packed once at load as [oc/16][ic][16]); for each run of input channels
//   that share a shift (dy, dx), each pixel's read pointer is moved by it, or points at a zero
//   pixel where the shifted position falls outside the image. No copy of the input is made.
// - ShiftConvTiled (fallback): the conv runs on tiles of output rows, and each tile's input is
//   produced by the shift right before, into a buffer sized to stay in L2. The conv itself is
//   oneDNN's 1x1 primitive, the same one the unfused conv uses.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <utility>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/kernel.h"
#include "ops/shift/shift.h"

namespace sluice::ops {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

constexpr size_t kTileBytes = 512 * 1024;

// What both kernels read off the fused node: the shift runs and the shapes.
class ShiftConvBase : public Kernel {
 public:
  ShiftConvBase(const graph::Graph& g, const graph::Node& n)
      : p_(n.p<graph::ConvParams>()), runs_(shift::runs_of(p_.pre_shift)) {
    const Shape& xs = g.value(n.inputs[0]).shape;
    const Shape& ws = g.value(n.inputs[1]).shape;
    batch_ = xs[0], c_ = xs[1], h_ = xs[2], w_ = xs[3];
    m_ = ws[0], cw_ = ws[1];
  }
  int in_place_input() const override { return p_.fused_sum ? 3 : -1; }

 protected:
  graph::ConvParams p_;
  std::vector<shift::Run> runs_;
  int64_t batch_, c_, h_, w_;  // input NHWC
  int64_t m_, cw_;             // conv weight [m, cw, 1, 1]
};

class ShiftConvTiled final : public ShiftConvBase {
 public:
  ShiftConvTiled(const graph::Graph& g, const graph::Node& n) : ShiftConvBase(g, n) {
    const graph::Value& w = g.value(n.inputs[1]);
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

  int64_t tile_rows_;
  size_t tile_floats_ = 0, sp_bytes_ = 0;
  Prim full_, last_;
  memory weights_, last_weights_, bias_;
};


#ifdef __AVX512F__
typedef float v16 __attribute__((vector_size(64), aligned(4)));

class ShiftConvDirect final : public ShiftConvBase {
 public:
  static constexpr int kPixels = 6, kVecs = 4;  // register block: 6 pixels x 64 output channels

  ShiftConvDirect(const graph::Graph& g, const graph::Node& n) : ShiftConvBase(g, n) {
    const graph::Value& w = g.value(n.inputs[1]);
    mb_ = (m_ + 15) / 16;
    const float* W = w.constant.data<float>();
    wp_.assign(static_cast<size_t>(mb_ * cw_ * 16), 0.f);
    for (int64_t o = 0; o < m_; ++o)
      for (int64_t i = 0; i < cw_; ++i) wp_[static_cast<size_t>((i * mb_ + o / 16) * 16 + o % 16)] = W[o * cw_ + i];
    bias_ = constant_or_zeros(g, n, 2, m_, mb_ * 16);  // whole 16-lane vectors
    zeros_.assign(static_cast<size_t>(c_ + 16), 0.f);
    for (const shift::Run& r : runs_) {
      run_off_.push_back((r.dy * w_ + r.dx) * c_ + r.src0);
      reach_ = std::max<int64_t>({reach_, std::abs(r.dy), std::abs(r.dx)});
    }
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const float* S = p_.fused_sum ? a.in[3].as<const float>() : nullptr;
    const int64_t groups = (mb_ + kVecs - 1) / kVecs;
    static const auto kBlocks = table(std::make_index_sequence<kPixels>());  // [pixels - 1][vectors - 1]
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xb = X + b * h_ * w_ * c_;
      float* yb = Y + b * h_ * w_ * m_;
      const float* sb = S ? S + b * h_ * w_ * m_ : nullptr;
      // Blocks of kPixels consecutive pixels in row-major order (a block may span two rows).
      const int64_t pixels = h_ * w_, pblocks = (pixels + kPixels - 1) / kPixels;
#pragma omp parallel for collapse(2) schedule(static) if (pixels * m_ * cw_ > 200000)
      for (int64_t pb = 0; pb < pblocks; ++pb)
        for (int64_t og = 0; og < groups; ++og) {
          const int64_t v0 = og * kVecs, nv = std::min<int64_t>(kVecs, mb_ - v0);
          const int64_t p0 = pb * kPixels, np = std::min<int64_t>(kPixels, pixels - p0);
          kBlocks[np - 1][nv - 1](this, xb, p0, v0, sb, yb);
        }
    }
  }

  std::string name() const override { return "shift+conv1x1:offset-read"; }
  size_t scratch_bytes() const override { return 0; }

 private:
  using BlockFn = void (*)(const ShiftConvDirect*, const float*, int64_t, int64_t, const float*, float*);

  // Output pixels p0 .. p0 + P (row-major) x channels [16 v0, 16 (v0 + V)).
  template <int P, int V>
  static void block(const ShiftConvDirect* k, const float* xb, int64_t p0, int64_t v0, const float* sb, float* yb) {
    v16 acc[P][V] = {};
    int64_t py[P], px[P];
    bool interior = true;  // every pixel's every shifted read inside the image
    for (int i = 0; i < P; ++i) {
      py[i] = (p0 + i) / k->w_, px[i] = (p0 + i) % k->w_;
      interior = interior && py[i] >= k->reach_ && py[i] < k->h_ - k->reach_ && px[i] >= k->reach_ &&
                 px[i] < k->w_ - k->reach_;
    }
    for (size_t ri = 0; ri < k->runs_.size(); ++ri) {
      const shift::Run& r = k->runs_[ri];
      // Each pixel's read moved by the run's shift, or a zero pixel outside the image.
      const float* xp[P];
      if (interior) {
        for (int i = 0; i < P; ++i) xp[i] = xb + (p0 + i) * k->c_ + k->run_off_[ri];
      } else {
        for (int i = 0; i < P; ++i) {
          const int64_t sy = py[i] + r.dy, sx = px[i] + r.dx;
          xp[i] = sy >= 0 && sy < k->h_ && sx >= 0 && sx < k->w_ ? xb + (sy * k->w_ + sx) * k->c_ + r.src0
                                                                 : k->zeros_.data();
        }
      }
      const float* wr = k->wp_.data() + (r.out0 * k->mb_ + v0) * 16;
      for (int64_t j = 0; j < r.len; ++j) {
        v16 wv[V];
        for (int v = 0; v < V; ++v) wv[v] = *reinterpret_cast<const v16*>(wr + (j * k->mb_ + v) * 16);
        for (int i = 0; i < P; ++i) {
          const float xv = xp[i][j];
          for (int v = 0; v < V; ++v) acc[i][v] += wv[v] * xv;
        }
      }
    }
    // Epilogue: bias, residual sum, activation; the last block may be a partial vector.
    const graph::FusedActivation act = k->p_.activation;
    for (int i = 0; i < P; ++i) {
      const int64_t p = p0 + i;
      for (int v = 0; v < V; ++v) {
        const int64_t oc = (v0 + v) * 16, lanes = std::min<int64_t>(16, k->m_ - oc);
        v16 out = acc[i][v] + *reinterpret_cast<const v16*>(k->bias_.data() + oc);
        float* dst = yb + p * k->m_ + oc;
        if (lanes == 16 && (act.kind == graph::Activation::None || act.kind == graph::Activation::Relu)) {
          if (sb) out += *reinterpret_cast<const v16*>(sb + p * k->m_ + oc);
          if (act.kind == graph::Activation::Relu) out = out > 0.f ? out : 0.f;
          *reinterpret_cast<v16*>(dst) = out;
          continue;
        }
        for (int64_t l = 0; l < lanes; ++l) {
          float val = out[l] + (sb ? sb[p * k->m_ + oc + l] : 0.f);
          dst[l] = graph::apply_activation(act, val);
        }
      }
    }
  }

  template <int P, size_t... V>
  static constexpr std::array<BlockFn, kVecs> row(std::index_sequence<V...>) {
    return {&block<P, static_cast<int>(V) + 1>...};
  }
  template <size_t... P>
  static constexpr std::array<std::array<BlockFn, kVecs>, kPixels> table(std::index_sequence<P...>) {
    return {row<static_cast<int>(P) + 1>(std::make_index_sequence<kVecs>())...};
  }

  int64_t mb_;  // 16-channel output blocks
  int64_t reach_ = 0;             // the largest |dy| or |dx|: pixels this far from the border read inside
  std::vector<int64_t> run_off_;  // per run: its read offset from the output pixel, in floats
  std::vector<float> wp_, bias_, zeros_;
};
#endif

}  // namespace

namespace {

bool applies(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  if (n.layout != graph::Layout::NHWC || p.pre_shift.empty() || !g.value(n.inputs[1]).is_constant()) return false;
  return n.inputs.size() <= 2 || n.inputs[2] == graph::kNoValue || g.value(n.inputs[2]).is_constant();
}

}  // namespace

std::unique_ptr<Kernel> make_shift_conv_offset(const graph::Graph& g, const graph::Node& n) {
#ifdef __AVX512F__
  if (applies(g, n)) return std::make_unique<ShiftConvDirect>(g, n);
#endif
  (void)g, (void)n;
  return nullptr;
}

std::unique_ptr<Kernel> make_shift_conv_tiled(const graph::Graph& g, const graph::Node& n) {
  return applies(g, n) ? std::make_unique<ShiftConvTiled>(g, n) : nullptr;
}

std::unique_ptr<Kernel> make_shift_conv(const graph::Graph& g, const graph::Node& n) {
  auto tiled = make_shift_conv_tiled(g, n);
  auto offset = make_shift_conv_offset(g, n);
  if (!tiled || !offset) return tiled;
  // Which is faster depends on the shape (the offset kernel wins on large maps, oneDNN's 1x1
  // on small ones): medians of 7 runs each, here.
  const double t_offset = time_kernel(*offset, g, n, 7), t_tiled = time_kernel(*tiled, g, n, 7);
  char note[96];
  std::snprintf(note, sizeof note, "[measured: offset-read %.3f ms, tiled %.3f ms]", t_offset, t_tiled);
  return with_note(t_offset <= t_tiled ? std::move(offset) : std::move(tiled), note);
}

}  // namespace sluice::ops
