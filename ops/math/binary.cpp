// Broadcasting binary ops (Add, Sub, Mul, Div, Equal, Greater[OrEqual], Less[OrEqual], And, Or,
// Xor), Not, variadic Max/Min,
// Where, Cast and CastLike.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/util.h"

namespace sluice::ops {

namespace {

bool is_arith(DType t) { return t != DType::Bool && t != DType::Undefined; }

// All inputs share one dtype; the output shape is their broadcast.
Shape infer_broadcast(InferContext& ctx, size_t first = 0) {
  const DType t = ctx.in(first).dtype;
  Shape out = ctx.in(first).shape;
  for (size_t i = first + 1; i < ctx.num_inputs(); ++i) {
    if (ctx.in(i).dtype != t)
      ctx.fail("inputs must share one dtype: input " + std::to_string(first) + " is " + dtype_name(t) + ", input " +
               std::to_string(i) + " is " + dtype_name(ctx.in(i).dtype));
    out = broadcast_shapes(ctx, out, ctx.in(i).shape);
  }
  checked_numel(ctx, out);
  return out;
}

template <class T, class R, class F>
void broadcast_apply(const TensorView& a, const TensorView& b, const TensorView& y, F&& f) {
  auto sa = broadcast_strides(a.shape, y.shape), sb = broadcast_strides(b.shape, y.shape);
  const T *A = a.as<const T>(), *B = b.as<const T>();
  R* Y = y.as<R>();
  if (a.shape == y.shape && b.shape == y.shape) {  // common case: no broadcasting
    for (int64_t i = 0; i < y.numel(); ++i) Y[i] = static_cast<R>(f(A[i], B[i]));
    return;
  }
  if (y.shape.empty()) {
    Y[0] = static_cast<R>(f(A[0], B[0]));
    return;
  }
  for_each_broadcast(y.shape, sa, sb, [&](int64_t o, int64_t ia, int64_t ib) { Y[o] = static_cast<R>(f(A[ia], B[ib])); });
}

template <class F>
void arith(const TensorView& a, const TensorView& b, const TensorView& y, F&& f) {
  dispatch_numeric(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) broadcast_apply<T, T>(a, b, y, f);
  });
}

template <class F>
void compare(const TensorView& a, const TensorView& b, const TensorView& y, F&& f) {
  dispatch_numeric(a.dtype, [&](auto tag) { broadcast_apply<decltype(tag), bool>(a, b, y, f); });
}

void infer_arith(InferContext& ctx) {
  if (ctx.num_inputs() != 2) ctx.fail("needs exactly two inputs");
  if (!is_arith(ctx.in(0).dtype)) ctx.fail(std::string("dtype ") + dtype_name(ctx.in(0).dtype) + " is not supported");
  ctx.set_output(0, ctx.in(0).dtype, infer_broadcast(ctx));
}

void infer_compare(InferContext& ctx) {
  if (ctx.num_inputs() != 2) ctx.fail("needs exactly two inputs");
  ctx.set_output(0, DType::Bool, infer_broadcast(ctx));
}

}  // namespace

void infer_Add(InferContext& ctx) { infer_arith(ctx); }
// PRelu: the slope broadcasts to X (one way: the output has X's shape).
void infer_PRelu(InferContext& ctx) {
  if (ctx.num_inputs() != 2) ctx.fail("needs exactly two inputs (X, slope)");
  const DType dt = ctx.in(0).dtype;
  if (dt != DType::Float32 && dt != DType::Float64) ctx.fail(std::string("dtype ") + dtype_name(dt) + " is not supported");
  if (ctx.in(1).dtype != dt) ctx.fail("slope must have X's dtype");
  const Shape out = infer_broadcast(ctx);
  if (out != ctx.in(0).shape)
    ctx.fail("slope " + shape_str(ctx.in(1).shape) + " does not broadcast to X " + shape_str(ctx.in(0).shape));
  ctx.set_output(0, dt, out);
}
void reference_PRelu(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  arith(in[0], in[1], out[0], [](auto x, auto s) { return x < decltype(x){0} ? x * s : x; });
}
void infer_Sub(InferContext& ctx) { infer_arith(ctx); }
void infer_Mul(InferContext& ctx) { infer_arith(ctx); }
void infer_Div(InferContext& ctx) { infer_arith(ctx); }
void infer_Equal(InferContext& ctx) { infer_compare(ctx); }
void infer_Greater(InferContext& ctx) { infer_compare(ctx); }
void infer_Less(InferContext& ctx) { infer_compare(ctx); }
void infer_GreaterOrEqual(InferContext& ctx) { infer_compare(ctx); }
void infer_LessOrEqual(InferContext& ctx) { infer_compare(ctx); }

