// A dense conv on the direct planar kernel (ops/gated/direct_conv.h: output pixels in vector
// lanes, weights broadcast; packed at load on AVX-512, else read from the model's OIHW
// tensor), for the convs oneDNN runs poorly:
// channel counts that are small or not a multiple of its 16-channel blocks, as statically
// pruned models leave them (a ResNet-18 stem pruned to 19 channels ran at 47 GMAC/s on
// oneDNN). make_conv times both on the node's shape and keeps the faster.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <optional>

#include <omp.h>

#include "ops/common/measure.h"
#include "ops/common/onednn.h"
#include "ops/common/simd.h"
#include "ops/gated/direct_conv.h"
#include "ops/kernel.h"
#include "ops/pool/resident.h"

namespace sluice::ops {

namespace {

bool is_resident(const graph::Graph& g, graph::ValueId v) {
  return v != graph::kNoValue && g.value(v).layout == graph::Layout::Planar;
}

class PlanarDirectConv final : public Kernel {
 public:
  // pool: the resident max pool that reads this conv's output alone (Plan::fuse_pools), run on
  // the rows as they are finished; it writes the step's second output.
  PlanarDirectConv(const graph::Graph& g, const graph::Node& n, const graph::Node* pool = nullptr)
      : p_(n.p<graph::ConvParams>()),
        x_form_(is_resident(g, n.inputs[0]) ? planar::Source::Resident
                : reads_nchw_input(g, n)    ? planar::Source::Nchw
                                            : planar::Source::Nhwc),
        y_resident_(is_resident(g, n.outputs[0])),
        sum_resident_(p_.fused_sum && is_resident(g, n.inputs[3])) {
    // An NHWC residual is not added into planes (keep_planes_resident never asks for it), nor
    // are wide rows read or written (keep_planes_resident gives them to sparse convs only).
    for (graph::ValueId v : n.inputs)
      if (v != graph::kNoValue && g.value(v).wide_rows)
        throw Error("internal error: '" + n.name + "' on the direct kernel reads planes with wide rows");
    if (g.value(n.outputs[0]).wide_rows)
      throw Error("internal error: '" + n.name + "' on the direct kernel writes planes with wide rows");
    if (y_resident_ && p_.fused_sum && !sum_resident_)
      throw Error("internal error: '" + n.name + "' writes resident planes with an NHWC residual");
    const Shape& xs = g.value(n.inputs[0]).shape;
    const graph::Value& w = g.value(n.inputs[1]);
    const Shape& ys = g.value(n.outputs[0]).shape;
    batch_ = xs[0];
    c_ = xs[1];
    m_ = ys[1];
    shape_ = {c_, m_, xs[2], xs[3], w.shape[2], w.shape[3], ys[2], ys[3], p_.pads[0], p_.pads[1], p_.strides[0]};
    const float* W = w.constant.data<float>();
    weights_.assign(W, W + w.constant.numel());
    packed_ = gated::pack_direct_weights(shape_, W);
    bias_ = constant_or_zeros(g, n, 2, m_);
    in_.resize(static_cast<size_t>(c_));
    out_.resize(static_cast<size_t>(m_));
    std::iota(in_.begin(), in_.end(), 0);
    std::iota(out_.begin(), out_.end(), 0);
    if (pool) {
      if (!y_resident_ || pool->inputs[0] != n.outputs[0])
        throw Error("internal error: '" + pool->name + "' cannot be fused into '" + n.name + "'");
      pool_.emplace(pool->p<graph::PoolParams>(), ys, g.value(pool->outputs[0]).shape,
                    g.value(pool->outputs[0]).layout != graph::Layout::Planar);
      threads_ = std::max(1, omp_get_max_threads());
    }
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const float* S = p_.fused_sum ? a.in[3].as<const float>() : nullptr;
    // Floats per sample: NHWC pixels, or resident planes.
    const int64_t in_size =
        c_ * (x_form_ == planar::Source::Resident ? planar::resident(shape_.h, shape_.w).plane() : shape_.h * shape_.w);
    const int64_t out_nhwc = m_ * shape_.oh * shape_.ow, out_res = m_ * planar::resident(shape_.oh, shape_.ow).plane();
    const int64_t out_size = y_resident_ ? out_res : out_nhwc, sum_size = sum_resident_ ? out_res : out_nhwc;
    for (int64_t b = 0; b < batch_; ++b) {
      gated::DirectEpilogue e{S ? S + b * sum_size : nullptr, m_, p_.activation, y_resident_, sum_resident_};
      std::function<void(int64_t, int64_t, int64_t)> pool_rows;
      if (pool_) {
        // (A run on more threads than the kernel was made for has no tmp rows for the others:
        // the pool then runs after the conv, on threads_.)
        if (omp_get_max_threads() <= threads_) {
          pool_rows = [&](int64_t first, int64_t prev_end, int64_t end) { pool_finished(a, b, first, prev_end, end); };
          e.rows_done = &pool_rows;
        }
        std::fill(pool_done(a), pool_done(a) + pool_->out_h(), 0);
      }
      gated::direct_conv(shape_, X + b * in_size, c_, in_.data(), in_.data(), c_, weights_.data(), bias_.data(),
                         out_.data(), m_, Y + b * out_size, a.scratch, e, x_form_,
                         packed_.empty() ? nullptr : packed_.data());
      if (pool_) pool_rest(a, b);
    }
  }
  std::string name() const override {
    // (With a pool, "+pool" in front: `bench --profile` shows the start of kernel names.)
    std::string r = pool_ ? "direct:planar+pool" : "direct:planar";
    const char* sep = ", resident planes ";
    for (auto [on, what] :
         {std::pair{x_form_ == planar::Source::Resident, "in"}, {y_resident_, "out"}, {sum_resident_, "residual"}})
      if (on) r.append(sep).append(what), sep = "+";
    if (x_form_ == planar::Source::Nchw) r += ", reads NCHW";
    return pool_ ? r + ", then its max pool" : r;
  }
  bool keeps_planes() const override { return true; }
  size_t scratch_bytes() const override {
    return conv_scratch() + (pool_ ? static_cast<size_t>(threads_ * pool_->tmp_floats()) * sizeof(float) +
                                         static_cast<size_t>(pool_->out_h())
                                   : 0);
  }
  // The sum is read pixel by pixel before that pixel's output is written: in place is safe,
  // in the same layout.
  int in_place_input() const override { return p_.fused_sum && sum_resident_ == y_resident_ ? 3 : -1; }

