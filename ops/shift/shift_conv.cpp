// Shift fused into the 1x1 conv that reads it (design.md §8). Two kernels:
//
// - ShiftConvDirect (AVX-512 and AVX2 builds): Sluice's own NHWC 1x1 conv in which the shift is
//   only an address offset. Output pixels in blocks of 6, output channels in blocks of 4
//   vectors (AVX-512: 64 channels) or 2 (AVX2: 16; its 16 registers hold 12 accumulators), with
//   weights packed once at load as [group][ic][group's channels]; each input channel is read at
//   its shift (dy, dx) from the output pixel. Blocks of pixels on one edge of the map skip the
//   channels whose shift leaves the image; the few border pixels left over are read run by run,
//   a zero pixel outside the image. No copy of the input is made.
// - ShiftConvTiled (fallback): the conv runs on tiles of output rows, and each tile's input is
//   produced by the shift right before, into a buffer sized to stay in L2. The conv itself is
//   oneDNN's 1x1 primitive, the same one the unfused conv uses.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/common/simd.h"
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


#if defined(__AVX512F__) || defined(__AVX2__)
// One full register block of the offset-read kernel, for the assembly below: 6 output pixels
// x kGroup output channels, acc[i] = bias + sum over q < n of w_q * x_i[off[2q]] (w_q at wr +
// off[2q + 1] bytes, x_i = xp[i]), and the epilogue in the same assembly when the caller can
// take it: accumulators start at the bias, and go to the 6 output pixels with the residual
// sum and Relu applied, without the round trip through memory that a C++ epilogue costs
// (~5% of a block at 56x56 x 96 channels on Zen 5, ~8% on Zen 3's AVX2).
struct AsmBlock {
  const float* const* xp;  // 6 pixels' input rows
  const float* bias;       // kGroup floats the accumulators start from
  float* const* out;       // 6 pixels' outputs, or nullptr: the accumulators go to acc
  float* acc;
  int64_t sum_delta;       // bytes from an output to its residual addend
  int64_t flags;           // 1: add the residual, 2: Relu
};
// What both ISAs' assembly shares. Each defines SLUICE_EACH_PIXEL(op), op(the pixel's pointer
// register, its accumulators...) for its 6 pixels, the per-pixel SLUICE_SUM, SLUICE_RELU,
// SLUICE_STORE and SLUICE_TO_ACC, and SLUICE_ZERO0 (register 0 = zeros).
// r8..r13 = the 6 pointers of the array at rax
#define SLUICE_SIX_POINTERS "mov 0(%%rax), %%r8\n\t" "mov 8(%%rax), %%r9\n\t" "mov 16(%%rax), %%r10\n\t" \
  "mov 24(%%rax), %%r11\n\t" "mov 32(%%rax), %%r12\n\t" "mov 40(%%rax), %%r13\n\t"
// The loop's step to the next input channel.
#define SLUICE_NEXT_CHANNEL "add $16, %[off]\n\t" "dec %[n]\n\t" "jnz 1b\n\t"
// After the loop (label 2): with b.out, the residual sum and Relu as b.flags say, then the
// stores to the 6 pixels; without, the accumulators to b.acc.
#define SLUICE_EPILOGUE                                                                         \
  "2:\n\t" "mov 16(%[b]), %%rax\n\t" "test %%rax, %%rax\n\t" "jz 5f\n\t" SLUICE_SIX_POINTERS        \
  "mov 32(%[b]), %%rdx\n\t" "testq $1, 40(%[b])\n\t" "jz 3f\n\t" SLUICE_EACH_PIXEL(SLUICE_SUM)      \
  "3:\n\t" "testq $2, 40(%[b])\n\t" "jz 4f\n\t" SLUICE_ZERO0 SLUICE_EACH_PIXEL(SLUICE_RELU)        \
  "4:\n\t" SLUICE_EACH_PIXEL(SLUICE_STORE) "jmp 6f\n\t"                                             \
  "5:\n\t" "mov 24(%[b]), %%rdx\n\t" SLUICE_EACH_PIXEL(SLUICE_TO_ACC) "6:\n\t"
#endif

