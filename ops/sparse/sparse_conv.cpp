// Unstructured-sparse convolution (design.md §7): a direct sparse conv over a planar copy
// of the input. At load, every non-zero weight W[o, c, i, j] becomes (offset of tap (i, j)
// of channel c in the planar copy, value), listed per output channel (CSR). Per call, the
// NHWC input is copied into zero-padded phase planes (ops/conv/planar.h), every output
// channel accumulates 64 output pixels at a time over its non-zeros only (one contiguous
// 64-float read and 4 vector FMAs per non-zero), and each task's block of results goes
// straight back to NHWC with bias, fused residual sum and activation. Kernels of up to 64
// taps (1x1, 3x3, the 7x7 stem), stride 1 or 2.
//
// Whether it beats oneDNN's dense conv depends on the layer and the machine, so the choice
// is measured: make_conv times both kernels on the layer's real shape when the weights are
// at least kMinSparsity zero, and keeps the faster one (inspect shows both times).
#include <algorithm>
#include <cstring>
#include <omp.h>
#include <unistd.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "ops/common/measure.h"
#include "ops/common/simd.h"
#include "ops/conv/planar.h"
#include "ops/kernel.h"
#include "ops/sparse/sparse.h"

namespace sluice::ops {

namespace {

// Bytes of input window a task keeps in L1: 5/6 of the L1 data cache (the rest holds the
// non-zeros and the partial sums); 40 KiB of a 48 KiB L1 measured ~8% faster than half.
int64_t l1_budget() {
  static const int64_t bytes = [] {
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return static_cast<int64_t>(l1 >= 16384 && l1 <= (1 << 20) ? l1 : 32768) * 5 / 6;
  }();
  return bytes;
}

using simd::vf;
constexpr int64_t kVec = simd::kLanes, kVecs = planar::kBlock / kVec;  // vectors per 64-pixel block
// acc[0 .. N) += w * the N vectors at xp: one non-zero's FMAs.
template <int64_t N>
__attribute__((always_inline)) inline void fma_run(vf* acc, const float* xp, float w) {
#pragma GCC unroll 16
  for (int64_t v = 0; v < N; ++v) acc[v] += *reinterpret_cast<const vf*>(xp + v * kVec) * w;
}
// Blocks a task accumulates at once: two with AVX-512 (8 accumulators of 16 lanes), one with
// AVX2 (8 of 8 lanes already hide the FMA latency; 16 would not fit its 16 registers).
constexpr int64_t kTaskBlocks = simd::kRegs == 32 ? 2 : 1;
// Split needs (classes x 9 + 8) accumulators of a two-block task in registers: AVX-512's 32
// hold up to 3 classes (3x3 stride 1 and 5x5 stride 2 have 3, 3x3 stride 2 has 2); AVX2 has no Split.
constexpr bool kSplitTask = simd::kRegs == 32;
constexpr int kMaxClasses = 3;

// The planar geometry of an NHWC conv node (group 1, equal strides).
planar::Geometry conv_geometry(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  const Shape &xs = g.value(n.inputs[0]).shape, &ws = g.value(n.inputs[1]).shape, &ys = g.value(n.outputs[0]).shape;
  return {xs[2], xs[3], ws[2], ws[3], ys[2], ys[3], p.pads[0], p.pads[1], p.strides[0]};
}

bool is_resident(const graph::Graph& g, graph::ValueId v) {
  return v != graph::kNoValue && g.value(v).layout == graph::Layout::Planar;
}

// What both sparse convs hold: the node's shapes, bias, density and non-zeros (as each lists
// them), and the layouts of its input, output and fused residual: NHWC or resident planes
// (Layout::Planar; passes::keep_planes_resident keeps the values between sparse convs planar,
// so that no conv transposes its results to NHWC for the next to pack them back).
//
// With a fused shortcut (make_sparse_conv_with_shortcut): a 1x1 conv on the same input with
// the same stride and no padding (a ResNet downsample) reads, for output pixel (y, x), the input
// pixel that this conv's tap (pad_top, pad_left) reads: its weights become output channels
// m_a_ .. m_ of this conv with only that tap, and the kernel writes them to its second output.
class SparseConvBase : public Kernel {
 public:
  SparseConvBase(const graph::Graph& g, const graph::Node& n, SparseVariant variant,
                 const graph::Node* shortcut = nullptr)
      : p_(n.p<graph::ConvParams>()),
        geo_(conv_geometry(g, n)),
        batch_(g.value(n.outputs[0]).shape[0]),
        c_(g.value(n.inputs[1]).shape[1]),
        m_a_(g.value(n.outputs[0]).shape[1]),
        m_(m_a_ + (shortcut ? g.value(shortcut->outputs[0]).shape[1] : 0)),
        variant_(variant),
        x_res_(is_resident(g, n.inputs[0])),
        x_wide_(x_res_ && g.value(n.inputs[0]).wide_rows),
        x_nchw_(reads_nchw_input(g, n)) {
    const Tensor& wa = g.value(n.inputs[1]).constant;
    const int64_t taps = geo_.kh * geo_.kw;
    nz_a_ = wa.numel() - static_cast<int64_t>(std::llround(zero_fraction(wa) * static_cast<double>(wa.numel())));
    bias_ = constant_or_zeros(g, n, 2, m_a_);
    sinks_[0] = sink(g, n, 0, m_a_);
    if (shortcut) {
      // This conv's weights, then the shortcut's at tap (pad_top, pad_left), zeros elsewhere.
      const Tensor& wb = g.value(shortcut->inputs[1]).constant;
      weights_.assign(static_cast<size_t>(m_ * c_ * taps), 0.f);
      std::copy_n(wa.data<float>(), wa.numel(), weights_.begin());
      const int64_t tap = geo_.pad_top * geo_.kw + geo_.pad_left;
      const float* B = wb.data<float>();
      for (int64_t o = 0; o < m_ - m_a_; ++o)
        for (int64_t c = 0; c < c_; ++c) weights_[static_cast<size_t>(((m_a_ + o) * c_ + c) * taps + tap)] = B[o * c_ + c];
      nz_b_ = wb.numel() - static_cast<int64_t>(std::llround(zero_fraction(wb) * static_cast<double>(wb.numel())));
      const std::vector<float> bb = constant_or_zeros(g, *shortcut, 2, m_ - m_a_);
      bias_.insert(bias_.end(), bb.begin(), bb.end());
      sinks_[1] = sink(g, *shortcut, m_a_, m_ - m_a_);
      nsinks_ = 2;
      shortcut_ = shortcut->name;
      shortcut_id_ = static_cast<graph::NodeId>(shortcut - g.nodes.data());
    }
    density_ = static_cast<double>(nz_a_) / static_cast<double>(m_a_ * c_ * taps);  // (the node's own)
    all_channels_.resize(static_cast<size_t>(c_));
    for (int64_t c = 0; c < c_; ++c) all_channels_[static_cast<size_t>(c)] = static_cast<int32_t>(c);
  }
  // The sum is read at a position (by the task that then writes it) before it is written, in
  // the same layout.
  int in_place_input() const override {
    const Sink& a = sinks_[0];
    return a.has_sum && a.sum_res == a.y_res ? 3 : -1;
  }
  // Only the non-zero weights are multiplied (the node's own: a fused shortcut's are its step's).
  int64_t executed_macs() const override { return batch_ * nz_a_ * geo_.oh * geo_.ow; }
  bool takes_planes() const override { return true; }
  std::unique_ptr<Kernel> relayout(const graph::Graph& g, const graph::Node& n) const override {
    if (nsinks_ == 1) return make_sparse_conv(g, n, variant_);
    return make_sparse_conv_with_shortcut(g, n, g.node(shortcut_id_), variant_);
  }
  std::unique_ptr<Kernel> with_shortcut(const graph::Graph& g, const graph::Node& n,
                                        const graph::Node& b) const override {
    return nsinks_ == 1 ? make_sparse_conv_with_shortcut(g, n, b, variant_) : nullptr;
  }

