// ReduceMean/Sum/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, ArgMax/ArgMin, Softmax and
// LogSoftmax.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/util.h"

namespace sluice::ops {

namespace {

// Axes to reduce: from input 1 (ReduceSum at opset >= 13) or the attribute; sorted, unique.
std::vector<int64_t> reduce_axes(InferContext& ctx, const graph::ReduceParams& p, int64_t rank, bool& noop) {
  std::vector<int64_t> axes = p.axes;
  bool given = p.has_axes;
  if (ctx.has_input(1)) {
    axes = ctx.require_ints(1, "axes");
    given = true;
  }
  noop = false;
  if (!given || axes.empty()) {
    if (p.noop_with_empty_axes) {
      noop = true;
      return {};
    }
    axes.resize(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) axes[static_cast<size_t>(i)] = i;
  }
  for (auto& a : axes) a = normalize_axis(ctx, a, rank);
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  return axes;
}

void infer_reduce(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ReduceParams>();
  const auto& x = ctx.in(0);
  if (x.dtype == DType::Bool) ctx.fail("bool input is not supported");
  bool noop = false;
  auto axes = reduce_axes(ctx, p, static_cast<int64_t>(x.shape.size()), noop);
  p.axes = axes;  // resolved once; the kernel reads these
  p.has_axes = true;
  if (noop) {
    p.noop_with_empty_axes = true;
    ctx.set_output(0, x.dtype, x.shape);
    return;
  }
  p.noop_with_empty_axes = false;
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    bool reduced = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i));
    const graph::OpType op = ctx.node().op;
    if (reduced && x.shape[i] == 0 &&
        (op == graph::OpType::ReduceMean || op == graph::OpType::ReduceMax || op == graph::OpType::ReduceMin))
      ctx.fail("cannot reduce over an empty dimension");
    if (!reduced) out.push_back(x.shape[i]);
    else if (p.keepdims) out.push_back(1);
  }
  ctx.set_output(0, x.dtype, out);
}

enum class Reduction { Mean, Sum, Max, Min, Prod, L1, L2, SumSquare, LogSum, LogSumExp };

// ReduceLogSumExp as max + log(sum(e^(x - max))) in double: no overflow for large x, and
// integer inputs are not truncated before the sum; for integers the log part is truncated on
// its own and added to the max, as ONNX Runtime computes it.
// so: the output's strides over the input's dims (0 on reduced dims), as reduce() has them.
void log_sum_exp(const TensorView& x, const TensorView& y, const std::vector<int64_t>& so) {
  const size_t rank = x.shape.size();
  const int64_t outn = y.numel();
  std::vector<double> mx(static_cast<size_t>(outn), -std::numeric_limits<double>::infinity()), sum(static_cast<size_t>(outn), 0);
  dispatch_numeric(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* X = x.as<const T>();
      auto each = [&](auto&& f) {
        if (rank == 0) f(0, 0);
        else for_each_broadcast(x.shape, strides_of(x.shape), so, [&](int64_t, int64_t i, int64_t o) { f(i, o); });
      };
      each([&](int64_t i, int64_t o) { mx[static_cast<size_t>(o)] = std::max(mx[static_cast<size_t>(o)], static_cast<double>(X[i])); });
      each([&](int64_t i, int64_t o) {
        const double m = mx[static_cast<size_t>(o)];
        sum[static_cast<size_t>(o)] += std::isinf(m) ? std::exp(static_cast<double>(X[i])) : std::exp(static_cast<double>(X[i]) - m);
      });
      T* Y = y.as<T>();
      for (int64_t o = 0; o < outn; ++o) {
        const double m = mx[static_cast<size_t>(o)], s = sum[static_cast<size_t>(o)];
        if constexpr (std::is_integral_v<T>)  // max + (T) log(sum), as ONNX Runtime rounds it
          Y[o] = static_cast<T>(static_cast<T>(m) + static_cast<T>(std::log(s)));
        else
          Y[o] = static_cast<T>(std::isinf(m) ? std::log(s) : m + std::log(s));
      }
    }
  });
}

