// Fast float32 elementwise kernels: Add/Sub/Mul/Div/PRelu of equal shapes (or with a scalar) and
// the common activations, split over threads in cache-sized chunks and vectorised by the
// compiler. Elementwise work does not care about the memory layout, so they serve NCHW and
// NHWC steps alike. Other shapes and dtypes fall back to the reference kernels.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/common/vmath.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

constexpr int64_t kChunk = 16384;  // floats per task: 64 KiB, a few per core's L2

template <class F>
void parallel_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

enum class Bin { Add, Sub, Mul, Div, PRelu };

// Calls g with op's function of two floats (one instantiation per op, so the loops inline it).
template <class G>
void with_op(Bin op, G&& g) {
  switch (op) {
    case Bin::Add: g([](float x, float y) { return x + y; }); break;
    case Bin::Sub: g([](float x, float y) { return x - y; }); break;
    case Bin::Mul: g([](float x, float y) { return x * y; }); break;
    case Bin::Div: g([](float x, float y) { return x / y; }); break;
    case Bin::PRelu: g([](float x, float y) { return x < 0.f ? y * x : x; }); break;  // NaN stays NaN
  }
}

class Binary final : public Kernel {
 public:
  Binary(Bin op, bool scalar_b, bool scalar_a) : op_(op), scalar_b_(scalar_b), scalar_a_(scalar_a) {}
  void run(const KernelArgs& a) const override {
    const float* A = a.in[0].as<const float>();
    const float* B = a.in[1].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t n = a.out[0].numel();
    with_op(op_, [&](auto f) { apply(A, B, Y, n, f); });
  }
  std::string name() const override { return scalar_a_ || scalar_b_ ? "elementwise:scalar" : "elementwise"; }
  int in_place_input() const override { return scalar_a_ ? 1 : 0; }

 private:
  template <class F>
  void apply(const float* A, const float* B, float* Y, int64_t n, F f) const {
    if (scalar_b_) {
      const float b = B[0];
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(A[i], b);
      });
    } else if (scalar_a_) {
      const float x = A[0];
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(x, B[i]);
      });
    } else {
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(A[i], B[i]);
      });
    }
  }
  Bin op_;
  bool scalar_b_, scalar_a_;
};

// x [N, C, H, W] op s, s one value per (sample, channel) ([N, C, 1, 1], [1, C, 1, 1] or
// [C, 1, 1]): a squeeze-and-excitation scale, a per-channel bias. On NHWC data each pixel's C
// values meet s's row; on NCHW each plane meets one value. x may be either operand.
class ChannelBroadcast final : public Kernel {
 public:
  ChannelBroadcast(Bin op, bool s_first, bool per_sample, bool nhwc) : op_(op), s_first_(s_first), per_sample_(per_sample), nhwc_(nhwc) {}
  void run(const KernelArgs& a) const override {
    const float* X = a.in[s_first_ ? 1 : 0].as<const float>();
    const float* S = a.in[s_first_ ? 0 : 1].as<const float>();
    float* Y = a.out[0].as<float>();
    const Shape& ys = a.out[0].shape;
    const int64_t n = ys[0], c = ys[1], hw = ys[2] * ys[3];
    with_op(op_, [&](auto f) { apply(X, S, Y, n, c, hw, f); });
  }
  std::string name() const override { return nhwc_ ? "elementwise:per-channel:nhwc" : "elementwise:per-channel"; }
  int in_place_input() const override { return s_first_ ? 1 : 0; }

 private:
  template <class F>
  void apply(const float* X, const float* S, float* Y, int64_t n, int64_t c, int64_t hw, F f) const {
    const bool swap = s_first_;  // s op x, not x op s (Sub, Div)
    const auto g = [&](float x, float v) { return swap ? f(v, x) : f(x, v); };
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw >= 65536)
    for (int64_t b = 0; b < n; ++b)
      for (int64_t r = 0; r < (nhwc_ ? hw : c); ++r) {
        const float* s = S + (per_sample_ ? b * c : 0);
        if (nhwc_) {  // pixel r: its C values
          const float* x = X + (b * hw + r) * c;
          float* y = Y + (b * hw + r) * c;
          for (int64_t ch = 0; ch < c; ++ch) y[ch] = g(x[ch], s[ch]);
        } else {  // channel r: one plane
          const float* x = X + (b * c + r) * hw;
          float* y = Y + (b * c + r) * hw;
          const float v = s[r];
          for (int64_t i = 0; i < hw; ++i) y[i] = g(x[i], v);
        }
      }
  }
  Bin op_;
  bool s_first_, per_sample_, nhwc_;
};