void reference_Add(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  arith(in[0], in[1], out[0], [](auto a, auto b) { return a + b; });
}
void reference_Sub(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  arith(in[0], in[1], out[0], [](auto a, auto b) { return a - b; });
}
void reference_Mul(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  arith(in[0], in[1], out[0], [](auto a, auto b) { return a * b; });
}
void reference_Div(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  arith(in[0], in[1], out[0], [&](auto a, auto b) {
    using T = decltype(a);
    if constexpr (std::is_integral_v<T>) {
      if (b == 0) throw Error("node '" + node.name + "' (Div): integer division by zero");
      if constexpr (std::is_signed_v<T>)
        if (b == -1 && a == std::numeric_limits<T>::min())  // (the CPU traps on it: SIGFPE)
          throw Error("node '" + node.name + "' (Div): integer overflow, " + std::to_string(a) +
                      " / -1 does not fit in its type");
    }
    return static_cast<T>(a / b);  // integers truncate toward zero, as C and ONNX Runtime do
  });
}
void reference_Equal(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  compare(in[0], in[1], out[0], [](auto a, auto b) { return a == b; });
}
void reference_Greater(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  compare(in[0], in[1], out[0], [](auto a, auto b) { return a > b; });
}
void reference_Less(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  compare(in[0], in[1], out[0], [](auto a, auto b) { return a < b; });
}
void reference_GreaterOrEqual(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  compare(in[0], in[1], out[0], [](auto a, auto b) { return a >= b; });
}
void reference_LessOrEqual(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  compare(in[0], in[1], out[0], [](auto a, auto b) { return a <= b; });
}

// Pow: a float or int32/int64 base raised to a float or integer exponent (ConvNeXt's
// decomposed LayerNorm squares with Pow(x, 2)); the output has the base's dtype.
void infer_Pow(InferContext& ctx) {
  if (ctx.num_inputs() != 2) ctx.fail("needs exactly two inputs");
  const DType b = ctx.in(0).dtype, e = ctx.in(1).dtype;
  if (b != DType::Float32 && b != DType::Float64 && b != DType::Int64 && b != DType::Int32)
    ctx.fail(std::string("base has dtype ") + dtype_name(b) + ", expected a float or int32/int64");
  if (e != DType::Float32 && e != DType::Float64 && e != DType::Int64 && e != DType::Int32)
    ctx.fail(std::string("exponent has dtype ") + dtype_name(e) + ", expected a float or int32/int64");
  const Shape out = broadcast_shapes(ctx, ctx.in(0).shape, ctx.in(1).shape);
  checked_numel(ctx, out);
  ctx.set_output(0, b, out);
}
void reference_Pow(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  dispatch_numeric(in[0].dtype, [&](auto btag) {
    using B = decltype(btag);
    if constexpr (std::is_floating_point_v<B> || std::is_same_v<B, int64_t> || std::is_same_v<B, int32_t>) {
      dispatch_numeric(in[1].dtype, [&](auto etag) {
        using E = decltype(etag);
        if constexpr (!std::is_same_v<E, bool>) {
          auto sa = broadcast_strides(in[0].shape, out[0].shape), sb = broadcast_strides(in[1].shape, out[0].shape);
          const B* A = in[0].as<const B>();
          const E* X = in[1].as<const E>();
          B* Y = out[0].as<B>();
          auto f = [](B a, E x) -> B {
            if (x == E{2}) return static_cast<B>(a * a);  // the common case, exact
            if constexpr (std::is_floating_point_v<B>) return static_cast<B>(std::pow(a, static_cast<B>(x)));
            else return static_cast<B>(std::pow(static_cast<double>(a), static_cast<double>(x)));
          };
          if (out[0].shape.empty()) Y[0] = f(A[0], X[0]);
          else for_each_broadcast(out[0].shape, sa, sb, [&](int64_t o, int64_t ia, int64_t ib) { Y[o] = f(A[ia], X[ib]); });
        }
      });
    }
  });
}