 private:
  size_t conv_scratch() const { return (gated::direct_conv_scratch(shape_) + 63) / 64 * 64; }
  // After the conv's scratch: each thread's pool rows (an NHWC pool output), then a flag per
  // output row of the pool, set when it has been pooled.
  float* pool_tmp(const KernelArgs& a) const {
    return reinterpret_cast<float*>(static_cast<char*>(a.scratch) + conv_scratch()) +
           omp_get_thread_num() * pool_->tmp_floats();
  }
  char* pool_done(const KernelArgs& a) const {
    return static_cast<char*>(a.scratch) + conv_scratch() +
           static_cast<size_t>(threads_ * pool_->tmp_floats()) * sizeof(float);
  }
  // direct_conv's rows_done: the pool's output rows whose window, and the rows either side of
  // it that its vector reads touch, this thread has just finished.
  void pool_finished(const KernelArgs& a, int64_t b, int64_t first, int64_t prev_end, int64_t end) const {
    const int64_t margin = 1 + (2 * simd::kLanes + 2) / (shape_.ow + 2);  // rows a read may run into below
    char* done = pool_done(a);
    for (int64_t oy = 0; oy < pool_->out_h(); ++oy) {
      const auto [r0, r1] = pool_->window(oy);
      const int64_t need0 = std::max<int64_t>(0, r0 - 1), need1 = std::min(shape_.oh, r1 + margin);
      if (r0 >= r1 || need0 < first || need1 <= prev_end || need1 > end) continue;
      pool_->rows(pooled_input(a, b), oy, oy + 1, pooled_output(a, b), pool_tmp(a));
      done[oy] = 1;
    }
  }
  // The pool's rows that no thread could take as it went (those that straddle the threads'
  // shares; every row on small maps).
  void pool_rest(const KernelArgs& a, int64_t b) const {
    const char* done = pool_done(a);
    const int64_t oh = pool_->out_h();
    const int64_t left = oh - std::count(done, done + oh, 1);
#pragma omp parallel for schedule(static) num_threads(threads_) if (left * pool_->channels() * pool_->out_w() > 16384)
    for (int64_t oy = 0; oy < oh; ++oy)
      if (!done[oy]) pool_->rows(pooled_input(a, b), oy, oy + 1, pooled_output(a, b), pool_tmp(a));
  }
  const float* pooled_input(const KernelArgs& a, int64_t b) const {
    return a.out[0].as<const float>() + b * pool_->in_floats();
  }
  float* pooled_output(const KernelArgs& a, int64_t b) const { return a.out[1].as<float>() + b * pool_->out_floats(); }