#ifdef __AVX512F__
// AVX-512: acc[6][4] (16 floats each) in zmm8..zmm31, four weight vectors, two broadcast
// registers in turn. The weights 4 input channels ahead (1 KB) are prefetched: at 192 or more
// input channels a group's weights (48 KB and up) do not stay in a 48 KB L1 from one block to
// the next, and on the Intel Xeon of stop 28 the loop waited on them (compare_shift.py,
// medians of 10 runs, fused / 1x1 alone: 28x28 1.085 -> 1.030 on 1 thread, 1.120 -> 1.027 on
// 2; 14x14 1.062 -> 1.020 and 1.058 -> 0.986; 56x56, whose 24 KB stay, 0.965 -> 0.986).
// Written in assembly: GCC's register allocation of this loop moved accumulators between
// registers every iteration (an FMA writing into the broadcast register, then a copy back),
// ~15% slower than the same loop compiled cleanly.
#define SLUICE_PIXEL(ptr, b, a0, a1, a2, a3)                 \
  "vbroadcastss (" ptr ",%%rax,4), %%zmm" b "\n\t"          \
  "vfmadd231ps %%zmm" b ", %%zmm0, %%zmm" a0 "\n\t"         \
  "vfmadd231ps %%zmm" b ", %%zmm1, %%zmm" a1 "\n\t"         \
  "vfmadd231ps %%zmm" b ", %%zmm2, %%zmm" a2 "\n\t"         \
  "vfmadd231ps %%zmm" b ", %%zmm3, %%zmm" a3 "\n\t"
#define SLUICE_EACH_PIXEL(op) op("%%r8", "8", "9", "10", "11") op("%%r9", "12", "13", "14", "15") \
  op("%%r10", "16", "17", "18", "19") op("%%r11", "20", "21", "22", "23") op("%%r12", "24", "25", "26", "27") \
  op("%%r13", "28", "29", "30", "31")
#define SLUICE_FROM_BIAS(ptr, a0, a1, a2, a3) "vmovaps %%zmm0, %%zmm" a0 "\n\t" "vmovaps %%zmm1, %%zmm" a1 "\n\t" \
  "vmovaps %%zmm2, %%zmm" a2 "\n\t" "vmovaps %%zmm3, %%zmm" a3 "\n\t"
#define SLUICE_SUM(ptr, a0, a1, a2, a3) "vaddps (" ptr ",%%rdx), %%zmm" a0 ", %%zmm" a0 "\n\t" \
  "vaddps 64(" ptr ",%%rdx), %%zmm" a1 ", %%zmm" a1 "\n\t" "vaddps 128(" ptr ",%%rdx), %%zmm" a2 ", %%zmm" a2 "\n\t" \
  "vaddps 192(" ptr ",%%rdx), %%zmm" a3 ", %%zmm" a3 "\n\t"
// max(acc, 0): NaN -> 0, as oneDNN's relu post-op does in the other kernel for this layer.
#define SLUICE_RELU(ptr, a0, a1, a2, a3) "vmaxps %%zmm0, %%zmm" a0 ", %%zmm" a0 "\n\t" \
  "vmaxps %%zmm0, %%zmm" a1 ", %%zmm" a1 "\n\t" "vmaxps %%zmm0, %%zmm" a2 ", %%zmm" a2 "\n\t" \
  "vmaxps %%zmm0, %%zmm" a3 ", %%zmm" a3 "\n\t"
#define SLUICE_ZERO0 "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
#define SLUICE_STORE(ptr, a0, a1, a2, a3) "vmovups %%zmm" a0 ", (" ptr ")\n\t" "vmovups %%zmm" a1 ", 64(" ptr ")\n\t" \
  "vmovups %%zmm" a2 ", 128(" ptr ")\n\t" "vmovups %%zmm" a3 ", 192(" ptr ")\n\t"
#define SLUICE_TO_ACC(ptr, a0, a1, a2, a3) "vmovups %%zmm" a0 ", (%%rdx)\n\t" "vmovups %%zmm" a1 ", 64(%%rdx)\n\t" \
  "vmovups %%zmm" a2 ", 128(%%rdx)\n\t" "vmovups %%zmm" a3 ", 192(%%rdx)\n\t" "add $256, %%rdx\n\t"