 protected:
  // Where output channels [first, first + count) go: the node's output (and fused residual) or
  // the fused shortcut's, each in its layouts, with its activation.
  struct Sink {
    int64_t first = 0, count = 0;
    bool y_res = false, y_wide = false, has_sum = false, sum_res = false, sum_wide = false;
    graph::FusedActivation act;
    // Floats of one sample's output and residual.
    int64_t y_floats(const planar::Geometry& g) const { return floats(g, y_res, y_wide); }
    int64_t sum_floats(const planar::Geometry& g) const { return floats(g, sum_res, sum_wide); }
    int64_t floats(const planar::Geometry& g, bool res, bool wide) const {
      return count * (res ? planar::resident(g.oh, g.ow, wide).plane() : g.oh * g.ow);
    }
  };
  static Sink sink(const graph::Graph& g, const graph::Node& n, int64_t first, int64_t count) {
    const auto& p = n.p<graph::ConvParams>();
    Sink k;
    k.first = first, k.count = count, k.act = p.activation;
    k.y_res = is_resident(g, n.outputs[0]);
    k.y_wide = k.y_res && g.value(n.outputs[0]).wide_rows;
    k.has_sum = p.fused_sum && n.inputs.size() > 3 && n.inputs[3] != graph::kNoValue;
    k.sum_res = k.has_sum && is_resident(g, n.inputs[3]);
    k.sum_wide = k.sum_res && g.value(n.inputs[3]).wide_rows;
    if (k.y_res && k.sum_res && k.y_wide != k.sum_wide)
      throw Error("internal error: '" + n.name + "' writes resident planes of other rows than its residual's");
    return k;
  }
  // One sample's output and residual of each sink.
  struct Dest {
    float* y = nullptr;
    const float* sum = nullptr;
  };
  void dests(const KernelArgs& a, int64_t b, Dest* d) const {
    for (int s = 0; s < nsinks_; ++s) {
      const Sink& k = sinks_[s];
      d[s].y = a.out[static_cast<size_t>(s)].as<float>() + b * k.y_floats(geo_);
      d[s].sum = k.has_sum ? a.in[3].as<const float>() + b * k.sum_floats(geo_) : nullptr;
    }
  }
  // The node's weights, or with the fused shortcut's (until the non-zeros are listed: then
  // release_weights, as a dense copy would double the layer's memory).
  const float* weights(const graph::Graph& g, const graph::Node& n) const {
    return weights_.empty() ? g.value(n.inputs[1]).constant.data<float>() : weights_.data();
  }
  void release_weights() { std::vector<float>().swap(weights_); }
  // Floats of one sample's input: NHWC (or NCHW), or resident planes.
  int64_t in_floats() const {
    return c_ * (x_res_ ? planar::resident(geo_.h, geo_.w, x_wide_).plane() : geo_.h * geo_.w);
  }
  // The planar copy of sample x for geo_: resident planes of the same geometry as they are
  // (a 3x3, stride-1, pad-1 conv with rows as resident ones, wide or not; no shifted copies),
  // else packed into `planes`.
  const float* planes_of(const float* x, float* planes, int64_t shifts = 1) const {
    const planar::Geometry r = planar::resident(geo_.h, geo_.w, x_wide_);
    if (x_res_ && shifts == 1 && geo_.kh == 3 && geo_.kw == 3 && geo_.stride == 1 && geo_.pad_top == 1 &&
        geo_.pad_left == 1 && geo_.oh == geo_.h && geo_.ow == geo_.w && geo_.narrow_w == 0 &&
        geo_.grid_w() == r.grid_w() && geo_.plane() == r.plane())
      return x;
    planar::pack(geo_, x, c_, all_channels_.data(), c_, planes, shifts,
                 x_wide_   ? planar::Source::ResidentWide
                 : x_res_  ? planar::Source::Resident
                 : x_nchw_ ? planar::Source::Nchw
                           : planar::Source::Nhwc);
    return planes;
  }
  // Flat positions q0 .. q0 + npx of k output channels from o0 (src[j * src_stride + i]), with
  // the epilogue, to their sinks (one sample's, d); `at` maps them to output pixels.
  void store(const planar::Geometry& at, float* src, int64_t src_stride, int64_t q0, int64_t npx, int64_t o0,
             int64_t k, const Dest* d) const {
    for (int s = 0; s < nsinks_; ++s) {
      const Sink& t = sinks_[s];
      const int64_t j0 = std::max(o0, t.first), j1 = std::min(o0 + k, t.first + t.count);
      if (j0 < j1) store_sink(t, d[s], at, src + (j0 - o0) * src_stride, src_stride, q0, npx, j0, j1 - j0);
    }
  }
  void store_sink(const Sink& t, const Dest& d, const planar::Geometry& at, float* src, int64_t src_stride,
                  int64_t q0, int64_t npx, int64_t j0, int64_t k) const {
    const int64_t o = j0 - t.first;  // the sink's channel
    const float* bias = bias_.data() + j0;
    const int64_t ps = planar::resident(geo_.oh, geo_.ow, t.y_wide).plane(),
                  ps_sum = planar::resident(geo_.oh, geo_.ow, t.sum_wide).plane();
    if (t.y_res) {
      if (d.sum && !t.sum_res) planar::add_nhwc_sum(at, src, src_stride, q0, npx, k, d.sum + o, t.count);
      planar::store_block_resident(at, src, src_stride, q0, npx, k, d.y + o * ps, bias,
                                   d.sum && t.sum_res ? d.sum + o * ps : nullptr, t.act, t.y_wide);
      return;
    }
    if (d.sum && t.sum_res) planar::add_resident_sum(at, src, src_stride, q0, npx, k, d.sum + o * ps_sum, t.sum_wide);
    planar::store_block(at, src, src_stride, q0, npx, k, d.y + o, t.count, bias, d.sum && !t.sum_res ? d.sum + o : nullptr,
                        t.count, t.act);
  }
  std::string layouts_name() const {
    const Sink& a = sinks_[0];
    std::string r;
    const char* sep = ", resident planes ";
    for (auto [on, what] : {std::pair{x_res_, "in"}, {a.y_res, "out"}, {a.sum_res, "residual"}})
      if (on) r.append(sep).append(what), sep = "+";
    if (x_wide_ || a.y_wide || a.sum_wide) r += " (rows padded to 16 floats)";
    if (x_nchw_) r += ", reads NCHW";
    if (nsinks_ == 1) return r;
    const Sink& b = sinks_[1];
    return r + ", with the 1x1 '" + shortcut_ + "' fused" +
           (b.y_res ? b.y_wide ? " (its output in resident planes, rows padded to 16 floats)" : " (its output in resident planes)"
                    : "");
  }