// Whether s is one value per (sample, channel) of the 4-D y: [N, C, 1, 1] (per_sample), or
// [1, C, 1, 1] / [C, 1, 1] (the same for every sample).
bool per_channel_operand(const Shape& s, const Shape& y, bool& per_sample) {
  if (y.size() != 4) return false;
  if (s.size() == 4 && s[1] == y[1] && s[2] == 1 && s[3] == 1 && (s[0] == y[0] || s[0] == 1)) {
    per_sample = s[0] == y[0] && y[0] != 1;
    return true;
  }
  per_sample = false;
  return s.size() == 3 && s[0] == y[1] && s[1] == 1 && s[2] == 1;
}

// x op s where s broadcasts along whole rows of the (NCHW-ordered) output: y's shape is
// [outer, inner] for some split, and s is either [inner] (a row vector every row shares: a
// channel-last bias or LayerNorm's gamma) or [outer] (one value per row: LayerNorm's mean or
// std over the last axis), padded with 1s as ONNX broadcasting pads it. x may be either operand.
class RowBroadcast final : public Kernel {
 public:
  RowBroadcast(Bin op, bool s_first, bool row_vector, int64_t outer, int64_t inner)
      : op_(op), s_first_(s_first), row_vector_(row_vector), outer_(outer), inner_(inner) {}
  void run(const KernelArgs& a) const override {
    const float* X = a.in[s_first_ ? 1 : 0].as<const float>();
    const float* S = a.in[s_first_ ? 0 : 1].as<const float>();
    float* Y = a.out[0].as<float>();
    with_op(op_, [&](auto f) { apply(X, S, Y, f); });
  }
  std::string name() const override { return row_vector_ ? "elementwise:row-vector" : "elementwise:per-row"; }
  int in_place_input() const override { return s_first_ ? 1 : 0; }

 private:
  template <class F>
  void apply(const float* X, const float* S, float* Y, F f) const {
    const bool swap = s_first_;
    const int64_t inner = inner_;
#pragma omp parallel for schedule(static) if (outer_ * inner_ >= 65536)
    for (int64_t r = 0; r < outer_; ++r) {
      const float* x = X + r * inner;
      float* y = Y + r * inner;
      if (row_vector_) {
        if (swap) {
          for (int64_t i = 0; i < inner; ++i) y[i] = f(S[i], x[i]);
        } else {
          for (int64_t i = 0; i < inner; ++i) y[i] = f(x[i], S[i]);
        }
      } else {
        const float v = S[r];
        if (swap) {
          for (int64_t i = 0; i < inner; ++i) y[i] = f(v, x[i]);
        } else {
          for (int64_t i = 0; i < inner; ++i) y[i] = f(x[i], v);
        }
      }
    }
  }
  Bin op_;
  bool s_first_, row_vector_;
  int64_t outer_, inner_;
};

// Whether s (right-aligned against y, as ONNX broadcasts) is y's trailing dims from some axis
// on with 1s before (row_vector), or y's leading dims up to some axis with 1s after: then
// outer x inner is y's split there. Needs more than one row and a row longer than one.
bool row_broadcast(const Shape& s, const Shape& y, bool& row_vector, int64_t& outer, int64_t& inner) {
  if (s.size() > y.size() || y.size() < 2) return false;
  Shape p(y.size() - s.size(), 1);
  p.insert(p.end(), s.begin(), s.end());
  for (size_t k = 1; k < y.size(); ++k) {
    bool suffix = true, prefix = true;
    for (size_t d = 0; d < y.size(); ++d) {
      suffix = suffix && (d < k ? p[d] == 1 : p[d] == y[d]);
      prefix = prefix && (d < k ? p[d] == y[d] : p[d] == 1);
    }
    if (!suffix && !prefix) continue;
    outer = 1, inner = 1;
    for (size_t d = 0; d < y.size(); ++d) (d < k ? outer : inner) *= y[d];
    row_vector = suffix;
    return outer > 1 && inner > 1;
  }
  return false;
}

