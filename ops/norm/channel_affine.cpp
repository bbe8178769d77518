// Inference BatchNormalization as a per-channel affine map y = a[c] * x + b[c],
// with a and b precomputed once; NCHW or NHWC.
#include <cmath>
#include <vector>

#include "ops/kernel.h"

namespace sluice::ops {

namespace {

class ChannelAffine final : public Kernel {
 public:
  ChannelAffine(const graph::Graph& g, const graph::Node& n)
      : nhwc_(n.layout == graph::Layout::NHWC), select_(n.p<graph::BatchNormParams>().channels) {
    const float eps = n.p<graph::BatchNormParams>().epsilon;
    const float* s = g.value(n.inputs[1]).constant.data<float>();
    const float* b = g.value(n.inputs[2]).constant.data<float>();
    const float* m = g.value(n.inputs[3]).constant.data<float>();
    const float* v = g.value(n.inputs[4]).constant.data<float>();
    const int64_t c = g.value(n.inputs[1]).shape[0];
    scale_.resize(static_cast<size_t>(c));
    shift_.resize(static_cast<size_t>(c));
    for (int64_t i = 0; i < c; ++i) {
      scale_[i] = s[i] / std::sqrt(v[i] + eps);
      shift_[i] = b[i] - scale_[i] * m[i];
    }
  }

  void run(const KernelArgs& a) const override {
    const int64_t c = static_cast<int64_t>(scale_.size());
    const int64_t total = a.in[0].numel();
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    if (!select_.empty()) {  // pruned: output channel j is input channel select_[j]
      const int64_t co = static_cast<int64_t>(select_.size());
      const int64_t plane = nhwc_ ? 1 : total / (a.in[0].shape[0] * c);
      const int64_t outer = nhwc_ ? total / c : a.in[0].shape[0];
#pragma omp parallel for if (total > 65536)
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < co; ++j) {
          const int64_t ch = select_[static_cast<size_t>(j)];
          const float *x = X + (o * c + ch) * plane;
          float* y = Y + (o * co + j) * plane;
          for (int64_t k = 0; k < plane; ++k) y[k] = scale_[ch] * x[k] + shift_[ch];
        }
      return;
    }
    if (nhwc_) {
#pragma omp parallel for if (total > 65536)
      for (int64_t pix = 0; pix < total / c; ++pix)
        for (int64_t ch = 0; ch < c; ++ch) Y[pix * c + ch] = scale_[ch] * X[pix * c + ch] + shift_[ch];
    } else {
      const int64_t plane = a.in[0].shape.size() > 2 ? total / (a.in[0].shape[0] * c) : 1;
#pragma omp parallel for if (total > 65536)
      for (int64_t i = 0; i < total / plane; ++i) {
        const int64_t ch = i % c;
        for (int64_t j = 0; j < plane; ++j) Y[i * plane + j] = scale_[ch] * X[i * plane + j] + shift_[ch];
      }
    }
  }
  std::string name() const override { return nhwc_ ? "channel_affine:nhwc" : "channel_affine"; }
  int in_place_input() const override { return select_.empty() ? 0 : -1; }

 private:
  bool nhwc_;
  std::vector<int32_t> select_;
  std::vector<float> scale_, shift_;
};

}  // namespace

std::unique_ptr<Kernel> make_channel_affine(const graph::Graph& g, const graph::Node& n) {
  for (size_t i = 1; i <= 4; ++i)
    if (!g.value(n.inputs[i]).is_constant()) return nullptr;
  return std::make_unique<ChannelAffine>(g, n);
}

}  // namespace sluice::ops
