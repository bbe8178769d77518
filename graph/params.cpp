#include "graph/params.h"

#include <algorithm>
#include <cmath>

namespace sluice::graph {

float apply_activation(const FusedActivation& a, float x) {
  switch (a.kind) {
    case Activation::None: return x;
    case Activation::Relu: return x > 0.f ? x : 0.f;  // a fused epilogue: NaN -> 0, as oneDNN's post-op
    case Activation::LeakyRelu: return x >= 0.f ? x : a.alpha * x;
    case Activation::Clip: return x > a.alpha ? std::min(x, a.beta) : a.alpha;  // NaN -> min, as oneDNN's post-op
    case Activation::Sigmoid: return 1.f / (1.f + std::exp(-x));
    case Activation::HardSwish: return x * std::min(std::max(x / 6.f + 0.5f, 0.f), 1.f);
  }
  return x;
}

}  // namespace sluice::graph

namespace sluice::graph {

const char* gate_form_name(GateForm f) {
  switch (f) {
    case GateForm::Winners: return "winners";
    case GateForm::Losers: return "losers";
    case GateForm::Threshold: return "threshold";
    case GateForm::ThresholdInclusive: return "threshold>=";
  }
  return "?";
}

const char* beta_mode_name(BetaMode b) {
  switch (b) {
    case BetaMode::None: return "no beta";
    case BetaMode::Masked: return "masked beta";
    case BetaMode::Unmasked: return "unmasked beta";
  }
  return "?";
}

}  // namespace sluice::graph