// A unary op, element by element, or (Vec) a vector at a time (ops/common/vmath.h) with the
// tail through a padded vector.
template <class F, bool Vec>
class Unary final : public Kernel {
 public:
  Unary(const char* name, F f) : name_(name), f_(f) {}
  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    parallel_chunks(a.out[0].numel(), [&](int64_t lo, int64_t hi) {
      int64_t i = lo;
      if constexpr (Vec) {
        using simd::vf;
        constexpr int64_t L = simd::kLanes;
        for (; i + L <= hi; i += L) *reinterpret_cast<vf*>(Y + i) = f_(*reinterpret_cast<const vf*>(X + i));
        if (i < hi) {
          vf t{};
          __builtin_memcpy(&t, X + i, static_cast<size_t>(hi - i) * sizeof(float));
          t = f_(t);
          __builtin_memcpy(Y + i, &t, static_cast<size_t>(hi - i) * sizeof(float));
        }
      } else {
        for (; i < hi; ++i) Y[i] = f_(X[i]);
      }
    });
  }
  std::string name() const override { return std::string("elementwise:") + name_; }
  int in_place_input() const override { return 0; }

 private:
  const char* name_;
  F f_;
};

template <class F>
std::unique_ptr<Kernel> vec_unary(const char* name, F f) {
  return std::make_unique<Unary<F, true>>(name, f);
}

template <class F>
std::unique_ptr<Kernel> unary(const char* name, F f) {
  return std::make_unique<Unary<F, false>>(name, f);
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// ReduceMean of a float tensor over a suffix of its axes (the last: LayerNorm's mean over the
// channels of channel-last data), on NCHW-ordered data: the mean of each contiguous row, summed
// in double in four interleaved partial sums (a fixed order: the same on every run).
class RowMean final : public Kernel {
 public:
  RowMean(int64_t rows, int64_t len) : rows_(rows), len_(len) {}
  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t len = len_;
#pragma omp parallel for schedule(static) if (rows_ * len_ >= 65536)
    for (int64_t r = 0; r < rows_; ++r) {
      const float* x = X + r * len;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = 0;
      for (; i + 4 <= len; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
      }
      for (; i < len; ++i) s0 += x[i];
      Y[r] = static_cast<float>(((s0 + s1) + (s2 + s3)) / static_cast<double>(len));
    }
  }
  std::string name() const override { return "reduce-mean:rows"; }

 private:
  int64_t rows_, len_;
};

// Softmax of float data over `len` entries `inner` floats apart (the reference's blocks):
// max, e^(x - max) on the vector exp (0 below ln FLT_MIN, as for a masked -inf), its sum, a division,
// as the reference does them.
// Along the last axis (inner 1) each row is vectors; over channels of NCHW data (inner = H W)
// the vectors run along the pixels. The reference called libm's exp per value (a probe: a
// softmax over 21 channels of a 256 x 256 map took 1.6x ONNX Runtime's time).
class FastSoftmax final : public Kernel {
 public:
  FastSoftmax(int64_t outer, int64_t len, int64_t inner) : outer_(outer), len_(len), inner_(inner) {}
  void run(const KernelArgs& a) const override {
    using simd::vf;
    constexpr int64_t L = simd::kLanes;
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t len = len_, inner = inner_;
    const bool work = outer_ * len_ * inner_ >= 65536;
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (work)
      for (int64_t o = 0; o < outer_; ++o) {
        const float* x = X + o * len;
        float* y = Y + o * len;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t k = 0; k < len; ++k) mx = std::max(mx, x[k]);  // (a NaN passed over, as the reference)
        const vf m = simd::splat(mx);
        vf acc{};
        int64_t k = 0;
        for (; k + L <= len; k += L) {
          const vf e = simd::exp_op(*reinterpret_cast<const vf*>(x + k) - m);
          *reinterpret_cast<vf*>(y + k) = e;
          acc += e;
        }
        float sum = 0;
        for (int64_t l = 0; l < L; ++l) sum += acc[l];
        for (; k < len; ++k) sum += (y[k] = simd::exp_op(simd::splat(x[k] - mx))[0]);
        for (k = 0; k < len; ++k) y[k] /= sum;
      }
      return;
    }
    // Over a strided axis: blocks of L pixels (the last one partial), each a row of vectors.
    const int64_t blocks = (inner + L - 1) / L;
