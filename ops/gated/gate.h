// The FBS gate of a SluiceGatedConv (design.md §3), shared by the reference and the
// fast kernel so that both select exactly the same channels.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/params.h"

namespace sluice::ops::gate {

struct Spec {
  int64_t c_in = 0, c_out = 0;
  const float* wg = nullptr;  // [c_out][c_in]
  const float* bg = nullptr;  // [c_out]
  graph::GateForm form = graph::GateForm::Winners;
  int64_t k = 0;
};

// g = relu(Wg s + bg), s of c_in values.
void predict(const Spec& spec, const float* s, float* g);

// pi from g, exactly as the exported ops compute it (ONNX TopK: ties, lower index first).
void select(const Spec& spec, const float* g, float* pi);

// The value of a channel whose pi is 0: act(beta_c * m_c), m_c = 0 when masked.
float suppressed_value(const graph::GatedConvParams& p, const float* beta, int64_t c);

// y for an active channel: act(pi * v + beta_c).
inline float active_value(const graph::GatedConvParams& p, const float* beta, int64_t c, float pi, float v) {
  float y = pi * v;
  if (beta && p.beta != graph::BetaMode::None) y += beta[c];
  return p.activation.kind == graph::Activation::Relu ? (y > 0.f ? y : 0.f) : graph::apply_activation(p.activation, y);
}

}  // namespace sluice::ops::gate
