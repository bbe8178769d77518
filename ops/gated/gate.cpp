#include "ops/gated/gate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "ops/common/simd.h"

namespace sluice::ops::gate {

void predict(const Spec& spec, const float* s, float* g) {
  if (spec.form == graph::GateForm::All) {  // no predictor
    std::fill(g, g + spec.c_out, 1.f);
    return;
  }
  using simd::vf;
  constexpr int64_t L = simd::kLanes;
  const int64_t n = spec.c_in;
  // Vector partial sums in a fixed order (the same result on every run and thread count).
  // A plain float loop is a serial chain of dependent adds: 0.1-0.25 ms for a 512x512 gate,
  // with the second thread waiting.
#pragma omp parallel for schedule(static) if (spec.c_out * n >= (int64_t{1} << 17))
  for (int64_t o = 0; o < spec.c_out; ++o) {
    const float* w = spec.wg + o * n;
    vf a0 = {}, a1 = {};
    int64_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
      a0 += *reinterpret_cast<const vf*>(w + i) * *reinterpret_cast<const vf*>(s + i);
      a1 += *reinterpret_cast<const vf*>(w + i + L) * *reinterpret_cast<const vf*>(s + i + L);
    }
    for (; i + L <= n; i += L) a0 += *reinterpret_cast<const vf*>(w + i) * *reinterpret_cast<const vf*>(s + i);
    a0 += a1;
    float acc = 0.f;
    for (int64_t l = 0; l < L; ++l) acc += a0[l];
    for (; i < n; ++i) acc += w[i] * s[i];
    acc += spec.bg[o];
    g[o] = saliency(spec.saliency, acc);
  }
  if (spec.saliency.act == graph::Saliency::Act::Softmax) {  // as ONNX Runtime: exp(z - max), in float
    const float top = *std::max_element(g, g + spec.c_out);
    float sum = 0.f;
    for (int64_t o = 0; o < spec.c_out; ++o) sum += g[o] = std::exp(g[o] - top);
    for (int64_t o = 0; o < spec.c_out; ++o) g[o] /= sum;
  }
}

float saliency(const graph::Saliency& a, float x) {
  using Act = graph::Saliency::Act;
  switch (a.act) {
    case Act::Relu: return x < 0.f ? 0.f : x;
    case Act::Sigmoid: return 1.f / (1.f + std::exp(-x));
    case Act::LeakyRelu: return x >= 0.f ? x : a.alpha * x;
    case Act::Clip: {  // min(max(x, lo), hi), as ONNX's Clip: hi everywhere when lo > hi
      const float lo = x < a.alpha ? a.alpha : x;
      return lo > a.beta ? a.beta : lo;
    }
    case Act::HardSigmoid: {
      const float v = a.alpha * x + a.beta;
      return v < 0.f ? 0.f : v > 1.f ? 1.f : v;
    }
    case Act::Softplus: return x > 0.f ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    case Act::Elu: return x < 0.f ? a.alpha * std::expm1(x) : x;
    case Act::Tanh: return std::tanh(x);
    case Act::Abs: return std::fabs(x);
    case Act::HardSwish: {  // x * hardsigmoid(x) (ONNX's HardSwish: alpha 1/6, beta 0.5)
      const float h = a.alpha * x + a.beta;
      return x * (h < 0.f ? 0.f : h > 1.f ? 1.f : h);
    }
    case Act::Silu: return x * (1.f / (1.f + std::exp(-x)));  // (z * sigmoid(z), as the graph)
    case Act::Gelu: return (x * (std::erf(x / a.alpha) + 1.f)) * 0.5f;  // in the exported graph's order
    case Act::GeluTanh: {  // ONNX's Gelu, approximate="tanh"
      const float c = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * x * (1.f + std::tanh(c * (x + 0.044715f * x * x * x)));
    }
    case Act::Identity:
    case Act::Softmax: return x;  // (over the whole row: predict applies it)
  }
  return x;
}

void select(const Spec& spec, const float* g, float* pi) {
  const int64_t m = spec.c_out;
  if (m <= 0) return;
  std::vector<int64_t> idx(static_cast<size_t>(m));
  std::iota(idx.begin(), idx.end(), 0);
  // A NaN saliency ranks below every number (its channel is suppressed while numbers are left to
  // keep), so that the orders below are strict and total: nth_element's unguarded scans read out
  // of range on an order that NaN breaks.
  auto ahead = [&](int64_t a, int64_t b, bool larger_first) {
    const bool na = std::isnan(g[a]), nb = std::isnan(g[b]);
    if (na != nb) return larger_first ? nb : na;
    if (!na && g[a] != g[b]) return larger_first ? g[a] > g[b] : g[a] < g[b];
    return a < b;
  };
  switch (spec.form) {
    case graph::GateForm::All:
      std::fill(pi, pi + m, 1.f);
      break;
    case graph::GateForm::Winners: {
      const int64_t k = std::clamp<int64_t>(spec.k, 0, m);
      // The k first in (g descending, index ascending): the set nth_element puts before position
      // k, in O(C) (their order is never used).
      std::nth_element(idx.begin(), idx.begin() + k, idx.end(),
                       [&](int64_t a, int64_t b) { return ahead(a, b, true); });
      std::fill(pi, pi + m, 0.f);
      for (int64_t r = 0; r < k; ++r) pi[idx[static_cast<size_t>(r)]] = spec.unit ? 1.f : g[idx[static_cast<size_t>(r)]];
      break;
    }
    case graph::GateForm::Losers: {
      const int64_t drop = std::clamp<int64_t>(m - spec.k, 0, m);
      // TopK of -g (or the smallest of g): the smallest g, lower index first among equals.
      std::nth_element(idx.begin(), idx.begin() + drop, idx.end(),
                       [&](int64_t a, int64_t b) { return ahead(a, b, false); });
      if (spec.unit)
        std::fill(pi, pi + m, 1.f);
      else
        std::copy(g, g + m, pi);
      for (int64_t r = 0; r < drop; ++r) pi[idx[static_cast<size_t>(r)]] = 0.f;
      break;
    }
    case graph::GateForm::Threshold:
    case graph::GateForm::ThresholdInclusive: {
      const int64_t k = std::clamp<int64_t>(spec.k, 1, m);
      // The k-th largest number; NaN (no channel passes) when fewer than k are numbers.
      std::vector<float> v(g, g + m);
      const auto numbers = std::partition(v.begin(), v.end(), [](float x) { return !std::isnan(x); });
      float thr = std::numeric_limits<float>::quiet_NaN();
      if (numbers - v.begin() >= k) {
        std::nth_element(v.begin(), v.begin() + (k - 1), numbers, std::greater<float>());
        thr = v[static_cast<size_t>(k - 1)];
      }
      const bool incl = spec.form == graph::GateForm::ThresholdInclusive;
      for (int64_t c = 0; c < m; ++c) {
        const bool keep = spec.by_difference ? (incl ? g[c] - thr >= 0.f : g[c] - thr > 0.f)
                                             : (incl ? g[c] >= thr : g[c] > thr);
        pi[c] = keep ? (spec.unit ? 1.f : g[c]) : 0.f;
      }
      break;
    }
  }
  if (spec.positive)
    for (int64_t c = 0; c < m; ++c) pi[c] = pi[c] != 0.f && g[c] > 0.f ? 1.f : 0.f;
}

float suppressed_value(const graph::GatedConvParams& p, const float* beta, int64_t c) {
  return graph::apply_activation(p.activation, pre_suppressed(p, beta, c));
}

}  // namespace sluice::ops::gate