#pragma omp parallel for collapse(2) schedule(static) if (work)
    for (int64_t o = 0; o < outer_; ++o)
      for (int64_t jb = 0; jb < blocks; ++jb) {
        const int64_t j0 = jb * L, n = std::min(L, inner - j0);
        const float* x = X + o * len * inner + j0;
        float* y = Y + o * len * inner + j0;
        auto load = [&](const float* p) {
          vf v{};
          if (n == L) return *reinterpret_cast<const vf*>(p);
          for (int64_t l = 0; l < n; ++l) v[l] = p[l];
          return v;
        };
        auto store = [&](float* p, vf v) {
          if (n == L) {
            *reinterpret_cast<vf*>(p) = v;
            return;
          }
          for (int64_t l = 0; l < n; ++l) p[l] = v[l];
        };
        vf mx = simd::splat(-std::numeric_limits<float>::infinity());
        for (int64_t k = 0; k < len; ++k) {
          const vf v = load(x + k * inner);
          mx = v > mx ? v : mx;  // (NaN passed over)
        }
        vf sum{};
        for (int64_t k = 0; k < len; ++k) {
          const vf e = simd::exp_op(load(x + k * inner) - mx);
          store(y + k * inner, e);
          sum += e;
        }
        for (int64_t k = 0; k < len; ++k) store(y + k * inner, load(y + k * inner) / sum);
      }
  }
  std::string name() const override { return inner_ == 1 ? "softmax:rows" : "softmax:strided"; }
  int in_place_input() const override { return 0; }

 private:
  int64_t outer_, len_, inner_;
};

}  // namespace

std::unique_ptr<Kernel> make_fast_softmax(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Softmax || n.layout != graph::Layout::NCHW || n.inputs.empty() ||
      g.value(n.inputs[0]).dtype != DType::Float32)
    return nullptr;
  const SoftmaxBlocks b = softmax_blocks(n.p<graph::SoftmaxParams>(), g.value(n.inputs[0]).shape);
  if (b.outer * b.len * b.inner == 0) return nullptr;
  return std::make_unique<FastSoftmax>(b.outer, b.len, b.inner);
}

std::unique_ptr<Kernel> make_fast_reduce_mean(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::NCHW || n.inputs.empty() || n.outputs.size() != 1) return nullptr;
  const graph::Value& x = g.value(n.inputs[0]);
  if (x.dtype != DType::Float32 || x.shape.empty()) return nullptr;
  if (n.op == graph::OpType::GlobalAveragePool)  // on NCHW: the mean of each H x W plane
    return x.shape.size() == 4 ? std::make_unique<RowMean>(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3]) : nullptr;
  const auto& rp = n.p<graph::ReduceParams>();  // axes sorted and unique (shape inference)
  if (rp.axes.empty()) return nullptr;
  const auto rank = static_cast<int64_t>(x.shape.size());
  for (size_t i = 0; i < rp.axes.size(); ++i)
    if (rp.axes[i] != rank - static_cast<int64_t>(rp.axes.size()) + static_cast<int64_t>(i)) return nullptr;  // not a suffix
  int64_t rows = 1, len = 1;
  for (int64_t d = 0; d < rank; ++d) (d < rank - static_cast<int64_t>(rp.axes.size()) ? rows : len) *= x.shape[d];
  if (len <= 0 || rows <= 0) return nullptr;
  return std::make_unique<RowMean>(rows, len);
}