// Logical ops on bool tensors (masks, e.g. a gate's selection combined with another).
namespace {
void infer_logical(InferContext& ctx) {
  for (size_t i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.in(i).dtype != DType::Bool)
      ctx.fail("input " + std::to_string(i) + " has dtype " + dtype_name(ctx.in(i).dtype) + ", expected bool");
  ctx.set_output(0, DType::Bool, ctx.num_inputs() == 1 ? ctx.in(0).shape : infer_broadcast(ctx));
}
template <class F>
void logical(std::span<const TensorView> in, const TensorView& y, F&& f) {
  broadcast_apply<bool, bool>(in[0], in[1], y, f);
}
}  // namespace

void infer_And(InferContext& ctx) {
  if (ctx.num_inputs() != 2) ctx.fail("needs exactly two inputs");
  infer_logical(ctx);
}
void infer_Or(InferContext& ctx) { infer_And(ctx); }
void infer_Xor(InferContext& ctx) { infer_And(ctx); }
void infer_Not(InferContext& ctx) {
  if (ctx.num_inputs() != 1) ctx.fail("needs exactly one input");
  infer_logical(ctx);
}
void reference_And(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  logical(in, out[0], [](bool a, bool b) { return a && b; });
}
void reference_Or(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  logical(in, out[0], [](bool a, bool b) { return a || b; });
}
void reference_Xor(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  logical(in, out[0], [](bool a, bool b) { return a != b; });
}
void reference_Not(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  const bool* x = in[0].as<const bool>();
  bool* y = out[0].as<bool>();
  for (int64_t i = 0; i < out[0].numel(); ++i) y[i] = !x[i];
}

// Variadic ops: y = f(...f(f(in0, in1), in2)...), every input broadcast to y.
namespace {
template <class T, class F>
void fold_inputs(std::span<const TensorView> in, const TensorView& y, F&& f) {
  T* Y = y.as<T>();
  auto s0 = broadcast_strides(in[0].shape, y.shape);
  const T* A = in[0].as<const T>();
  if (y.shape.empty()) Y[0] = A[0];
  else for_each_broadcast(y.shape, s0, s0, [&](int64_t o, int64_t ia, int64_t) { Y[o] = A[ia]; });
  for (size_t i = 1; i < in.size(); ++i) {
    TensorView acc{y.dtype, y.shape, Y};
    broadcast_apply<T, T>(acc, in[i], y, f);
  }
}
}  // namespace

// Max / Min: 1..N inputs broadcast together; NaN propagates as in ONNX Runtime.
namespace {
template <bool kMax>
void extremum(std::span<const TensorView> in, const TensorView& y) {
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>)
      fold_inputs<T>(in, y, [](T a, T b) {
        if constexpr (std::is_floating_point_v<T>)
          if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
        return kMax ? std::max(a, b) : std::min(a, b);
      });
  });
}
void infer_extremum(InferContext& ctx) {
  if (ctx.num_inputs() < 1) ctx.fail("needs at least one input");
  if (!is_arith(ctx.in(0).dtype)) ctx.fail(std::string("dtype ") + dtype_name(ctx.in(0).dtype) + " is not supported");
  ctx.set_output(0, ctx.in(0).dtype, infer_broadcast(ctx));
}
}  // namespace

void infer_Max(InferContext& ctx) { infer_extremum(ctx); }
void infer_Min(InferContext& ctx) { infer_extremum(ctx); }
void reference_Max(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { extremum<true>(in, out[0]); }
void reference_Min(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { extremum<false>(in, out[0]); }

// Sum / Mean: 1..N float inputs broadcast together, added in input order.
namespace {
void sum_inputs(std::span<const TensorView> in, const TensorView& y, bool mean) {
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      fold_inputs<T>(in, y, [](T a, T b) { return a + b; });
      T* Y = y.as<T>();
      if (mean)
        for (int64_t o = 0; o < y.numel(); ++o) Y[o] /= static_cast<T>(in.size());
    }
  });
}
void infer_sum(InferContext& ctx) {
  if (ctx.num_inputs() < 1) ctx.fail("needs at least one input");
  const DType t = ctx.in(0).dtype;
  if (t != DType::Float32 && t != DType::Float64) ctx.fail(std::string("dtype ") + dtype_name(t) + " is not supported (float32, float64)");
  for (size_t i = 1; i < ctx.num_inputs(); ++i)
    if (ctx.in(i).dtype != t) ctx.fail("input " + std::to_string(i) + " has dtype " + dtype_name(ctx.in(i).dtype) + ", input 0 " + dtype_name(t));
  ctx.set_output(0, t, infer_broadcast(ctx));
}
}  // namespace

