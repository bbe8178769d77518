// The FBS gate of a SluiceGatedConv (design.md §3), shared by the reference and the
// fast kernel so that both select exactly the same channels.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/params.h"

namespace sluice::ops::gate {

struct Spec {
  int64_t c_in = 0, c_out = 0;
  const float* wg = nullptr;  // [c_out][c_in] (null for GateForm::All)
  const float* bg = nullptr;  // [c_out] (null for GateForm::All)
  graph::GateForm form = graph::GateForm::Winners;
  int64_t k = 0;
  graph::Saliency saliency;  // g = act(...)
  bool by_difference = false;  // threshold forms: g - t >= 0 (> 0), as the graph writes it (NaN at inf - inf)
  bool unit = false;           // pi = 1 where kept, not g (a hard 0/1 mask)
  bool positive = false;       // with unit: pi = 1 only where kept and g > 0 (GatedConvParams::positive_pi)
};

// The saliency's activation, as the graph's standalone op computes it (a Relu keeps NaN).
float saliency(const graph::Saliency& a, float x);

// g = act(Wg s + bg), s of c_in values. GateForm::All: g = 1.
void predict(const Spec& spec, const float* s, float* g);

// pi from g, exactly as the exported ops compute it (ONNX TopK: ties, lower index first).
// GateForm::All: pi = 1 for every channel.
void select(const Spec& spec, const float* g, float* pi);

// Before the activation (and before a fused residual sum is added): a suppressed channel is
// beta_c * m_c (m_c = 0 when masked), an active one pi * v + beta_c.
inline float pre_suppressed(const graph::GatedConvParams& p, const float* beta, int64_t c) {
  return beta && p.beta == graph::BetaMode::Unmasked ? beta[c] : 0.f;
}
inline float pre_active(const graph::GatedConvParams& p, const float* beta, int64_t c, float pi, float v) {
  float y = pi * v;
  if (beta && p.beta != graph::BetaMode::None) y += beta[c];
  return y;
}
inline float activate(const graph::GatedConvParams& p, float y) {
  return p.activation.kind == graph::Activation::Relu ? (y < 0.f ? 0.f : y) : graph::apply_activation(p.activation, y);
}

// The gated conv runs its dense conv when its input is whole and at least this share (in %) of
// its outputs is active (or, with no gate of its own, of its inputs): cheaper than the compact
// one there. Its readers then see every channel as active.
inline constexpr int64_t kDenseFromPercent = 85;

// The value of a channel whose pi is 0: act(beta_c * m_c), m_c = 0 when masked (no fused sum).
float suppressed_value(const graph::GatedConvParams& p, const float* beta, int64_t c);

// y for an active channel: act(pi * v + beta_c) (no fused sum).
inline float active_value(const graph::GatedConvParams& p, const float* beta, int64_t c, float pi, float v) {
  return activate(p, pre_active(p, beta, c, pi, v));
}

}  // namespace sluice::ops::gate