  graph::ConvParams p_;
  planar::Geometry geo_{};
  int64_t batch_, c_;
  int64_t m_a_, m_;  // the node's output channels; with the fused shortcut's
  std::vector<float> bias_;  // m_
  double density_ = 1;  // non-zero weights / all weights
  int64_t nz_a_ = 0, nz_b_ = 0;  // non-zero weights of the node, of the fused shortcut
  std::vector<int32_t> all_channels_;  // 0..C-1: the planar copy takes every input channel
  std::vector<int32_t> off_;  // the non-zeros: where each reads, and its weight
  std::vector<float> val_;
  SparseVariant variant_;
  bool x_res_, x_wide_;  // input 0 in resident planes (wide rows: graph::Value::wide_rows)
  bool x_nchw_;  // input 0 an NCHW model input, read as it is (Plan::read_nchw_inputs)
  Sink sinks_[2];
  int nsinks_ = 1;
  std::vector<float> weights_;  // with a fused shortcut, while made: both convs' weights, m_ x C x kh x kw
  std::string shortcut_;        // its node's name
  graph::NodeId shortcut_id_ = -1;
};

class SparseConv final : public SparseConvBase {
 public:
  SparseConv(const graph::Graph& g, const graph::Node& n, SparseVariant variant, const graph::Node* shortcut = nullptr)
      : SparseConvBase(g, n, variant, shortcut) {
    // Rows a multiple of 16 floats wide make every read of a tap without a horizontal shift
    // aligned (a read that splits two cache lines costs two: on Zen 5, FMAs on unaligned reads
    // from L1 ran at 50 GMAC/s, on aligned ones at 83), where the wider rows cost little. The
    // taps with a shift b > 0 then read aligned either from one copy of the planes per shift
    // (Copies), or into sums of their own that sit b floats off, added together once per
    // output block (Split). The copies cost memory traffic: on large planes, or at high
    // sparsity (few reads per copied float), unaligned reads of a single copy win. make_conv
    // times the variants.
    const int64_t gw = geo_.grid_w(), gw16 = (gw + 15) / 16 * 16;
    if (variant != SparseVariant::Plain && gw16 * 100 <= gw * 115) {
      geo_.row_align = 16;
      const int64_t shifts = planar::aligned_shifts(geo_);
      if (variant == SparseVariant::Copies) shifts_ = shifts;
      if (variant == SparseVariant::Split && kSplitTask && shifts <= kMaxClasses) classes_ = shifts;
    }
    const int64_t taps = geo_.kh * geo_.kw, st = geo_.stride;
    shortcut_shift0_ = geo_.pad_left / st == 0;  // the fused shortcut's tap (pad_top, pad_left)
    int64_t tap_off[64];
    planar::tap_offsets(geo_, c_, tap_off, shifts_);
    // Input channels in blocks whose read window (all shifts and phases, two pixel blocks and
    // the taps' reach) fits in l1_budget(), so the outputs of a task re-read it from L1.
    // On wide maps a pixel pair covers part of a row, and the taps touch only that part of the
    // rows above and below (plus one more row where the pair wraps): count what is touched,
    // not the address span.
    const int64_t tap_rows = (geo_.kh - 1) / st + 1, run = 2 * planar::kBlock + geo_.kw;
    const int64_t window = shifts_ * geo_.phases() * std::min(run + tap_rows * geo_.grid_w(), (tap_rows + 1) * run);
    // Small maps too: a task's partial sums stay in L1 between channel blocks, so a block
    // costs only reloading them (ResNet-18's 512-channel 7x7 layer at 90%: 2.9 -> 1.0 ms
    // against one block whose input window, 166 KB, is read from L2).
    cb_ = std::clamp<int64_t>(l1_budget() / (4 * window), 1, c_);
    ncb_ = (c_ + cb_ - 1) / cb_;
    const float* W = weights(g, n);
    // Listed in the order a task reads them (output group, channel block, output channel:
    // segment(o, blk) below), so that the non-zeros stream from memory in one pass, which the
    // hardware prefetcher follows; in output-channel order a task read 16 interleaved runs,
    // and a 7x7 layer, whose 1.9 MB of non-zeros are read once per call, waited on memory.
    // Split: each segment in classes_ runs, by the tap's horizontal shift b (tap column / stride),
    // whose offsets leave b out (aligned reads); the class boundaries are row_'s entries.
    row_.assign(1, 0);
    for (int64_t o0 = 0; o0 < m_; o0 += kOutGroup)
      for (int64_t blk = 0; blk < ncb_; ++blk)
        for (int64_t o = o0; o < std::min(m_, o0 + kOutGroup); ++o)
          for (int64_t b = 0; b < classes_; ++b) {
            // A fused shortcut's few non-zeros (one tap) all in the first block: one call per
            // output channel, not one per block.
            const bool all = o >= m_a_;
            for (int64_t c = all ? (blk == 0 ? 0 : c_) : blk * cb_; c < (all ? c_ : std::min(c_, (blk + 1) * cb_)); ++c)
              for (int64_t t = 0; t < taps; ++t) {
                const float w = W[(o * c_ + c) * taps + t];
                const int64_t shift = classes_ > 1 ? (t % geo_.kw) / st : 0;
                if (w == 0.f || shift != b) continue;
                off_.push_back(static_cast<int32_t>(c * geo_.plane() + tap_off[t] - shift));
                val_.push_back(w);
              }
            row_.push_back(static_cast<int64_t>(val_.size()));
          }
    // A map of one or two tasks' pixels reads every non-zero once per call, from memory
    // (ResNet-18's 7x7 layers: 1.9 MB at 90% zeros), and the hardware prefetcher, which
    // starts over on every short run, left the FMAs waiting: with a cold cache the 512-channel
    // layer at 90% took 2.4-2.7 ms without software prefetch and 1.3-1.6 with it. Larger maps
    // re-read the non-zeros for every pixel block, from L2.
    prefetch_ = (geo_.flat_out() / planar::kBlock + kTaskBlocks - 1) / kTaskBlocks <= 2;
    release_weights();
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    const int64_t q = geo_.flat_out(), qblocks = q / planar::kBlock;
    constexpr int64_t kTaskPx = kTaskBlocks * planar::kBlock;
    for (int64_t b = 0; b < batch_; ++b) {
      // Copy j: the planes shifted left by j floats.
      const float* planes = planes_of(X + b * in_floats(), static_cast<float*>(a.scratch), shifts_);
      Dest d[2];
      dests(a, b, d);
      // Tasks of kTaskBlocks 64-pixel blocks x output channels; consecutive tasks share the
      // pixel blocks, so the input window they read stays in cache. 8 accumulators per task
      // hide the FMA latency: two blocks (AVX-512; a last, odd block interleaves two halves of
      // the non-zeros instead) or one (AVX2). A task sums into a block of its own (in L1) and
      // writes it straight to NHWC with bias, fused residual sum and activation: a planar
      // result for the whole map, written back in a second pass, cost more than the sums on
      // large maps (2.2 ms of the 3 -> 64 channel 7x7 stem's ~4 ms).
      const int64_t tasks = (qblocks + kTaskBlocks - 1) / kTaskBlocks, ogroups = (m_ + kOutGroup - 1) / kOutGroup;
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t pb = 0; pb < tasks; ++pb)
        for (int64_t og = 0; og < ogroups; ++og) {
          alignas(64) float acc[kOutGroup * kTaskPx];
          const int64_t q0 = pb * kTaskPx, o0 = og * kOutGroup, no = std::min(m_ - o0, kOutGroup);
          const float* base = planes + q0;
          const bool full = (pb + 1) * kTaskBlocks <= qblocks;
          for (int64_t blk = 0; blk < ncb_; ++blk)
            for (int64_t o = o0; o < o0 + no; ++o) {
              const size_t r = segment(o, blk) * static_cast<size_t>(classes_);
              const int64_t k0 = row_[r], k1 = row_[r + static_cast<size_t>(classes_)];
              if (k0 == k1 && blk > 0) continue;
              float* dst = acc + (o - o0) * kTaskPx;
              // (A fused shortcut's tap without a horizontal shift: all its non-zeros in class 0,
              // which reads as the plain variant does.)
              if (classes_ > 1 && !(o >= m_a_ && shortcut_shift0_))
                accumulate_classes(base, row_.data() + r, dst, blk > 0);
              else if (full)
                accumulate<kTaskBlocks * kVecs>(base, k0, k1, dst, blk > 0);
              else
                accumulate_split(base, k0, k1, dst, blk > 0);
            }
          store(geo_, acc, kTaskPx, q0, std::min(kTaskPx, q - q0), o0, no, d);
        }
    }
  }
  // dst[0 .. kLanes V) (+)= sum over non-zeros k0..k1 of w * x[off + 0 .. kLanes V).
  // A call covers one output channel's non-zeros in one channel block: on AVX2 with a 32 KiB
  // L1 that is ~14 of them at 70% zeros, so the accumulators are loaded and stored one by one
  // (written as whole-array copies, GCC turned them into a memset and two memcpy calls per
  // call through the stack, which cost as much as the FMAs).
  template <int64_t V>
  void accumulate(const float* base, int64_t k0, int64_t k1, float* dst, bool add) const {
    vf acc[V];
#pragma GCC unroll 16
    for (int64_t v = 0; v < V; ++v) acc[v] = add ? *reinterpret_cast<const vf*>(dst + v * kVec) : vf{};
    const int32_t* off = off_.data();
    const float* val = val_.data();
    prefetch_ahead(k0, k1);
    for (int64_t k = k0; k < k1; ++k) {
      const float* xp = base + off[k];
      const float w = val[k];
      fma_run<V>(acc, xp, w);
    }
#pragma GCC unroll 16
    for (int64_t v = 0; v < V; ++v) *reinterpret_cast<vf*>(dst + v * kVec) = acc[v];
  }
  // On maps of one or two tasks: the lines of the non-zeros from kPrefetch ahead of k0 to
  // kPrefetch past k1 (clamped to the arrays).
  void prefetch_ahead(int64_t k0, int64_t k1) const {
    if (!prefetch_) return;
    const int64_t end = std::min<int64_t>(k1 + kPrefetch, static_cast<int64_t>(val_.size()));
    for (int64_t k = k0 + kPrefetch; k < end; k += 16) {
      __builtin_prefetch(off_.data() + k);
      __builtin_prefetch(val_.data() + k);
    }
  }
  // One 64-pixel block: two interleaved halves of the non-zeros, for 8 independent sums.
  void accumulate_split(const float* base, int64_t k0, int64_t k1, float* dst, bool add) const {
    prefetch_ahead(k0, k1);  // (AVX-512: a 7x7 map is one odd block and always comes here)
    vf acc[kVecs], acc2[kVecs];
#pragma GCC unroll 16
    for (int64_t v = 0; v < kVecs; ++v) {
      acc[v] = add ? *reinterpret_cast<const vf*>(dst + v * kVec) : vf{};
      acc2[v] = vf{};
    }
    const int32_t* off = off_.data();
    const float* val = val_.data();
    int64_t k = k0;
    for (; k + 1 < k1; k += 2) {
      const float* xp = base + off[k];
      const float* xq = base + off[k + 1];
      const float w = val[k], u = val[k + 1];
#pragma GCC unroll 16
      for (int64_t v = 0; v < kVecs; ++v) {
        acc[v] += *reinterpret_cast<const vf*>(xp + v * kVec) * w;
        acc2[v] += *reinterpret_cast<const vf*>(xq + v * kVec) * u;
      }
    }
    if (k < k1) {
      const float* xp = base + off[k];
#pragma GCC unroll 16
      for (int64_t v = 0; v < kVecs; ++v) acc[v] += *reinterpret_cast<const vf*>(xp + v * kVec) * val[k];
    }
#pragma GCC unroll 16
    for (int64_t v = 0; v < kVecs; ++v) *reinterpret_cast<vf*>(dst + v * kVec) = acc[v] + acc2[v];
  }