  graph::ConvParams p_;
  planar::Source x_form_;                        // input 0: NHWC, resident planes or NCHW
  bool y_resident_, sum_resident_;               // output, fused sum in resident planes (Layout::Planar)
  gated::DirectConvShape shape_{};
  int64_t batch_, c_, m_;
  std::vector<float> weights_, bias_;
  std::vector<float> packed_;      // the weights for direct_conv's wide blocks (AVX-512), or empty
  std::vector<int32_t> in_, out_;  // every channel: 0..C-1 and 0..M-1
  std::optional<ResidentPoolRows> pool_;
  int threads_ = 1;
};

}  // namespace

bool make_direct_conv_applies(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  if (n.layout != graph::Layout::NHWC || p.group != 1 || !p.pre_shift.empty() || p.strides.size() != 2 ||
      p.dilations.size() != 2 || !gated::direct_conv_supported(p.strides.data(), p.dilations.data()))
    return false;
  const graph::Value& w = g.value(n.inputs[1]);
  if (!w.is_constant() || w.dtype != DType::Float32 || w.shape.size() != 4 || w.shape[2] * w.shape[3] > 64 ||
      w.constant.numel() == 0)
    return false;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue && !g.value(n.inputs[2]).is_constant()) return false;
  if (g.value(n.inputs[0]).shape.size() != 4 || g.value(n.inputs[0]).shape[1] != w.shape[1]) return false;
  return all_finite(w.constant);  // (last: it reads every weight) inf x the zero padding: NaN where oneDNN skips it
}

std::unique_ptr<Kernel> make_direct_conv(const graph::Graph& g, const graph::Node& n) {
  if (!make_direct_conv_applies(g, n)) return nullptr;
  return std::make_unique<PlanarDirectConv>(g, n);
}

std::unique_ptr<Kernel> make_pooled_direct_conv(const graph::Graph& g, const graph::Node& n, const graph::Node& pool) {
  if (!make_direct_conv_applies(g, n) || !is_resident(g, n.outputs[0]) || pool.layout != graph::Layout::Planar ||
      !resident_pool(g, pool) || pool.inputs[0] != n.outputs[0])
    return nullptr;
  return std::make_unique<PlanarDirectConv>(g, n, &pool);
}

namespace {
class DoneBy final : public Kernel {
 public:
  explicit DoneBy(std::string by) : by_(std::move(by)) {}
  void run(const KernelArgs&) const override {}
  std::string name() const override { return "fused into '" + by_ + "'"; }

 private:
  std::string by_;
};
}  // namespace

std::unique_ptr<Kernel> make_done_by(const std::string& node) { return std::make_unique<DoneBy>(node); }

bool resident_conv(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& y = g.value(n.outputs[0]);
  return x.shape_known && y.shape_known && x.shape.size() == 4 && y.shape.size() == 4 && x.dtype == DType::Float32 &&
         make_direct_conv_applies(g, n);
}