void reduce(const graph::Node& node, const TensorView& x, const TensorView& y, Reduction r) {
  const auto& p = node.p<graph::ReduceParams>();
  if (p.noop_with_empty_axes) {  // no axes and noop_with_empty_axes: the input as it is (no |x|, x^2 or log)
    std::copy_n(x.as<const std::byte>(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype), y.as<std::byte>());
    return;
  }
  const size_t rank = x.shape.size();
  std::vector<bool> reduced(rank, false);
  for (int64_t a : p.axes) reduced[static_cast<size_t>(a)] = true;
  // Output strides over the input's dims (0 on reduced dims).
  Shape kept(rank);
  for (size_t i = 0; i < rank; ++i) kept[i] = reduced[i] ? 1 : x.shape[i];
  auto so = broadcast_strides(kept, x.shape);
  if (r == Reduction::LogSumExp) {
    log_sum_exp(x, y, so);
    return;
  }
  int64_t count = 1;
  for (size_t i = 0; i < rank; ++i)
    if (reduced[i]) count *= x.shape[i];
  dispatch_numeric(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
      const int64_t outn = y.numel();
      std::vector<Acc> acc(static_cast<size_t>(outn));
      // Max / Min start from -inf / +inf for floats (all -inf reduces to -inf), and a NaN wins.
      constexpr bool inf = std::numeric_limits<T>::has_infinity;
      const Acc init = r == Reduction::Max   ? static_cast<Acc>(inf ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest())
                       : r == Reduction::Min ? static_cast<Acc>(inf ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max())
                       : r == Reduction::Prod ? Acc{1}
                                             : Acc{0};
      std::fill(acc.begin(), acc.end(), init);
      const T* X = x.as<const T>();
      auto combine = [&](int64_t i, int64_t o) {
        Acc v = static_cast<Acc>(X[i]);
        Acc& a = acc[static_cast<size_t>(o)];
        if constexpr (std::is_floating_point_v<Acc>) {
          if (v != v) {  // NaN
            a = v;
            return;
          }
          if (a != a) return;
        }
        if (r == Reduction::Max) a = std::max(a, v);
        else if (r == Reduction::Min) a = std::min(a, v);
        else if (r == Reduction::Prod) a *= v;
        else if (r == Reduction::L1) a += v < 0 ? -v : v;
        else if (r == Reduction::L2 || r == Reduction::SumSquare) a += v * v;
        else if (r == Reduction::LogSumExp) a += static_cast<Acc>(std::exp(static_cast<double>(v)));
        else a += v;
      };
      if (rank == 0) combine(0, 0);
      else for_each_broadcast(x.shape, strides_of(x.shape), so, [&](int64_t, int64_t i, int64_t o) { combine(i, o); });
      T* Y = y.as<T>();
      for (int64_t o = 0; o < outn; ++o) {
        Acc v = acc[static_cast<size_t>(o)];
        if (r == Reduction::Mean) v = count ? v / static_cast<Acc>(count) : v;
        if (r == Reduction::L2) v = static_cast<Acc>(std::sqrt(static_cast<double>(v)));
        if (r == Reduction::LogSum || r == Reduction::LogSumExp) v = static_cast<Acc>(std::log(static_cast<double>(v)));
        Y[o] = static_cast<T>(v);
      }
    }
  });
}

}  // namespace

void infer_ReduceMean(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceSum(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceMax(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceMin(InferContext& ctx) { infer_reduce(ctx); }
void reference_ReduceMean(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::Mean);
}
void reference_ReduceSum(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::Sum);
}
void reference_ReduceMax(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::Max);
}
void reference_ReduceMin(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::Min);
}

void infer_ReduceProd(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceL1(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceL2(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceSumSquare(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceLogSum(InferContext& ctx) { infer_reduce(ctx); }
void infer_ReduceLogSumExp(InferContext& ctx) { infer_reduce(ctx); }
void reference_ReduceProd(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::Prod);
}
void reference_ReduceL1(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::L1);
}
void reference_ReduceL2(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::L2);
}
void reference_ReduceSumSquare(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::SumSquare);
}
void reference_ReduceLogSum(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::LogSum);
}
void reference_ReduceLogSumExp(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  reduce(n, in[0], out[0], Reduction::LogSumExp);
}

// ArgMax / ArgMin: int64 indices along one axis; the first extreme, or the last with
// select_last_index. NaNs compare false, as in ONNX Runtime: a NaN after the first entry is
// passed over (NumPy would return it).
void infer_arg(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ArgParams>();
  const auto& x = ctx.in(0);
  if (x.dtype == DType::Bool) ctx.fail("bool input is not supported");
  const auto rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) ctx.fail("input must have rank >= 1");
  p.axis = normalize_axis(ctx, p.axis, rank);
  if (x.shape[static_cast<size_t>(p.axis)] == 0) ctx.fail("cannot take the index of an extreme over an empty axis");
  Shape out = x.shape;
  if (p.keepdims) out[static_cast<size_t>(p.axis)] = 1;
  else out.erase(out.begin() + p.axis);
  ctx.set_output(0, DType::Int64, out);
}
template <bool kMax>
void arg(const graph::Node& node, const TensorView& x, const TensorView& y) {
  const auto& p = node.p<graph::ArgParams>();
  int64_t outer = 1, len = x.shape[static_cast<size_t>(p.axis)], inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(x.shape.size()); ++i)
    if (i < p.axis) outer *= x.shape[static_cast<size_t>(i)];
    else if (i > p.axis) inner *= x.shape[static_cast<size_t>(i)];
  dispatch_numeric(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* X = x.as<const T>();
      int64_t* Y = y.as<int64_t>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          int64_t best = 0;
          T bv = X[o * len * inner + j];
          for (int64_t k = 1; k < len; ++k) {
            const T v = X[(o * len + k) * inner + j];
            bool better = kMax ? v > bv : v < bv;
            if (p.select_last_index) better = better || v == bv;
            if (better) best = k, bv = v;
          }
          Y[o * inner + j] = best;
        }
    }
  });
}
void infer_ArgMax(InferContext& ctx) { infer_arg(ctx); }
void infer_ArgMin(InferContext& ctx) { infer_arg(ctx); }
void reference_ArgMax(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  arg<true>(n, in[0], out[0]);
}
void reference_ArgMin(const graph::Node& n, std::span<const TensorView> in, std::span<TensorView> out) {
  arg<false>(n, in[0], out[0]);
}