  // Split: dst[0 .. kTaskPx) (+)= the segment's sums, from the class runs bounds[0 .. classes_]
  // (2 or 3). Class b sums x at offset off (aligned) into acc[b], whose lane j then holds the
  // sum for output pixel j - b: acc[b] takes one vector more than the block, and the classes
  // are added once at the end, each shifted by b lanes in registers. A whole task (two
  // 64-pixel blocks) always: a map's last, odd block computes a block past it, in the planes'
  // slack (scratch_bytes), and store_block drops it.
  void accumulate_classes(const float* base, const int64_t* bounds, float* dst, bool add) const {
#ifdef __AVX512F__
    constexpr int V = kTaskBlocks * kVecs;  // vectors of a task
    vf acc[kMaxClasses][V + 1];
#pragma GCC unroll 32
    for (int b = 0; b < kMaxClasses; ++b)
#pragma GCC unroll 32
      for (int v = 0; v <= V; ++v) acc[b][v] = vf{};
    prefetch_ahead(bounds[0], bounds[classes_]);
    const int32_t* off = off_.data();
    const float* val = val_.data();
    for (int64_t k = bounds[0]; k < bounds[1]; ++k) {  // b = 0: the block itself
      const float* xp = base + off[k];
      const float w = val[k];
      fma_run<V>(acc[0], xp, w);
    }
#pragma GCC unroll 4
    for (int b = 1; b < kMaxClasses; ++b) {
      if (b >= classes_) break;
      for (int64_t k = bounds[b]; k < bounds[b + 1]; ++k) {
        const float* xp = base + off[k];
        const float w = val[k];
        fma_run<V + 1>(acc[b], xp, w);
      }
    }
    // Class b's sums, b lanes on: lanes b .. 15 of one vector and 0 .. b - 1 of the next, put
    // together in registers (through a buffer, each unaligned read of two stored vectors could
    // not be forwarded from the stores: a fifth of the split variant's time went there).
    static_assert(kMaxClasses == 3 && kVec == 16, "lanes_on: shifts of 1 or 2 lanes of 16");
    auto lanes_on = [](vf lo, vf hi, int b) __attribute__((always_inline)) {
      const __m512i l = reinterpret_cast<__m512i>(lo), h = reinterpret_cast<__m512i>(hi);
      // (the masked form with every lane set: the plain one has GCC 12 warn of an undefined source)
      return reinterpret_cast<vf>(b == 1 ? _mm512_mask_alignr_epi32(l, 0xffff, h, l, 1)
                                         : _mm512_mask_alignr_epi32(l, 0xffff, h, l, 2));
    };
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      vf sum = acc[0][v];
#pragma GCC unroll 4
      for (int b = 1; b < kMaxClasses; ++b) sum += lanes_on(acc[b][v], acc[b][v + 1], b);
      vf* d = reinterpret_cast<vf*>(dst + v * kVec);
      *d = add ? *d + sum : sum;
    }
#else
    (void)base, (void)bounds, (void)dst, (void)add;
#endif
  }