void asm_block(const AsmBlock& b, const float* wr, const int64_t* off, int64_t n) {
  asm volatile(
      "mov 8(%[b]), %%rax\n\t"
      "vmovups (%%rax), %%zmm0\n\t"
      "vmovups 64(%%rax), %%zmm1\n\t"
      "vmovups 128(%%rax), %%zmm2\n\t"
      "vmovups 192(%%rax), %%zmm3\n\t"
      SLUICE_EACH_PIXEL(SLUICE_FROM_BIAS)
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "mov 0(%[b]), %%rax\n\t"
      SLUICE_SIX_POINTERS
      "1:\n\t"
      "mov (%[off]), %%rax\n\t"
      "mov 8(%[off]), %%rdx\n\t"
      "prefetcht0 1024(%[wr],%%rdx)\n\t"
      "prefetcht0 1088(%[wr],%%rdx)\n\t"
      "prefetcht0 1152(%[wr],%%rdx)\n\t"
      "prefetcht0 1216(%[wr],%%rdx)\n\t"
      "vmovups 0(%[wr],%%rdx), %%zmm0\n\t"
      "vmovups 64(%[wr],%%rdx), %%zmm1\n\t"
      "vmovups 128(%[wr],%%rdx), %%zmm2\n\t"
      "vmovups 192(%[wr],%%rdx), %%zmm3\n\t"
      SLUICE_PIXEL("%%r8", "4", "8", "9", "10", "11")
      SLUICE_PIXEL("%%r9", "5", "12", "13", "14", "15")
      SLUICE_PIXEL("%%r10", "6", "16", "17", "18", "19")
      SLUICE_PIXEL("%%r11", "7", "20", "21", "22", "23")
      SLUICE_PIXEL("%%r12", "4", "24", "25", "26", "27")
      SLUICE_PIXEL("%%r13", "5", "28", "29", "30", "31")
      SLUICE_NEXT_CHANNEL
      SLUICE_EPILOGUE
      : [off] "+r"(off), [n] "+r"(n)
      : [b] "r"(&b), [wr] "r"(wr)
      : "rax", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
        "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
        "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "memory", "cc");
}
#undef SLUICE_FROM_BIAS
#elif defined(__AVX2__)
// The same block for AVX2's 16 registers: acc[6][2] (8 floats each), 12 accumulators, two
// weight vectors and two broadcast registers in turn. (An AVX2 block is a quarter of an
// AVX-512 one, so the per-block cost of a C++ epilogue weighed four times as much.) GCC's
// code for the loop alone also had the copies described above; in a microbenchmark with its
// data in L1 it ran at 70-76 GFLOP/s, this one at 80.
#define SLUICE_PIXEL(ptr, b, a0, a1)                 \
  "vbroadcastss (" ptr ",%%rax,4), %%ymm" b "\n\t"  \
  "vfmadd231ps %%ymm" b ", %%ymm0, %%ymm" a0 "\n\t" \
  "vfmadd231ps %%ymm" b ", %%ymm1, %%ymm" a1 "\n\t"
#define SLUICE_EACH_PIXEL(op) op("%%r8", "4", "5") op("%%r9", "6", "7") op("%%r10", "8", "9") op("%%r11", "10", "11") \
  op("%%r12", "12", "13") op("%%r13", "14", "15")
#define SLUICE_SUM(ptr, a0, a1) "vaddps (" ptr ",%%rdx), %%ymm" a0 ", %%ymm" a0 "\n\t" \
  "vaddps 32(" ptr ",%%rdx), %%ymm" a1 ", %%ymm" a1 "\n\t"
// max(acc, 0): NaN -> 0, as oneDNN's relu post-op does in the other kernel for this layer.
#define SLUICE_RELU(ptr, a0, a1) "vmaxps %%ymm0, %%ymm" a0 ", %%ymm" a0 "\n\t" "vmaxps %%ymm0, %%ymm" a1 ", %%ymm" a1 "\n\t"
#define SLUICE_STORE(ptr, a0, a1) "vmovups %%ymm" a0 ", (" ptr ")\n\t" "vmovups %%ymm" a1 ", 32(" ptr ")\n\t"
#define SLUICE_TO_ACC(ptr, a0, a1) "vmovups %%ymm" a0 ", (%%rdx)\n\t" "vmovups %%ymm" a1 ", 32(%%rdx)\n\t" \
  "add $64, %%rdx\n\t"
#define SLUICE_ZERO0 "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"
void asm_block(const AsmBlock& b, const float* wr, const int64_t* off, int64_t n) {
  asm volatile(
      "mov 8(%[b]), %%rax\n\t"
      "vmovups (%%rax), %%ymm4\n\t"
      "vmovups 32(%%rax), %%ymm5\n\t"
      "vmovaps %%ymm4, %%ymm6\n\t"
      "vmovaps %%ymm5, %%ymm7\n\t"
      "vmovaps %%ymm4, %%ymm8\n\t"
      "vmovaps %%ymm5, %%ymm9\n\t"
      "vmovaps %%ymm4, %%ymm10\n\t"
      "vmovaps %%ymm5, %%ymm11\n\t"
      "vmovaps %%ymm4, %%ymm12\n\t"
      "vmovaps %%ymm5, %%ymm13\n\t"
      "vmovaps %%ymm4, %%ymm14\n\t"
      "vmovaps %%ymm5, %%ymm15\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "mov 0(%[b]), %%rax\n\t"
      SLUICE_SIX_POINTERS
      "1:\n\t"
      "mov (%[off]), %%rax\n\t"
      "mov 8(%[off]), %%rdx\n\t"
      "vmovups 0(%[wr],%%rdx), %%ymm0\n\t"
      "vmovups 32(%[wr],%%rdx), %%ymm1\n\t"
      SLUICE_PIXEL("%%r8", "2", "4", "5")
      SLUICE_PIXEL("%%r9", "3", "6", "7")
      SLUICE_PIXEL("%%r10", "2", "8", "9")
      SLUICE_PIXEL("%%r11", "3", "10", "11")
      SLUICE_PIXEL("%%r12", "2", "12", "13")
      SLUICE_PIXEL("%%r13", "3", "14", "15")
      SLUICE_NEXT_CHANNEL
      SLUICE_EPILOGUE
      : [off] "+r"(off), [n] "+r"(n)
      : [b] "r"(&b), [wr] "r"(wr)
      : "rax", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
        "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
}
#endif
#undef SLUICE_EACH_PIXEL
#undef SLUICE_SUM
#undef SLUICE_RELU
#undef SLUICE_STORE
#undef SLUICE_TO_ACC
#undef SLUICE_ZERO0
#undef SLUICE_PIXEL
#undef SLUICE_SIX_POINTERS
#undef SLUICE_NEXT_CHANNEL
#undef SLUICE_EPILOGUE

#if defined(__AVX512F__) || defined(__AVX2__)
using simd::vf;
constexpr int64_t kL = simd::kLanes;

class ShiftConvDirect final : public ShiftConvBase {
 public:
  // Register block: up to 6 pixels x kVecs vectors of output channels.
  static constexpr int kPixels = 6, kVecs = simd::kRegs == 32 ? 4 : 2;
  static constexpr int64_t kGroup = kVecs * kL;  // output channels of a group

  ShiftConvDirect(const graph::Graph& g, const graph::Node& n) : ShiftConvBase(g, n) {
    const graph::Value& w = g.value(n.inputs[1]);
    mb_ = (m_ + kL - 1) / kL;
    const float* W = w.constant.data<float>();
    // Weights per output-channel group, [group][ic][kGroup]: a group's sweep over the input
    // channels reads one contiguous stream. (As [ic][oc], an AVX2 group's rows lay m floats
    // apart, and at m = 128 all of them fell into 8 of L1's 64 sets.)
    const int64_t groups = (mb_ + kVecs - 1) / kVecs;
    wp_.assign(static_cast<size_t>(groups * cw_ * kGroup), 0.f);
    for (int64_t o = 0; o < m_; ++o)
      for (int64_t i = 0; i < cw_; ++i)
        wp_[static_cast<size_t>(((o / kGroup) * cw_ + i) * kGroup + o % kGroup)] = W[o * cw_ + i];
    bias_ = constant_or_zeros(g, n, 2, m_, mb_ * kL);  // whole vectors
    zeros_.assign(static_cast<size_t>(std::max<int64_t>(c_, kGroup) + kL), 0.f);
    // Per conv input channel: where it reads, relative to the output pixel (interior pixels).
    ch_off_.assign(static_cast<size_t>(cw_), 0);
    std::vector<bool> covered(static_cast<size_t>(cw_), false);
    for (const shift::Run& r : runs_) {
      reach_ = std::max<int64_t>({reach_, std::abs(r.dy), std::abs(r.dx)});
      for (int64_t j = 0; j < r.len && r.out0 + j < cw_; ++j) {
        ch_off_[static_cast<size_t>(r.out0 + j)] = (r.dy * w_ + r.dx) * c_ + r.src0 + j;
        covered[static_cast<size_t>(r.out0 + j)] = true;
      }
    }
    bool all_covered = true;
    for (bool c : covered) all_covered = all_covered && c;
    // The assembly block's reads: per channel, its input offset and its weights' byte offset.
    for (int64_t q = 0; q < cw_; ++q) {
      itab_.push_back(ch_off_[static_cast<size_t>(q)]);
      itab_.push_back(q * kGroup * static_cast<int64_t>(sizeof(float)));
    }
    // Interior pixels (every shifted read inside the image: one pass over the input channels
    // at fixed offsets) and border pixels.
    const int64_t r = all_covered ? reach_ : std::max(h_, w_);
    plan_edges(r);
    // Interior blocks of 2 rows x 3 columns where they fit: a block's shifted reads overlap
    // more (one row's dy = +1 is the next row's dy = 0), and a sweep along a pair of rows
    // reads 4 input rows for 2 output rows where a sweep along one row reads 3 for 1.
    const int64_t y0 = r, y1 = h_ - r, x0 = r, x1 = w_ - r;
    const int64_t yp = y1 > y0 ? y0 + (y1 - y0) / 2 * 2 : y0, xt = x1 > x0 ? x0 + (x1 - x0) / 3 * 3 : x0;
    for (int64_t y = y0; y < yp; y += 2)
      for (int64_t x = x0; x < xt; x += 3)
        for (int64_t dy = 0; dy < 2; ++dy)
          for (int64_t dx = 0; dx < 3; ++dx) interior_.push_back(static_cast<int32_t>((y + dy) * w_ + x + dx));
    for (int64_t y = y0; y < y1; ++y)  // the rest, row-major: a last odd row, the columns left
      for (int64_t x = y < yp ? xt : x0; x < x1; ++x) interior_.push_back(static_cast<int32_t>(y * w_ + x));
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const float* S = p_.fused_sum ? a.in[3].as<const float>() : nullptr;
    const auto n_in = static_cast<int64_t>(interior_.size()), n_bd = static_cast<int64_t>(border_.size());
    const int64_t b_in = (n_in + kPixels - 1) / kPixels, b_bd = (n_bd + kPixels - 1) / kPixels;
    const auto b_edge = static_cast<int64_t>(edge_of_.size());
    const bool parallel = h_ * w_ * m_ * cw_ > 200000;
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xb = X + b * h_ * w_ * c_;
      float* yb = Y + b * h_ * w_ * m_;
      const float* sb = S ? S + b * h_ * w_ * m_ : nullptr;
      // Interior blocks, then border blocks, in one parallel region (they write different
      // pixels): the edges' blocks, then the other border pixels run by run.
#pragma omp parallel if (parallel)
      {
#pragma omp for schedule(static) nowait
        for (int64_t it = 0; it < b_in; ++it) {
          const int64_t first = it * kPixels;
          pixel_block(xb, interior_.data() + first, std::min<int64_t>(kPixels, n_in - first), true, itab_.data(), cw_,
                      sb, yb);
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < b_edge + b_bd; ++it) {
          if (it < b_edge) {
            const Edge& e = edges_[static_cast<size_t>(edge_of_[static_cast<size_t>(it)])];
            pixel_block(xb, edge_px_.data() + it * kPixels, kPixels, false, e.tab.data(), e.n, sb, yb);
          } else {
            const int64_t first = (it - b_edge) * kPixels;
            pixel_block(xb, border_.data() + first, std::min<int64_t>(kPixels, n_bd - first), false, nullptr, 0, sb, yb);
          }
        }
      }
    }
  }

  std::string name() const override { return "shift+conv1x1:offset-read"; }
  size_t scratch_bytes() const override { return 0; }

  // Output pixels px[0 .. np), every output-channel group. A full block with a table of n
  // reads (interior pixels, or pixels of one edge) goes to the assembly block for the whole
  // groups; the rest through the C++ blocks: interior pixels at ch_off_, others run by run.
  // A full block's pointers are worked out once for all the groups, and each group goes
  // straight to the assembly block: at 56x56 x 96 channels a block is ~600 cycles of FMAs,
  // and the per-group set-up and call through the table cost ~8% of that.
  void pixel_block(const float* xb, const int32_t* px, int64_t np, bool interior, const int64_t* tab, int64_t n,
                   const float* sb, float* yb) const {
    static const auto kInterior = table<true>(std::make_index_sequence<kPixels>());  // [pixels - 1][vectors - 1]
    static const auto kBorder = table<false>(std::make_index_sequence<kPixels>());
    const int64_t groups = (mb_ + kVecs - 1) / kVecs;
    int64_t og = 0;
    const graph::Activation kind = p_.activation.kind;
    if (tab && np == kPixels && (kind == graph::Activation::None || kind == graph::Activation::Relu)) {
      const float* xp[kPixels];
      float* out[kPixels];
      for (int i = 0; i < kPixels; ++i) {
        xp[i] = xb + static_cast<int64_t>(px[i]) * c_;
        out[i] = yb + static_cast<int64_t>(px[i]) * m_;
      }
      AsmBlock blk{xp, nullptr, out, nullptr, sb ? reinterpret_cast<intptr_t>(sb) - reinterpret_cast<intptr_t>(yb) : 0,
                   (sb ? 1 : 0) | (kind == graph::Activation::Relu ? 2 : 0)};
      for (; (og + 1) * kGroup <= m_; ++og) {  // whole groups
        blk.bias = bias_.data() + og * kGroup;
        asm_block(blk, wp_.data() + og * cw_ * kGroup, tab, n);
        for (float*& o : out) o += kGroup;
      }
    }
    for (; og < groups; ++og) {
      const int64_t v0 = og * kVecs, nv = std::min<int64_t>(kVecs, mb_ - v0);
      (interior ? kInterior : kBorder)[np - 1][nv - 1](this, xb, px, v0, sb, yb);
    }
  }

 private:
  // Border pixels grouped by which of the runs' shifted reads fall inside the image: the
  // pixels of one edge (the top row's, the left column's, a corner's) share that, so a block
  // of kPixels of them reads only the channels whose shift stays inside (at the interior
  // offsets) and skips the others, whose reads are zeros. Those blocks run in the assembly
  // like interior ones, with their edge's table (gathering each block's reads into a dense
  // buffer first cost ~17% more per block than an interior block at 28x28 x 192 channels,
  // and 14% of that map's pixels are border). The pixels left over (fewer than a block of
  // an edge) go run by run.
  struct Edge {
    std::vector<int64_t> tab;  // (input offset, weight byte offset) per channel read
    int64_t n = 0;             // channels read
  };
  // Shifts that reach far make many edges ((2 reach + 1)^2 - 1 at most), each a table of up to
  // cw reads; only edges with a full block get one, and past 8 MiB of tables the pixels of
  // further edges go run by run. (ResNet-like maps have 8 edges: 28x28 x 192 channels, 24 KiB.)
  static constexpr size_t kMaxTableEntries = size_t{1} << 20;
  void plan_edges(int64_t r) {
    // The border pixels by edge, in the order the edges are first met (row-major).
    std::map<std::vector<bool>, size_t> index;
    std::vector<std::vector<bool>> keys;
    std::vector<std::vector<int32_t>> pixels;
    for (int64_t y = 0; y < h_; ++y)
      for (int64_t x = 0; x < w_; ++x) {
        if (y >= r && y < h_ - r && x >= r && x < w_ - r) continue;
        std::vector<bool> inside(runs_.size());
        for (size_t i = 0; i < runs_.size(); ++i) {
          const int64_t sy = y + runs_[i].dy, sx = x + runs_[i].dx;
          inside[i] = sy >= 0 && sy < h_ && sx >= 0 && sx < w_;
        }
        const auto [it, added] = index.emplace(inside, keys.size());
        if (added) {
          keys.push_back(std::move(inside));
          pixels.emplace_back();
        }
        pixels[it->second].push_back(static_cast<int32_t>(y * w_ + x));
      }
    // A table for each edge with a full block of pixels, within the budget; the rest run by run.
    size_t table_entries = 0;
    for (size_t e = 0; e < pixels.size(); ++e) {
      size_t full = pixels[e].size() / kPixels * kPixels;
      if (full > 0) {
        Edge edge;
        for (size_t i = 0; i < runs_.size(); ++i)
          for (int64_t j = 0; keys[e][i] && j < runs_[i].len && runs_[i].out0 + j < cw_; ++j) {
            const int64_t q = runs_[i].out0 + j;
            edge.tab.push_back(ch_off_[static_cast<size_t>(q)]);
            edge.tab.push_back(q * kGroup * static_cast<int64_t>(sizeof(float)));
          }
        edge.n = static_cast<int64_t>(edge.tab.size() / 2);
        if (table_entries + edge.tab.size() > kMaxTableEntries) {
          full = 0;
        } else {
          table_entries += edge.tab.size();
          edge_of_.insert(edge_of_.end(), full / kPixels, static_cast<int32_t>(edges_.size()));
          edges_.push_back(std::move(edge));
        }
      }
      edge_px_.insert(edge_px_.end(), pixels[e].begin(), pixels[e].begin() + static_cast<std::ptrdiff_t>(full));
      border_.insert(border_.end(), pixels[e].begin() + static_cast<std::ptrdiff_t>(full), pixels[e].end());
    }
  }

  using BlockFn = void (*)(const ShiftConvDirect*, const float*, const int32_t*, int64_t, const float*, float*);
  // The full interior block runs asm_block (AVX-512 or AVX2), in assembly.
  template <bool Interior, int P, int V>
  static constexpr bool kAsmBlock = Interior && P == kPixels && V == kVecs;

  // Output pixels px[0 .. P) x channels [kL v0, kL (v0 + V)).
  template <bool Interior, int P, int V>
  static void block(const ShiftConvDirect* k, const float* xb, const int32_t* px, int64_t v0, const float* sb,
                    float* yb) {
    vf acc[P][V];
    if constexpr (!kAsmBlock<Interior, P, V>)  // the assembly blocks start from zero themselves
      for (int i = 0; i < P; ++i)
        for (int v = 0; v < V; ++v) acc[i][v] = vf{};
    if constexpr (Interior) {
      // One pass over the conv's input channels; each channel's shift is a fixed offset from
      // the pixel, so there is no per-run setup or short loop.
      const float* xp[P];
      for (int i = 0; i < P; ++i) xp[i] = xb + static_cast<int64_t>(px[i]) * k->c_;
      const int64_t wstep = kGroup;
      const float* wr = k->wp_.data() + (v0 / kVecs) * k->cw_ * kGroup;
      const int64_t* off = k->ch_off_.data();
      if constexpr (kAsmBlock<Interior, P, V>) {
        // The epilogue in the assembly where it is bias, residual sum and Relu on whole
        // vectors; otherwise the accumulators come back (from zero) for the one below.
        const graph::Activation kind = k->p_.activation.kind;
        const bool fast = (v0 + V) * kL <= k->m_ && (kind == graph::Activation::None || kind == graph::Activation::Relu);
        float* out[P];
        for (int i = 0; i < P; ++i) out[i] = yb + static_cast<int64_t>(px[i]) * k->m_ + v0 * kL;
        const AsmBlock b{xp,
                         fast ? k->bias_.data() + v0 * kL : k->zeros_.data(),
                         fast ? out : nullptr,
                         reinterpret_cast<float*>(acc),
                         sb ? reinterpret_cast<intptr_t>(sb) - reinterpret_cast<intptr_t>(yb) : 0,
                         (sb ? 1 : 0) | (kind == graph::Activation::Relu ? 2 : 0)};
        asm_block(b, wr, k->itab_.data(), k->cw_);
        if (fast) return;
      } else {
        for (int64_t q = 0; q < k->cw_; ++q, wr += wstep) {
          vf wv[V];
          for (int v = 0; v < V; ++v) wv[v] = *reinterpret_cast<const vf*>(wr + v * kL);
          const int64_t o = off[q];
          for (int i = 0; i < P; ++i) {
            const float xv = xp[i][o];
            for (int v = 0; v < V; ++v) acc[i][v] += wv[v] * xv;
          }
        }
      }
    } else {
      for (const shift::Run& r : k->runs_) {
        // Each pixel's read moved by the run's shift, or a zero pixel outside the image.
        const float* xp[P];
        for (int i = 0; i < P; ++i) {
          const int64_t sy = px[i] / k->w_ + r.dy, sx = px[i] % k->w_ + r.dx;
          xp[i] = sy >= 0 && sy < k->h_ && sx >= 0 && sx < k->w_ ? xb + (sy * k->w_ + sx) * k->c_ + r.src0
                                                                 : k->zeros_.data();
        }
        const float* wr = k->wp_.data() + ((v0 / kVecs) * k->cw_ + r.out0) * kGroup;
        for (int64_t j = 0; j < r.len; ++j) {
          vf wv[V];
          for (int v = 0; v < V; ++v) wv[v] = *reinterpret_cast<const vf*>(wr + j * kGroup + v * kL);
          for (int i = 0; i < P; ++i) {
            const float xv = xp[i][j];
            for (int v = 0; v < V; ++v) acc[i][v] += wv[v] * xv;
          }
        }
      }
    }
    // Epilogue: bias, residual sum, activation. Whole vectors with no activation or Relu go
    // straight from the registers; a partial last vector or another activation lane by lane.
    const graph::FusedActivation act = k->p_.activation;
    const int64_t m = k->m_;
    if ((v0 + V) * kL <= m && (act.kind == graph::Activation::None || act.kind == graph::Activation::Relu)) {
      const bool relu = act.kind == graph::Activation::Relu;
      vf bias[V];
      for (int v = 0; v < V; ++v) bias[v] = *reinterpret_cast<const vf*>(k->bias_.data() + (v0 + v) * kL);
      for (int i = 0; i < P; ++i)
        for (int v = 0; v < V; ++v) {
          const int64_t at = static_cast<int64_t>(px[i]) * m + (v0 + v) * kL;
          vf out = acc[i][v] + bias[v];
          if (sb) out += *reinterpret_cast<const vf*>(sb + at);
          if (relu) out = out > 0.f ? out : 0.f;  // NaN -> 0, as the assembly block
          *reinterpret_cast<vf*>(yb + at) = out;
        }
      return;
    }
    for (int i = 0; i < P; ++i)
      for (int v = 0; v < V; ++v) {
        const int64_t oc = (v0 + v) * kL, lanes = std::min<int64_t>(kL, m - oc), at = static_cast<int64_t>(px[i]) * m + oc;
        const vf out = acc[i][v] + *reinterpret_cast<const vf*>(k->bias_.data() + oc);
        for (int64_t l = 0; l < lanes; ++l) yb[at + l] = graph::apply_activation(act, out[l] + (sb ? sb[at + l] : 0.f));
      }
  }

  template <bool Interior, int P, size_t... V>
  static constexpr std::array<BlockFn, kVecs> row(std::index_sequence<V...>) {
    return {&block<Interior, P, static_cast<int>(V) + 1>...};
  }
  template <bool Interior, size_t... P>
  static constexpr std::array<std::array<BlockFn, kVecs>, kPixels> table(std::index_sequence<P...>) {
    return {row<Interior, static_cast<int>(P) + 1>(std::make_index_sequence<kVecs>())...};
  }

  int64_t mb_;                   // kL-channel output blocks
  int64_t reach_ = 0;            // the largest |dy| or |dx|: pixels this far from the border read inside
  std::vector<int64_t> ch_off_;  // per conv input channel: its read offset from the output pixel, in floats
  std::vector<int64_t> itab_;    // the interior blocks' reads for the assembly: ch_off_ and weight offsets
  std::vector<int32_t> interior_, border_;  // pixel indices: interior in 2x3 blocks, other border pixels
  std::vector<Edge> edges_;                 // the edges' tables ...
  std::vector<int32_t> edge_px_, edge_of_;  // ... and their full blocks: kPixels pixels each, and its edge
  simd::AlignedFloats wp_;
  std::vector<float> bias_, zeros_;
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
#if defined(__AVX512F__) || defined(__AVX2__)
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
  // on small ones): the fastest of ~7 calls each, in turns, here.
  const std::vector<double> t = time_kernels({offset.get(), tiled.get()}, g, n, 7);
  const double t_offset = t[0], t_tiled = t[1];
  char note[96];
  std::snprintf(note, sizeof note, "[measured: offset-read %.3f ms, tiled %.3f ms]", t_offset, t_tiled);
  return with_note(t_offset <= t_tiled ? std::move(offset) : std::move(tiled), note);
}

}  // namespace sluice::ops