void infer_Sum(InferContext& ctx) { infer_sum(ctx); }
void infer_Mean(InferContext& ctx) { infer_sum(ctx); }
void reference_Sum(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { sum_inputs(in, out[0], false); }
void reference_Mean(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { sum_inputs(in, out[0], true); }

// Mod: fmod = 1, C's fmod (floats must use it); fmod = 0, integers only, the remainder with the
// divisor's sign (Python's %). An integer zero divisor is an error, not a crash.
void infer_Mod(InferContext& ctx) {
  infer_arith(ctx);
  const DType t = ctx.in(0).dtype;
  if ((t == DType::Float32 || t == DType::Float64) && !ctx.node().p<graph::ModParams>().fmod)
    ctx.fail("float inputs need fmod = 1 (the spec's rule)");
}
void reference_Mod(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const bool fmod = node.p<graph::ModParams>().fmod;
  arith(in[0], in[1], out[0], [&](auto a, auto b) {
    using T = decltype(a);
    if constexpr (std::is_integral_v<T>) {
      if (b == 0) throw Error("node '" + node.name + "' (Mod): integer division by zero");
      if constexpr (std::is_signed_v<T>)
        if (b == -1) return T{0};  // every remainder by -1 is 0 (and INT_MIN % -1 traps)
      T r = static_cast<T>(a % b);
      if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
      return r;
    } else {
      return static_cast<T>(std::fmod(a, b));
    }
  });
}

void infer_Where(InferContext& ctx) {
  if (ctx.num_inputs() != 3) ctx.fail("needs three inputs (condition, X, Y)");
  ctx.expect_input(0, DType::Bool);
  if (ctx.in(1).dtype != ctx.in(2).dtype) ctx.fail("X and Y must share one dtype");
  Shape s = broadcast_shapes(ctx, broadcast_shapes(ctx, ctx.in(0).shape, ctx.in(1).shape), ctx.in(2).shape);
  checked_numel(ctx, s);
  ctx.set_output(0, ctx.in(1).dtype, s);
}

void reference_Where(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  const TensorView& y = out[0];
  const size_t es = dtype_size(y.dtype);
  auto sc = broadcast_strides(in[0].shape, y.shape), sx = broadcast_strides(in[1].shape, y.shape),
       sy = broadcast_strides(in[2].shape, y.shape);
  const bool* C = in[0].as<const bool>();
  const auto* X = in[1].as<const std::byte>();
  const auto* Yin = in[2].as<const std::byte>();
  auto* Y = y.as<std::byte>();
  // Walk condition+X together, and Y with a second walk: two passes keep the helper binary.
  if (y.shape.empty()) {
    std::copy_n(C[0] ? X : Yin, es, Y);
    return;
  }
  for_each_broadcast(y.shape, sc, sx, [&](int64_t o, int64_t ic, int64_t ix) {
    if (C[ic]) std::copy_n(X + ix * es, es, Y + o * es);
  });
  for_each_broadcast(y.shape, sc, sy, [&](int64_t o, int64_t ic, int64_t iy) {
    if (!C[ic]) std::copy_n(Yin + iy * es, es, Y + o * es);
  });
}

void infer_Cast(InferContext& ctx) { ctx.set_output(0, ctx.node().p<graph::CastParams>().to, ctx.in(0).shape); }
// CastLike (opset 15): Cast to input 1's dtype.
void infer_CastLike(InferContext& ctx) { ctx.set_output(0, ctx.in(1).dtype, ctx.in(0).shape); }

void reference_Cast(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const int64_t n = in[0].numel();
  dispatch_numeric(in[0].dtype, [&](auto src_tag) {
    using S = decltype(src_tag);
    dispatch_numeric(out[0].dtype, [&](auto dst_tag) {
      using D = decltype(dst_tag);
      const S* a = in[0].as<const S>();
      D* b = out[0].as<D>();
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<D, bool>)
          b[i] = a[i] != S{};
        else
          b[i] = static_cast<D>(a[i]);
      }
    });
  });
}

// The target dtype is the output's, set by inference for both.
void reference_CastLike(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  reference_Cast(node, in.first(1), out);
}

}  // namespace sluice::ops