// CumSum(x, axis): running sums along one axis; exclusive starts from 0, reverse runs from the end.
void infer_CumSum(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (x.dtype == DType::Bool || x.dtype == DType::UInt8 || x.dtype == DType::Int8)
    ctx.fail(std::string("dtype ") + dtype_name(x.dtype) + " is not supported (float32/64, int32/64)");
  const auto axis = ctx.require_ints(1, "axis");
  if (axis.size() != 1) ctx.fail("axis must hold one value");
  if (x.shape.empty()) ctx.fail("input must have rank >= 1");
  normalize_axis(ctx, axis[0], static_cast<int64_t>(x.shape.size()));
  ctx.set_output(0, x.dtype, x.shape);
}
void reference_CumSum(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::CumSumParams>();
  const Shape& s = in[0].shape;
  int64_t axis = to_int64_vector(in[1])[0];
  if (axis < 0) axis += static_cast<int64_t>(s.size());
  int64_t outer = 1, len = s[static_cast<size_t>(axis)], inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i)
    if (i < axis) outer *= s[static_cast<size_t>(i)];
    else if (i > axis) inner *= s[static_cast<size_t>(i)];
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* X = in[0].as<const T>();
      T* Y = out[0].as<T>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          T acc = 0;
          for (int64_t t = 0; t < len; ++t) {
            const int64_t k = p.reverse ? len - 1 - t : t, at = (o * len + k) * inner + j;
            const T v = X[at];
            if (p.exclusive) {
              Y[at] = acc;
              acc = static_cast<T>(acc + v);
            } else {
              acc = static_cast<T>(acc + v);
              Y[at] = acc;
            }
          }
        }
    }
  });
}

void infer_Softmax(InferContext& ctx) {
  auto& p = ctx.node().p<graph::SoftmaxParams>();
  const auto& x = ctx.in(0);
  if (x.dtype != DType::Float32 && x.dtype != DType::Float64) ctx.fail("input must be float32 or float64");
  p.axis = normalize_axis(ctx, p.axis, static_cast<int64_t>(x.shape.size()));
  ctx.set_output(0, x.dtype, x.shape);
}

void infer_LogSoftmax(InferContext& ctx) { infer_Softmax(ctx); }
void infer_Hardmax(InferContext& ctx) { infer_Softmax(ctx); }

namespace {
// kLog: LogSoftmax; kHard: Hardmax (1 at the first largest entry, 0 elsewhere).
template <bool kLog, bool kHard = false>
void softmax(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto [outer, len, inner] = softmax_blocks(node.p<graph::SoftmaxParams>(), in[0].shape);
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* X = in[0].as<const T>();
      T* Y = out[0].as<T>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          auto at = [&](int64_t k) { return (o * len + k) * inner + j; };
          T mx = -std::numeric_limits<T>::infinity();
          for (int64_t k = 0; k < len; ++k) mx = std::max(mx, X[at(k)]);
          T sum = 0;
          if constexpr (kHard) {
            // The maximum as ONNX Runtime scans for it, from the first entry with <: a NaN first
            // stays the maximum (and no entry equals it: all 0), a NaN later is passed over.
            T hm = X[at(0)];
            for (int64_t k = 1; k < len; ++k)
              if (hm < X[at(k)]) hm = X[at(k)];
            int64_t first = -1;
            for (int64_t k = 0; k < len; ++k)
              if (X[at(k)] == hm) {
                first = k;
                break;
              }
            for (int64_t k = 0; k < len; ++k) Y[at(k)] = k == first ? T{1} : T{0};
          } else if constexpr (kLog) {  // x - max - log(sum e^(x - max)): no overflow, no log(0)
            for (int64_t k = 0; k < len; ++k) sum += std::exp(X[at(k)] - mx);
            const T lse = std::log(sum);
            for (int64_t k = 0; k < len; ++k) Y[at(k)] = X[at(k)] - mx - lse;
          } else {
            for (int64_t k = 0; k < len; ++k) sum += (Y[at(k)] = std::exp(X[at(k)] - mx));
            for (int64_t k = 0; k < len; ++k) Y[at(k)] /= sum;
          }
        }
    }
  });
}
}  // namespace

void reference_Softmax(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  softmax<false>(node, in, out);
}
void reference_LogSoftmax(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  softmax<true>(node, in, out);
}
void reference_Hardmax(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  softmax<false, true>(node, in, out);
}

}  // namespace sluice::ops