  std::string name() const override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "sparse:direct%s(%.0f%% zeros)",
                  shifts_ > 1 ? "-aligned" : classes_ > 1 ? "-split" : "", 100 * (1 - density_));
    return buf + layouts_name();
  }
  size_t scratch_bytes() const override {
    // Split: a task past the last block reads up to a task and a vector further.
    const int64_t slack = classes_ > 1 ? kTaskBlocks * planar::kBlock + kVec : 0;
    return static_cast<size_t>(shifts_ * geo_.planes_size(c_) + slack) * sizeof(float);
  }
  // The variant asked for applies (Plain always does).
  bool applies(SparseVariant v) const {
    return v == SparseVariant::Plain || (v == SparseVariant::Copies ? shifts_ > 1 : classes_ > 1);
  }
  // Floats that the non-zeros' int32 offsets span: every shifted copy of the planes.
  int64_t offset_span() const { return shifts_ * geo_.planes_size(c_); }
 private:
  int64_t shifts_ = 1;  // copies of the planes, shifted by 0, 1, ... floats (aligned rows)
  int64_t classes_ = 1;  // Split: runs of non-zeros per segment, one per horizontal tap shift
  bool shortcut_shift0_ = false;  // a fused shortcut's tap has no horizontal shift (class 0)
  int64_t cb_ = 1, ncb_ = 1;  // input channels per block, blocks
  static constexpr int64_t kOutGroup = 16;  // output channels per task
  static constexpr int64_t kPrefetch = 64;  // non-zeros ahead (256 bytes of each array)
  bool prefetch_ = false;
  std::vector<int64_t> row_;  // non-zeros of segment(o, blk): row_[s] .. row_[s + 1]
  // Output channel o's non-zeros in input channel block blk. Groups of kOutGroup outputs in
  // turn, each by block, then output (every group but the last is full).
  size_t segment(int64_t o, int64_t blk) const {
    const int64_t o0 = o / kOutGroup * kOutGroup;
    return static_cast<size_t>(o0 * ncb_ + blk * std::min(kOutGroup, m_ - o0) + (o - o0));
  }
};