std::unique_ptr<Kernel> make_fast_elementwise(const graph::Graph& g, const graph::Node& n) {
  using graph::OpType;
  for (graph::ValueId v : n.inputs)
    if (v == graph::kNoValue || g.value(v).dtype != DType::Float32) return nullptr;
  if (n.outputs.size() != 1 || g.value(n.outputs[0]).dtype != DType::Float32) return nullptr;
  const Shape& y = g.value(n.outputs[0]).shape;
  switch (n.op) {
    case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::PRelu: {
      if (n.inputs.size() != 2) return nullptr;
      const Shape& a = g.value(n.inputs[0]).shape;
      const Shape& b = g.value(n.inputs[1]).shape;
      const bool sa = numel_of(a) == 1 && a.size() <= y.size(), sb = numel_of(b) == 1 && b.size() <= y.size();
      if (n.op == OpType::PRelu && a != y) return nullptr;  // PRelu(x, slope): the slopes broadcast onto x only
      const Bin op = n.op == OpType::Add   ? Bin::Add
                     : n.op == OpType::Sub ? Bin::Sub
                     : n.op == OpType::Mul ? Bin::Mul
                     : n.op == OpType::Div ? Bin::Div
                                           : Bin::PRelu;
      bool per_sample = false;
      const bool nhwc = n.layout == graph::Layout::NHWC;
      if (!sa && !sb && a == y && per_channel_operand(b, y, per_sample))
        return std::make_unique<ChannelBroadcast>(op, false, per_sample, nhwc);
      if (!sa && !sb && b == y && per_channel_operand(a, y, per_sample))
        return std::make_unique<ChannelBroadcast>(op, true, per_sample, nhwc);
      int64_t outer = 0, inner = 0;
      bool row_vector = false;
      if (!nhwc && !sa && !sb && a == y && row_broadcast(b, y, row_vector, outer, inner))
        return std::make_unique<RowBroadcast>(op, false, row_vector, outer, inner);
      if (!nhwc && !sa && !sb && b == y && row_broadcast(a, y, row_vector, outer, inner))
        return std::make_unique<RowBroadcast>(op, true, row_vector, outer, inner);
      if (!((a == y || sa) && (b == y || sb)) || (sa && sb)) return nullptr;
      return std::make_unique<Binary>(op, b != y, a != y);  // the other side is a scalar
    }
    case OpType::Pow: {  // x ** 2 (LayerNorm's variance written out): x * x, as the reference's pow gives it
      const graph::Value& e = g.value(n.inputs[1]);
      if (g.value(n.inputs[0]).shape != y || !e.is_constant() || e.constant.numel() != 1 || e.constant.data<float>()[0] != 2.f)
        return nullptr;
      return unary("square", [](float x) { return x * x; });
    }
    case OpType::Relu:
      return unary("relu", [](float x) { return x < 0.f ? 0.f : x; });  // NaN stays NaN
    case OpType::Sigmoid:
      return vec_unary("sigmoid", [](simd::vf x) { return simd::sigmoid(x); });
    case OpType::Erf:
      return vec_unary("erf", [](simd::vf x) { return simd::erf(x); });
    case OpType::Tanh:  // (15.7 ms on libm for a 64 x 128 x 128 map, 0.3 in ONNX Runtime; a probe)
      return vec_unary("tanh", [](simd::vf x) { return simd::tanh(x); });
    case OpType::Exp:
      return vec_unary("exp", [](simd::vf x) { return simd::exp_op(x); });
    case OpType::Softplus:  // (Mish is x * tanh(softplus(x)): 11 ms for 64 x 128 x 128 on libm)
      return vec_unary("softplus", [](simd::vf x) { return simd::softplus(x); });
    case OpType::HardSwish:
      return unary("hardswish", [](float x) { return x * std::max(0.f, std::min(1.f, x / 6.f + 0.5f)); });
    case OpType::LeakyRelu: {
      const float alpha = n.p<graph::AlphaBetaParams>().alpha;
      return unary("leakyrelu", [alpha](float x) { return x >= 0.f ? x : alpha * x; });
    }
    case OpType::HardSigmoid: {
      const float alpha = n.p<graph::AlphaBetaParams>().alpha, beta = n.p<graph::AlphaBetaParams>().beta;
      return unary("hardsigmoid", [alpha, beta](float x) { const float v = alpha * x + beta; return v < 0.f ? 0.f : v > 1.f ? 1.f : v; });
    }
    default:
      return nullptr;
  }
}

}  // namespace sluice::ops
