#include "graph/params.h"

namespace sluice::graph {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::NCHW: return "NCHW";
    case Layout::NHWC: return "NHWC";
    case Layout::Planar: return "planar";
  }
  return "?";
}

const char* gate_form_name(GateForm f) {
  switch (f) {
    case GateForm::Winners: return "winners";
    case GateForm::Losers: return "losers";
    case GateForm::Threshold: return "threshold";
    case GateForm::ThresholdInclusive: return "threshold>=";
    case GateForm::All: return "every output (reads a gated input)";
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

const char* saliency_act_name(Saliency::Act a) {
  switch (a) {
    case Saliency::Act::Relu: return "relu";
    case Saliency::Act::Sigmoid: return "sigmoid";
    case Saliency::Act::LeakyRelu: return "leaky relu";
    case Saliency::Act::Clip: return "clip";
    case Saliency::Act::HardSigmoid: return "hard sigmoid";
    case Saliency::Act::Softplus: return "softplus";
    case Saliency::Act::Elu: return "elu";
    case Saliency::Act::Tanh: return "tanh";
    case Saliency::Act::Abs: return "abs";
    case Saliency::Act::HardSwish: return "hardswish";
    case Saliency::Act::Silu: return "silu";
    case Saliency::Act::Gelu: return "gelu";
    case Saliency::Act::GeluTanh: return "gelu (tanh approximation)";
    case Saliency::Act::Identity: return "no activation";
    case Saliency::Act::Softmax: return "softmax";
  }
  return "?";
}

}  // namespace sluice::graph