// The Gather variant, for maps of at most 64 output pixels (ResNet-18's and MobileNetV2's
// 7x7 layers). There the planar grid of SparseConv computes rows of grid_w floats of which
// ow are output (a 3x3 conv at 7x7: 49 of 64 lanes, read unaligned), and every task of 16
// output channels re-reads the whole input from L2. Here the input channels go in blocks:
// each tap's input pixels of a block are gathered into a row of their own (im2col of the
// block, in L1), and every output channel's non-zeros in the block run over those rows at
// aligned reads of the output pixels only (rounded up to 16 floats), into sums for all output
// channels (in L2). Threads take ranges of blocks (balanced by non-zeros), each with sums of
// its own, so the gathering is not repeated per thread; after a barrier each adds up and
// writes a range of output channels. (Ranges of output channels per thread instead gathered
// every block on every thread: at 2 threads slower than the plain variant.)
class SparseGatherConv final : public SparseConvBase {
 public:
  SparseGatherConv(const graph::Graph& g, const graph::Node& n, const graph::Node* shortcut = nullptr)
      : SparseConvBase(g, n, SparseVariant::Gather, shortcut) {
    const Shape& ys = g.value(n.outputs[0]).shape;
    out_geo_ = {ys[2], ys[3], 1, 1, ys[2], ys[3], 0, 0, 1};  // flat position = oy * ow + ox
    taps_ = geo_.kh * geo_.kw;
    npx_ = geo_.oh * geo_.ow;
    row_ = (npx_ + 15) / 16 * 16;
    planar::tap_offsets(geo_, c_, tap_off_);
    const float* W = weights(g, n);
    // A block's rows fill l1_budget(); at 90% zeros and more, twice that (a segment of an output
    // channel in a block then had ~15 non-zeros, and the cost per segment, its sums' loads and
    // stores and the loop's exit, outweighed L1 misses: ResNet-18's 512-channel 7x7 layer at
    // 90% and 95%, 0.38 -> 0.355 and 0.27 -> 0.21 ms; at 80% it was slower, 0.60 -> 0.65).
    cb_ = l1_budget() / (taps_ * row_ * static_cast<int64_t>(sizeof(float)));
    cb_ = std::clamp<int64_t>(density_ <= 0.15 ? 2 * cb_ : cb_, 1, c_);
    ncb_ = (c_ + cb_ - 1) / cb_;
    // By block, then output channel.
    seg_.assign(1, 0);
    cum_.assign(static_cast<size_t>(ncb_) + 1, 0);
    for (int64_t blk = 0; blk < ncb_; ++blk) {
      for (int64_t o = 0; o < m_; ++o) {
        for (int64_t c = blk * cb_; c < std::min(c_, (blk + 1) * cb_); ++c)
          for (int64_t t = 0; t < taps_; ++t) {
            const float w = W[(o * c_ + c) * taps_ + t];
            if (w == 0.f) continue;
            off_.push_back(static_cast<int32_t>(((c - blk * cb_) * taps_ + t) * row_));
            val_.push_back(w);
          }
        seg_.push_back(static_cast<int64_t>(val_.size()));
      }
      // Work per block for the threads' ranges: its non-zeros, and its gathering and segments
      // at a non-zero's cost each (roughly).
      const int64_t rows = (std::min(c_, (blk + 1) * cb_) - blk * cb_) * taps_;
      cum_[static_cast<size_t>(blk) + 1] = cum_[static_cast<size_t>(blk)] + (seg_.back() - seg_[blk * m_]) + rows + m_;
    }
    slots_ = std::max(1, omp_get_max_threads());  // the session's thread count
    planes_floats_ = (geo_.planes_size(c_) + 15) / 16 * 16;
    slot_floats_ = col_floats() + m_ * row_;
    release_weights();
    switch (row_ / kVec) {  // V vectors per row, C chains of sums (8 or 9 accumulators in all)
      case 1: sum_fn_ = &SparseGatherConv::segment_sum<1, 8>; break;
      case 2: sum_fn_ = &SparseGatherConv::segment_sum<2, 4>; break;
      case 3: sum_fn_ = &SparseGatherConv::segment_sum<3, 3>; break;
      case 4: sum_fn_ = &SparseGatherConv::segment_sum<4, 2>; break;
      case 6: sum_fn_ = &SparseGatherConv::segment_sum<6, 1>; break;
      case 8: sum_fn_ = &SparseGatherConv::segment_sum<8, 1>; break;
      case 12: sum_fn_ = &SparseGatherConv::segment_sum<12, 1>; break;
      default: sum_fn_ = &SparseGatherConv::segment_sum<16, 1>; break;  // 4-lane vectors, 64 pixels
    }
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    auto* scratch = static_cast<float*>(a.scratch);
    for (int64_t b = 0; b < batch_; ++b) {
      const float* planes = planes_of(X + b * in_floats(), scratch);
      Dest d[2];
      dests(a, b, d);
      // At most the threads the scratch has slots for, no more than the caller runs now, and
      // no more than there are blocks: a thread without one only adds zeros (on ResNet-18's
      // 1x1 stride-2 layer into 7x7 at 90%, one block of all 256 channels: 0.049 ms on 1
      // thread, 0.056 on 2, which zeroed and added a second 128 KB of sums).
      const int threads = static_cast<int>(std::min<int64_t>(std::min(slots_, omp_get_max_threads()), ncb_));
      if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
          const int t = omp_get_thread_num(), nt = omp_get_num_threads();
          accumulate_blocks(planes, scratch, t, nt);
#pragma omp barrier
          store_outputs(scratch, d, t, nt);
        }
      } else {
        accumulate_blocks(planes, scratch, 0, 1);
        store_outputs(scratch, d, 0, 1);
      }
    }
  }

  std::string name() const override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "sparse:direct-gather(%.0f%% zeros)", 100 * (1 - density_));
    return buf + layouts_name();
  }
  size_t scratch_bytes() const override {
    return static_cast<size_t>(planes_floats_ + slots_ * slot_floats_) * sizeof(float);
  }

 private:
  // Thread t of nt: the blocks [lo, hi) that hold about 1/nt of the work, into its sums
  // (all output channels; zeros when it has no block).
  void accumulate_blocks(const float* planes, float* scratch, int t, int nt) const {
    const int64_t total = cum_.back();
    auto bound = [&](int i) {
      if (i >= nt) return ncb_;
      return static_cast<int64_t>(std::lower_bound(cum_.begin(), cum_.end(), total * i / nt) - cum_.begin());
    };
    const int64_t lo = bound(t), hi = bound(t + 1);
    float* col = slot(scratch, t);
    float* acc = col + col_floats();
    if (lo >= hi) {
      std::fill(acc, acc + m_ * row_, 0.f);
      return;
    }
    for (int64_t blk = lo; blk < hi; ++blk) {
      gather(planes, blk, col);
      const int64_t* seg = seg_.data() + blk * m_;
      for (int64_t o = 0; o < m_; ++o) {
        if (seg[o] == seg[o + 1] && blk > lo) continue;
        (this->*sum_fn_)(col, seg[o], seg[o + 1], acc + o * row_, blk > lo);
      }
    }
  }
  // Thread t of nt: output channels [lo, hi), every thread's sums added into thread 0's, then
  // written out with the epilogue.
  void store_outputs(float* scratch, const Dest* d, int t, int nt) const {
    const int64_t lo = m_ * t / nt, hi = m_ * (t + 1) / nt;
    if (lo >= hi) return;
    float* acc = slot(scratch, 0) + col_floats();
    for (int u = 1; u < nt; ++u) {
      const float* part = slot(scratch, u) + col_floats();
      for (int64_t i = lo * row_; i < hi * row_; i += kVec)
        *reinterpret_cast<vf*>(acc + i) += *reinterpret_cast<const vf*>(part + i);
    }
    store(out_geo_, acc + lo * row_, row_, 0, npx_, lo, hi - lo, d);
  }
  int64_t col_floats() const { return cb_ * taps_ * row_; }
  // (The scratch: the planes' copy, then the slots.)
  float* slot(float* scratch, int t) const {
    return scratch + planes_floats_ + t * slot_floats_;
  }

  // col's rows: for each channel of block blk and each tap, the input pixels the tap reads for
  // output pixels 0 .. npx_ (oy * ow + ox), then zeros to row_.
  void gather(const float* planes, int64_t blk, float* col) const {
    const int64_t c0 = blk * cb_, c1 = std::min(c_, c0 + cb_), gw = geo_.grid_w(), ow = geo_.ow, ps = geo_.plane();
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t t = 0; t < taps_; ++t) {
        const float* src = planes + c * ps + tap_off_[t];
        float* dst = col + ((c - c0) * taps_ + t) * row_;
        for (int64_t oy = 0; oy < geo_.oh; ++oy) copy_floats(dst + oy * ow, src + oy * gw, ow);
        std::fill(dst + npx_, dst + row_, 0.f);
      }
  }
  static void copy_floats(float* dst, const float* src, int64_t n) {
#ifdef __AVX512F__
    for (; n >= 16; n -= 16, src += 16, dst += 16) _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    _mm512_mask_storeu_ps(dst, m, _mm512_maskz_loadu_ps(m, src));
#else
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
#endif
  }

  // dst[0 .. V vectors) (+)= the sum over non-zeros k0 .. k1 of w * col[off ..], in C
  // interleaved chains (C x V accumulators hide the FMA latency).
  template <int V, int C>
  void segment_sum(const float* col, int64_t k0, int64_t k1, float* dst, bool add) const {
    vf acc[C][V];
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[c][v] = vf{};
    const int32_t* off = off_.data();
    const float* val = val_.data();
    int64_t k = k0;
    for (; k + C <= k1; k += C)
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        const float* xp = col + off[k + c];
        const float w = val[k + c];
        fma_run<V>(acc[c], xp, w);
      }
    for (; k < k1; ++k) {
      const float* xp = col + off[k];
      const float w = val[k];
      fma_run<V>(acc[0], xp, w);
    }
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      vf s = acc[0][v];
#pragma GCC unroll 16
      for (int c = 1; c < C; ++c) s += acc[c][v];
      vf* d = reinterpret_cast<vf*>(dst + v * kVec);
      *d = add ? *d + s : s;
    }
  }

  planar::Geometry out_geo_{};
  int64_t taps_, npx_, row_;  // row_: floats per gathered row (npx_ rounded up to 16)
  int64_t cb_ = 1, ncb_ = 1;  // input channels per block, blocks
  int64_t tap_off_[64];
  std::vector<int64_t> seg_;  // non-zeros of output o in block blk: seg_[blk * m_ + o] .. seg_[blk * m_ + o + 1]
  std::vector<int64_t> cum_;  // work of blocks 0 .. blk - 1 (cum_[ncb_]: all)
  // (off_: row * row_ within the block's gathered rows)
  int slots_ = 1;
  int64_t planes_floats_ = 0, slot_floats_ = 0;  // scratch: the planes, then per thread its rows and sums
  void (SparseGatherConv::*sum_fn_)(const float*, int64_t, int64_t, float*, bool) const = nullptr;
};

}  // namespace

