// A direct convolution over selected channels that reads the model's own weights in place:
// no per-input weight gathering or packing. For the gated conv's small late layers, where
// packing the (k_out x k_in) weights for oneDNN per input costs as much as the conv. A dense
// conv (every channel) may instead pass weights packed once at load (pack_direct_weights),
// which run in wider blocks.
//
// Input: one sample, NHWC with `x_stride` floats per pixel; the active input channels are
// at positions in_pos[j] (the compact tensor's j, or the dense tensor's channel index) and
// have model channel in_ch[j]. Weights: the model's OIHW [M, C, kh, kw]. Output: compact NHWC
// [OH * OW, k_out], channel j = model channel out_ch[j], plus bias[out_ch[j]]; no activation.
// Equal strides of 1 or 2, dilation 1 (direct_conv_supported says). Works on a zero-padded planar copy of the
// input whose rows are flattened, so every tap is one contiguous 16-float vector read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "ops/conv/planar.h"

namespace sluice::ops::gated {

struct DirectConvShape {
  int64_t c, m, h, w, kh, kw, oh, ow;
  int64_t pad_top, pad_left;  // bottom/right follow from oh, ow
  int64_t stride = 1;         // 1 or 2, both axes
  planar::Geometry geometry() const { return {h, w, kh, kw, oh, ow, pad_top, pad_left, stride}; }
};

bool direct_conv_supported(const int64_t* strides, const int64_t* dilations);

// Scratch bytes for one call (planar input + planar output), for the largest k_in/k_out.
size_t direct_conv_scratch(const DirectConvShape& s);

// What the output gets besides the bias (a dense conv's fused epilogue): y = act(conv + bias +
// sum), sum NHWC with sum_stride floats per pixel. The gated conv uses none of it.
struct DirectEpilogue {
  const float* sum = nullptr;
  int64_t sum_stride = 0;
  graph::FusedActivation act{};
  // y, and sum, are resident planes of the output map (planar::resident), not NHWC (their
  // strides are then unused). A resident sum may go with an NHWC y, not the other way round.
  bool resident_out = false, resident_sum = false;
  // Called on each thread after each tile of a large map (none on small maps) with the output
  // rows that this thread has finished whole: [first, end), end growing tile by tile, prev_end
  // its value at the call before (first at the first call). A row that straddles the threads'
  // shares is never reported. (A fused pool pools the rows they complete while in cache.)
  const std::function<void(int64_t first, int64_t prev_end, int64_t end)>* rows_done = nullptr;
};

// x_form: x is NHWC; or resident planes of all s.c input channels (in_pos must be 0..c-1), read
// as they are by a 3x3, stride-1, pad-1 conv on an unchanged map (planar::resident), else
// packed from them (row copies, no transposes); or NCHW (packed by row copies too).
// packed: null, or pack_direct_weights(s, weights) for a dense conv (every channel in order:
// in_ch and out_ch 0, 1, ...), which then runs in wider blocks.
void direct_conv(const DirectConvShape& s, const float* x, int64_t x_stride, const int32_t* in_pos,
                 const int32_t* in_ch, int64_t ki, const float* weights, const float* bias, const int32_t* out_ch,
                 int64_t ko, float* y, void* scratch, const DirectEpilogue& epilogue = {},
                 planar::Source x_form = planar::Source::Nhwc, const float* packed = nullptr);

// A dense conv's OIHW weights packed for direct_conv's wide blocks (AVX-512 builds; empty
// elsewhere, where there are none).
std::vector<float> pack_direct_weights(const DirectConvShape& s, const float* weights);

}  // namespace sluice::ops::gated
