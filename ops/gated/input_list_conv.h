// A direct convolution over a list of input channels that computes every output channel,
// vectorised over the output channels: for a plain conv behind a gate (GateForm::All), which
// reads only the channels the gate left active. Its weights are packed once, at load, input
// channel by input channel ([chunk of output channels][input channel][tap][chunk]), so that
// skipping an input channel is skipping a contiguous run of weights: nothing is gathered per
// input. (The gated path's oneDNN primitive needs the active weights gathered per input: on a
// 7x7 map with 512 outputs and 128 active inputs that gather moved 2.4 MB per call, and the
// conv ran at a third of the dense conv's speed.)
//
// Input: one sample, NHWC with x_stride floats per pixel; active input channel j sits at
// position pos[j] and is model channel ch[j]. Output: NHWC [OH * OW, M], every channel,
// y = act(conv + bias + sum), sum NHWC [OH * OW, M] or null.
#pragma once

#include <cstddef>
#include <cstdint>

#include "graph/params.h"
#include "ops/common/simd.h"

namespace sluice::ops::gated {

struct InputListShape {
  int64_t c, m, h, w, kh, kw, oh, ow;
  int64_t pad_top, pad_left, stride_h, stride_w, dil_h, dil_w;
};

class InputListConv {
 public:
  static constexpr int64_t kMaxTaps = 64;  // kh * kw
  // weights: the model's OIHW [M, C, kh, kw]; bias: [M] or null.
  InputListConv(const InputListShape& s, const float* weights, const float* bias);
  // Scratch floats for one call (the zero-padded copy of the active input channels).
  size_t scratch_bytes() const;
  void run(const float* x, int64_t x_stride, const int32_t* pos, const int32_t* ch, int64_t k, float* y,
           const float* sum, const graph::FusedActivation& act, void* scratch) const;

 private:
  InputListShape s_;
  int64_t hp_ = 0, wp_ = 0, chunks_ = 0;
  simd::AlignedFloats w_;  // [chunk][C][kh * kw][kChunk]
  std::vector<float> bias_;  // [chunks * kChunk], zero past M
};

}  // namespace sluice::ops::gated