double zero_fraction(const Tensor& w) {
  if (w.dtype() != DType::Float32 || w.numel() == 0) return 0;
  const float* p = w.data<float>();
  const int64_t n = w.numel();  // once: numel() multiplies the dims on every call
  int64_t z = 0;
  for (int64_t i = 0; i < n; ++i) z += p[i] == 0.f;
  return static_cast<double>(z) / static_cast<double>(n);
}

bool sparse_split_available() { return kSplitTask; }

namespace {
std::unique_ptr<Kernel> make_sparse(const graph::Graph& g, const graph::Node& n, SparseVariant variant, std::string* why,
                                    const graph::Node* shortcut) {
  const auto& p = n.p<graph::ConvParams>();
  auto no = [&](const char* reason) -> std::unique_ptr<Kernel> {
    if (why) *why = reason;
    return nullptr;
  };
  if (n.layout != graph::Layout::NHWC) return no("not in NHWC layout");
  if (p.group != 1) return no("grouped conv");
  if (p.strides.size() != 2) return no("not a 2-D conv");
  if (p.strides[0] != p.strides[1]) return no("strides differ between height and width");
  if (p.strides[0] > 2) return no("stride other than 1 or 2");
  if (p.dilations[0] != 1 || p.dilations[1] != 1) return no("dilated conv");
  const graph::Value& w = g.value(n.inputs[1]);
  if (!w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4) return no("run-time or non-float weights");
  if (w.shape[2] * w.shape[3] > 64) return no("kernel larger than 64 taps");
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return no("run-time bias");
  // The planar copy's zero padding times an inf weight is NaN, where the dense kernels skip it.
  if (!all_finite(w.constant)) return no("inf or NaN weights");
  const planar::Geometry geo = conv_geometry(g, n);
  if (geo.planes_size(w.shape[1]) >= (int64_t{1} << 31)) return no("input too large for 32-bit offsets");  // checked before the CSR is built
  if (variant == SparseVariant::Gather) {
    if (geo.oh * geo.ow > planar::kBlock) return no("the gathered variant takes maps of at most 64 output pixels");
    return std::make_unique<SparseGatherConv>(g, n, shortcut);
  }
  auto k = std::make_unique<SparseConv>(g, n, variant, shortcut);
  if (k->offset_span() >= (int64_t{1} << 31)) return no("input too large for 32-bit offsets");  // with the aligned rows and shifted copies
  if (k->applies(variant)) return k;
  return no("the variant does not apply to this shape");  // it would be the plain one
}

// The step of a shortcut conv whose work a sparse conv does (make_sparse_conv_with_shortcut):
// nothing to run; its MACs (the shortcut's non-zeros) for the stats. It takes planes as the
// conv that does its work does: their shared input, and its output, may stay in planes.
class ShortcutDone final : public Kernel {
 public:
  ShortcutDone(std::string by, int64_t macs) : by_(std::move(by)), macs_(macs) {}
  void run(const KernelArgs&) const override {}
  std::string name() const override { return "fused into '" + by_ + "' (its non-zero weights there)"; }
  int64_t executed_macs() const override { return macs_; }
  bool takes_planes() const override { return true; }
  std::unique_ptr<Kernel> relayout(const graph::Graph&, const graph::Node&) const override {
    return std::make_unique<ShortcutDone>(by_, macs_);
  }

