#include "ops/gated/gate.h"

#include <algorithm>
#include <numeric>

namespace sluice::ops::gate {

void predict(const Spec& spec, const float* s, float* g) {
  for (int64_t o = 0; o < spec.c_out; ++o) {
    const float* w = spec.wg + o * spec.c_in;
    float acc = 0.f;
    for (int64_t i = 0; i < spec.c_in; ++i) acc += w[i] * s[i];
    acc += spec.bg[o];
    g[o] = acc > 0.f ? acc : 0.f;
  }
}

void select(const Spec& spec, const float* g, float* pi) {
  const int64_t m = spec.c_out;
  std::vector<int64_t> idx(static_cast<size_t>(m));
  std::iota(idx.begin(), idx.end(), 0);
  switch (spec.form) {
    case graph::GateForm::Winners: {
      const int64_t k = std::clamp<int64_t>(spec.k, 0, m);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int64_t a, int64_t b) { return g[a] != g[b] ? g[a] > g[b] : a < b; });
      std::fill(pi, pi + m, 0.f);
      for (int64_t r = 0; r < k; ++r) pi[idx[static_cast<size_t>(r)]] = g[idx[static_cast<size_t>(r)]];
      break;
    }
    case graph::GateForm::Losers: {
      const int64_t drop = std::clamp<int64_t>(m - spec.k, 0, m);
      // TopK of -g (or the smallest of g): the smallest g, lower index first among equals.
      std::partial_sort(idx.begin(), idx.begin() + drop, idx.end(),
                        [&](int64_t a, int64_t b) { return g[a] != g[b] ? g[a] < g[b] : a < b; });
      std::copy(g, g + m, pi);
      for (int64_t r = 0; r < drop; ++r) pi[idx[static_cast<size_t>(r)]] = 0.f;
      break;
    }
    case graph::GateForm::Threshold: {
      const int64_t k = std::clamp<int64_t>(spec.k, 1, m);
      std::vector<float> v(g, g + m);
      std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
      const float thr = v[static_cast<size_t>(k - 1)];
      for (int64_t c = 0; c < m; ++c) pi[c] = g[c] > thr ? g[c] : 0.f;
      break;
    }
  }
}

float suppressed_value(const graph::GatedConvParams& p, const float* beta, int64_t c) {
  return graph::apply_activation(p.activation, pre_suppressed(p, beta, c));
}

}  // namespace sluice::ops::gate
