// Unary elementwise ops: Abs, Neg, Sign, Relu, Sigmoid, Tanh, the other trigonometric and
// hyperbolic functions, Softsign, Softplus, Elu, Celu, Selu, ThresholdedRelu, Sqrt, Exp, Log,
// Reciprocal, Floor, Ceil, Round, Erf, Gelu, LeakyRelu, HardSigmoid, HardSwish, Clip. Each kernel reads x[i] before writing y[i], so it may run in place.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/util.h"

namespace sluice::ops {

namespace {

bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }
bool is_signed_number(DType t) { return is_float(t) || t == DType::Int64 || t == DType::Int32 || t == DType::Int8; }

void infer_same(InferContext& ctx, bool float_only) {
  const auto& x = ctx.in(0);
  if (float_only ? !is_float(x.dtype) : !is_signed_number(x.dtype))
    ctx.fail(std::string("input has dtype ") + dtype_name(x.dtype) + ", expected " +
             (float_only ? "float32 or float64" : "a signed number type"));
  ctx.set_output(0, x.dtype, x.shape);
}

// Inference has checked the dtype; kFloatOnly keeps integer instantiations out.
template <bool kFloatOnly, class F>
void map_unary(const TensorView& x, const TensorView& y, F&& f) {
  dispatch_numeric(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool> && (!kFloatOnly || std::is_floating_point_v<T>)) {
      const T* a = x.as<const T>();
      T* b = y.as<T>();
      const int64_t n = x.numel();
      for (int64_t i = 0; i < n; ++i) b[i] = static_cast<T>(f(a[i]));
    }
  });
}

}  // namespace

#define SLUICE_UNARY(Op, float_only, expr)                                                            \
  void infer_##Op(InferContext& ctx) { infer_same(ctx, float_only); }                                \
  void reference_##Op(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) { \
    [[maybe_unused]] const graph::Node& n = node;                                                       \
    map_unary<float_only>(in[0], out[0], [&](auto x) { return expr; });                                           \
  }

SLUICE_UNARY(Abs, false, x < 0 ? -x : x)
SLUICE_UNARY(Neg, false, -x)
SLUICE_UNARY(Relu, false, x < 0 ? decltype(x){0} : x)  // NaN stays NaN
SLUICE_UNARY(Sigmoid, true, decltype(x){1} / (decltype(x){1} + std::exp(-x)))
SLUICE_UNARY(Tanh, true, std::tanh(x))
SLUICE_UNARY(Sin, true, std::sin(x))
SLUICE_UNARY(Cos, true, std::cos(x))
SLUICE_UNARY(Softsign, true, x / (decltype(x){1} + std::abs(x)))
// log(1 + e^x) without overflow for large x (e^x alone is inf past ~88).
SLUICE_UNARY(Softplus, true, x > decltype(x){0} ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)))
SLUICE_UNARY(Elu, true,
             x < decltype(x){0} ? static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) * std::expm1(x) : x)
SLUICE_UNARY(Sqrt, true, std::sqrt(x))
SLUICE_UNARY(Exp, true, std::exp(x))
SLUICE_UNARY(Log, true, std::log(x))
SLUICE_UNARY(Erf, true, std::erf(x))
// Gelu: 0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh" 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
SLUICE_UNARY(Gelu, true,
             n.p<graph::GeluParams>().tanh
                 ? static_cast<decltype(x)>(0.5) * x *
                       (1 + std::tanh(static_cast<decltype(x)>(0.7978845608028654) * (x + static_cast<decltype(x)>(0.044715) * x * x * x)))
                 : static_cast<decltype(x)>(0.5) * x * (1 + std::erf(x * static_cast<decltype(x)>(0.7071067811865476))))
SLUICE_UNARY(LeakyRelu, true, x >= 0 ? x : static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) * x)
SLUICE_UNARY(HardSigmoid, true,  // max first, then min: a NaN passes both
             std::min(std::max(static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) * x +
                                   static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().beta),
                               decltype(x){0}),
                      decltype(x){1}))