 private:
  std::string by_;
  int64_t macs_;
};
}  // namespace

std::unique_ptr<Kernel> make_sparse_conv(const graph::Graph& g, const graph::Node& n, SparseVariant variant,
                                         std::string* why) {
  return make_sparse(g, n, variant, why, nullptr);
}

bool fusable_shortcut(const graph::Graph& g, const graph::Node& n, const graph::Node& b) {
  if (n.op != graph::OpType::Conv || b.op != graph::OpType::Conv || &n == &b || n.dead || b.dead) return false;
  if (n.outputs.size() != 1 || b.outputs.size() != 1 || b.inputs.size() < 2 || n.inputs[0] != b.inputs[0]) return false;
  const auto &p = n.p<graph::ConvParams>(), &q = b.p<graph::ConvParams>();
  if (q.fused_sum || !q.pre_shift.empty() || q.reads_nchw || q.group != 1 || b.layout != graph::Layout::NHWC) return false;
  if (q.strides != p.strides || q.dilations.size() != 2 || q.dilations[0] != 1 || q.dilations[1] != 1) return false;
  if (std::any_of(q.pads.begin(), q.pads.end(), [](int64_t v) { return v != 0; })) return false;
  const graph::Value& w = g.value(b.inputs[1]);
  const Shape& wa = g.value(n.inputs[1]).shape;
  if (!w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[2] != 1 || w.shape[3] != 1 ||
      wa.size() != 4 || w.shape[1] != wa[1] || !all_finite(w.constant))
    return false;
  if (b.inputs.size() > 2 && b.inputs[2] != graph::kNoValue && !g.value(b.inputs[2]).is_constant()) return false;
  // Its output pixel (y, x) reads the input pixel of this conv's tap (pad_top, pad_left).
  const Shape &ya = g.value(n.outputs[0]).shape, &yb = g.value(b.outputs[0]).shape;
  if (ya.size() != 4 || yb.size() != 4 || ya[0] != yb[0] || ya[2] != yb[2] || ya[3] != yb[3]) return false;
  return p.pads.size() == 4 && p.pads[0] < wa[2] && p.pads[1] < wa[3];
}

std::unique_ptr<Kernel> make_sparse_conv_with_shortcut(const graph::Graph& g, const graph::Node& n,
                                                       const graph::Node& b, SparseVariant variant) {
  if (!fusable_shortcut(g, n, b)) return nullptr;
  return make_sparse(g, n, variant, nullptr, &b);
}

std::unique_ptr<Kernel> make_shortcut_done(const graph::Graph& g, const graph::Node& b, const std::string& by) {
  const Tensor& w = g.value(b.inputs[1]).constant;
  const Shape& y = g.value(b.outputs[0]).shape;
  const int64_t nz = w.numel() - static_cast<int64_t>(std::llround(zero_fraction(w) * static_cast<double>(w.numel())));
  return std::make_unique<ShortcutDone>(by, y[0] * nz * y[2] * y[3]);
}

std::unique_ptr<Kernel> choose_measured(std::unique_ptr<Kernel> dense, std::unique_ptr<Kernel> sparse, SparseMode mode,
                                        double zeros, const graph::Graph& g, const graph::Node& n, double t_sparse,
                                        double t_dense, double margin) {
  if (!sparse) return dense;
  if (mode == SparseMode::Always) return sparse;
  // Measured cost model: the faster of the two on this layer, here.
  // The fastest of ~7 calls each, in turns (time_kernels), and `margin` for the sparse kernel.
  if (t_sparse < 0 || t_dense < 0) {
    const std::vector<double> t = time_kernels({dense.get(), sparse.get()}, g, n, 7);
    t_dense = t[0], t_sparse = t[1];
  }
  char note[96];
  std::snprintf(note, sizeof note, "[measured: sparse %.3f ms, dense %.3f ms]", t_sparse, t_dense);
  if (t_sparse < margin * t_dense) return with_note(std::move(sparse), note);
  return with_note(std::move(dense), std::string(note) + " (weights " +
                                                       std::to_string(static_cast<int>(100 * zeros)) + "% zero)");
}

std::unique_ptr<Kernel> make_conv(const graph::Graph& g, const graph::Node& n, SparseMode sparse) {
  if (!n.p<graph::ConvParams>().pre_shift.empty()) return make_shift_conv(g, n);
  // The direct kernel, chosen already:
  if (touches_resident(g, n) || reads_nchw_input(g, n)) return make_dense_conv(g, n);
  std::unique_ptr<Kernel> dense = make_dense_conv(g, n);
  if (sparse == SparseMode::Off || !dense) return dense;
  const graph::Value& w = g.value(n.inputs[1]);
  if (!w.is_constant()) return dense;
  const double zeros = zero_fraction(w.constant);
  if (zeros < kMinSparsity && sparse != SparseMode::Always) return dense;
  // Up to four sparse variants (aligned reads, see SparseConv; small maps, SparseGatherConv): the
  // fastest is the candidate against the dense kernel (all timed in turn).
  std::string why;
  std::vector<std::unique_ptr<Kernel>> variants;
  for (SparseVariant v : {SparseVariant::Copies, SparseVariant::Split, SparseVariant::Gather, SparseVariant::Plain})
    if (auto k = make_sparse_conv(g, n, v, v == SparseVariant::Plain ? &why : nullptr)) variants.push_back(std::move(k));
  if (variants.empty())  // say why the sparse kernel was not tried, on a layer that is sparse enough
    return with_note(std::move(dense), "[sparse kernel not applicable: " + why + ", " +
                                           std::to_string(static_cast<int>(100 * zeros)) + "% zero weights]");
  double t_candidate = -1, t_dense = -1;  // when already measured
  size_t best = 0;
  if (variants.size() > 1 && sparse != SparseMode::Always) {
    std::vector<const Kernel*> timed{dense.get()};
    for (const auto& k : variants) timed.push_back(k.get());
    const std::vector<double> t = time_kernels(timed, g, n, 7);
    t_dense = t[0];
    for (size_t i = 1; i < variants.size(); ++i)
      if (t[i + 1] < t[best + 1]) best = i;
    t_candidate = t[best + 1];
  }
  std::unique_ptr<Kernel> candidate = std::move(variants[best]);
  return choose_measured(std::move(dense), std::move(candidate), sparse, zeros, g, n, t_candidate, t_dense);
}

}  // namespace sluice::ops