bool reads_nchw_input(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || !n.p<graph::ConvParams>().reads_nchw) return false;
  if (n.layout != graph::Layout::NHWC || g.value(n.inputs[0]).layout != graph::Layout::NCHW)
    throw Error("internal error: '" + n.name + "' is marked to read NCHW but its input is not NCHW or it is not NHWC");
  return true;
}

bool touches_resident(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::ConvParams>();
  return is_resident(g, n.inputs[0]) || is_resident(g, n.outputs[0]) || (p.fused_sum && is_resident(g, n.inputs[3]));
}

// Channel counts in oneDNN's 16-channel blocks run well there, and 1x1 convs are oneDNN's on
// every shape measured (the direct kernel ran 1.6-9x slower on MobileNetV2's); only the others
// are timed.
bool direct_timed(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Conv || !make_direct_conv_applies(g, n)) return false;
  const Shape& ws = g.value(n.inputs[1]).shape;
  const int64_t m = g.value(n.outputs[0]).shape.size() == 4 ? g.value(n.outputs[0]).shape[1] : 0;
  return !((ws[1] % 16 == 0 && m % 16 == 0) || ws[2] * ws[3] == 1);
}

std::unique_ptr<Kernel> make_dense_conv(const graph::Graph& g, const graph::Node& n) {
  // A conv that reads or writes resident planes, or reads NCHW, runs on the direct kernel: it
  // is the only one that can (keep_planes_resident and read_nchw_inputs chose them among the
  // convs that measured faster on it).
  if (touches_resident(g, n) || reads_nchw_input(g, n)) {
    if (std::unique_ptr<Kernel> direct = make_direct_conv(g, n)) return direct;
    throw Error("internal error: '" + n.name + "' has resident planes or an NCHW input but no direct kernel");
  }
  std::unique_ptr<Kernel> onednn = make_onednn_conv(g, n);
  if (!onednn) return nullptr;
  // oneDNN's NHWC conv against the same conv on its blocked layout with the reorders around
  // it (ops/conv/onednn.cpp), where that can pay.
  if (onednn::blocked_form_may_pay(onednn->name(), static_macs(g, n)))
    if (std::unique_ptr<Kernel> blocked = make_onednn_conv_blocked(g, n)) {
      const std::vector<double> t = time_kernels({onednn.get(), blocked.get()}, g, n, 3);
      char note[80];
      std::snprintf(note, sizeof note, "[measured: nhwc %.3f ms, blocked %.3f ms]", t[0], t[1]);
      onednn = with_note(t[1] < t[0] ? std::move(blocked) : std::move(onednn), note);
    }
  if (!direct_timed(g, n)) return onednn;
  std::unique_ptr<Kernel> direct = make_direct_conv(g, n);
  if (!direct) return onednn;
  // On several threads, oneDNN's conv in bands of rows (one per thread) too: on thin maps its
  // own split leaves a thread idle part of the time.
  std::unique_ptr<Kernel> rows = make_onednn_conv_rows(g, n);
  std::vector<const Kernel*> timed{onednn.get(), direct.get()};
  if (rows) timed.push_back(rows.get());
  const std::vector<double> t = time_kernels(timed, g, n, 7);
  const double t_onednn = t[0], t_direct = t[1];
  char note[112];
  if (rows) {
    std::snprintf(note, sizeof note, "[measured: direct %.3f ms, onednn %.3f ms, onednn by rows %.3f ms]", t_direct,
                  t_onednn, t[2]);
    // Only by a clear margin: where the two measure alike the bands ran slower in the model (the
    // slimmed ResNet-18's 28x28 layers on 2 threads: 0.035 ms each when timed, 0.044 -> 0.060 ms
    // in the model), where a layer's input comes from the layer before, split its own way.
    if (t[2] < 0.9 * t_onednn && t[2] <= t_direct) return with_note(std::move(rows), note);
  } else {
    std::snprintf(note, sizeof note, "[measured: direct %.3f ms, onednn %.3f ms]", t_direct, t_onednn);
  }
  return with_note(t_direct < t_onednn ? std::move(direct) : std::move(onednn), note);
}

}  // namespace sluice::ops