SLUICE_UNARY(Sign, false, x > 0 ? decltype(x){1} : x < 0 ? static_cast<decltype(x)>(-1) : x)  // 0 -> 0, NaN -> NaN
SLUICE_UNARY(Tan, true, std::tan(x))
SLUICE_UNARY(Asin, true, std::asin(x))
SLUICE_UNARY(Acos, true, std::acos(x))
SLUICE_UNARY(Atan, true, std::atan(x))
SLUICE_UNARY(Sinh, true, std::sinh(x))
SLUICE_UNARY(Cosh, true, std::cosh(x))
SLUICE_UNARY(Asinh, true, std::asinh(x))
SLUICE_UNARY(Acosh, true, std::acosh(x))
SLUICE_UNARY(Atanh, true, std::atanh(x))
SLUICE_UNARY(Reciprocal, true, decltype(x){1} / x)
SLUICE_UNARY(Floor, true, std::floor(x))
SLUICE_UNARY(Ceil, true, std::ceil(x))
SLUICE_UNARY(Round, true, std::nearbyint(x))  // halves to even (the default rounding mode), as the spec says
// Selu: gamma x for x > 0, gamma (alpha e^x - alpha) otherwise (alpha, gamma in AlphaBetaParams' alpha, beta).
SLUICE_UNARY(Selu, true,
             static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().beta) *
                 (x > decltype(x){0} ? x : static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) * std::expm1(x)))
// Celu: max(0, x) + min(0, alpha (e^(x / alpha) - 1)); a NaN stays NaN.
SLUICE_UNARY(Celu, true,
             x > decltype(x){0} ? x
                                : static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) *
                                      std::expm1(x / static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha)))
SLUICE_UNARY(ThresholdedRelu, true, x > static_cast<decltype(x)>(n.p<graph::AlphaBetaParams>().alpha) ? x : decltype(x){0})
SLUICE_UNARY(HardSwish, true, x * std::max(decltype(x){0}, std::min(decltype(x){1}, x / decltype(x){6} + decltype(x){0.5})))
#undef SLUICE_UNARY

// Clip: bounds from the attributes (opset < 11) or from optional scalar inputs 1, 2.
void infer_Clip(InferContext& ctx) {
  const auto& x = ctx.in(0);
  if (!is_signed_number(x.dtype) && x.dtype != DType::UInt8)
    ctx.fail(std::string("input has dtype ") + dtype_name(x.dtype) + ", expected a number type");
  for (size_t i = 1; i <= 2; ++i)
    if (ctx.has_input(i)) {
      if (ctx.in(i).dtype != x.dtype) ctx.fail("min/max must have the input's dtype");
      int64_t n = 1;
      for (int64_t d : ctx.in(i).shape) n *= d;
      if (n != 1) ctx.fail("min/max must be scalars, got shape " + shape_str(ctx.in(i).shape));
    }
  ctx.set_output(0, x.dtype, x.shape);
}

void reference_Clip(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ClipParams>();
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
      if constexpr (std::is_floating_point_v<T>) lo = static_cast<T>(p.min), hi = static_cast<T>(p.max);
      if (in.size() > 1 && in[1].data) lo = in[1].as<const T>()[0];
      if (in.size() > 2 && in[2].data) hi = in[2].as<const T>()[0];
      const T* a = in[0].as<const T>();
      T* b = out[0].as<T>();
      for (int64_t i = 0; i < in[0].numel(); ++i) b[i] = std::min(std::max(a[i], lo), hi);
    }
  });
}

// IsNaN / IsInf: a bool per element (IsInf: +inf and/or -inf, as detect_positive / detect_negative say).
namespace {
void infer_float_test(InferContext& ctx) {
  if (!is_float(ctx.in(0).dtype)) ctx.fail(std::string("input has dtype ") + dtype_name(ctx.in(0).dtype) + ", expected float32 or float64");
  ctx.set_output(0, DType::Bool, ctx.in(0).shape);
}
template <class F>
void float_test(const TensorView& x, const TensorView& y, F&& f) {
  dispatch_numeric(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* a = x.as<const T>();
      bool* b = y.as<bool>();
      for (int64_t i = 0; i < x.numel(); ++i) b[i] = f(a[i]);
    }
  });
}
}  // namespace

void infer_IsNaN(InferContext& ctx) { infer_float_test(ctx); }
void infer_IsInf(InferContext& ctx) { infer_float_test(ctx); }
void reference_IsNaN(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  float_test(in[0], out[0], [](auto v) { return v != v; });
}
void reference_IsInf(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::IsInfParams>();
  float_test(in[0], out[0], [&](auto v) { return std::isinf(v) && (v > 0 ? p.positive : p.negative); });
}

}  // namespace sluice::ops
