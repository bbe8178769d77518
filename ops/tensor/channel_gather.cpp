// Channel data movement: Gather on the channel axis of a 4-D float tensor with constant indices
// (what recognise_shifts makes of channel shuffles, chunks and flips: on NHWC data every pixel
// copies the same runs of consecutive channels; on NCHW every output channel is one input
// plane), and Concat as block copies (DenseNet concatenates at every layer).
#include <cstring>

#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

class ChannelGather final : public Kernel {
 public:
  ChannelGather(const graph::Graph& g, const graph::Node& n) : nhwc_(n.layout == graph::Layout::NHWC) {
    const Shape& xs = g.value(n.inputs[0]).shape;
    c_ = xs[1];
    for (int64_t v : to_int64_vector(g.value(n.inputs[1]).constant)) src_.push_back(static_cast<int32_t>(v < 0 ? v + c_ : v));
    m_ = static_cast<int64_t>(src_.size());
    // Runs of consecutive source channels: (first output channel, first source channel, length).
    for (int64_t j = 0; j < m_; ++j) {
      const int64_t s = src_[static_cast<size_t>(j)];
      if (!runs_.empty() && runs_.back().src + runs_.back().len == s && runs_.back().dst + runs_.back().len == j)
        ++runs_.back().len;
      else
        runs_.push_back({j, s, 1});
    }
    by_element_ = static_cast<int64_t>(runs_.size()) * 4 > m_;  // short runs (a shuffle's are 1): no memcpy calls
  }

  void run(const KernelArgs& a) const override {
    const auto* x = a.in[0].as<const float>();
    auto* y = a.out[0].as<float>();
    const Shape& s = a.in[0].shape;
    const int64_t n = s[0], hw = s[2] * s[3];
    if (nhwc_) {
      const int64_t pixels = n * hw;
      const int32_t* src = src_.data();
#pragma omp parallel for schedule(static) if (pixels * m_ >= 65536)
      for (int64_t p = 0; p < pixels; ++p) {
        const float* xp = x + p * c_;
        float* yp = y + p * m_;
        if (by_element_) {
          for (int64_t j = 0; j < m_; ++j) yp[j] = xp[src[j]];
        } else {
          for (const Run& r : runs_) std::memcpy(yp + r.dst, xp + r.src, static_cast<size_t>(r.len) * sizeof(float));
        }
      }
    } else {
#pragma omp parallel for collapse(2) schedule(static) if (n * m_ * hw >= 65536)
      for (int64_t b = 0; b < n; ++b)
        for (int64_t ri = 0; ri < static_cast<int64_t>(runs_.size()); ++ri) {
          const Run& r = runs_[static_cast<size_t>(ri)];
          std::memcpy(y + (b * m_ + r.dst) * hw, x + (b * c_ + r.src) * hw, static_cast<size_t>(r.len * hw) * sizeof(float));
        }
    }
  }
  std::string name() const override { return nhwc_ ? "channel-gather:nhwc" : "channel-gather:nchw"; }

 private:
  struct Run {
    int64_t dst, src, len;
  };
  bool nhwc_, by_element_ = false;
  int64_t c_ = 0, m_ = 0;
  std::vector<Run> runs_;
  std::vector<int32_t> src_;  // per output channel, its source channel
};

// Concat of float tensors as block copies: per index before the axis (in memory order: on NHWC
// data the channel axis is the last), each input's contiguous block in turn.
class BlockConcat final : public Kernel {
 public:
  BlockConcat(const graph::Graph& g, const graph::Node& n) {
    const bool nhwc = n.layout == graph::Layout::NHWC;
    const Shape& ys = g.value(n.outputs[0]).shape;
    const auto rank = static_cast<int64_t>(ys.size());
    int64_t axis = n.p<graph::AxisParams>().axis;
    if (axis < 0) axis += rank;
    // In memory order: NHWC holds [N, H, W, C]; logical axis 1 is the last.
    static constexpr int64_t kPos[] = {0, 3, 1, 2};
    const int64_t pa = nhwc ? kPos[axis] : axis;
    Shape phys = nhwc ? Shape{ys[0], ys[2], ys[3], ys[1]} : ys;
    outer_ = 1;
    for (int64_t d = 0; d < pa; ++d) outer_ *= phys[static_cast<size_t>(d)];
    for (graph::ValueId in : n.inputs) {
      const Shape& s = g.value(in).shape;
      const Shape ps = nhwc ? Shape{s[0], s[2], s[3], s[1]} : s;
      int64_t inner = 1;
      for (int64_t d = pa; d < rank; ++d) inner *= ps[static_cast<size_t>(d)];
      inner_.push_back(inner);
      total_ += inner;
    }
  }
  void run(const KernelArgs& a) const override {
    float* y = a.out[0].as<float>();
    const auto k = static_cast<int64_t>(inner_.size());
#pragma omp parallel for schedule(static) if (outer_ * total_ >= 65536 && outer_ > 1)
    for (int64_t o = 0; o < outer_; ++o) {
      float* dst = y + o * total_;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t len = inner_[static_cast<size_t>(i)];
        if (len) std::memcpy(dst, a.in[static_cast<size_t>(i)].as<const float>() + o * len, static_cast<size_t>(len) * sizeof(float));
        dst += len;
      }
    }
  }
  std::string name() const override { return "concat:blocks"; }

 private:
  int64_t outer_ = 1, total_ = 0;
  std::vector<int64_t> inner_;
};

}  // namespace

std::unique_ptr<Kernel> make_block_concat(const graph::Graph& g, const graph::Node& n) {
  if (n.outputs.size() != 1 || n.inputs.empty()) return nullptr;
  const graph::Value& y = g.value(n.outputs[0]);
  if (y.dtype != DType::Float32 || y.shape.empty() || (n.layout == graph::Layout::NHWC && y.shape.size() != 4)) return nullptr;
  for (graph::ValueId in : n.inputs)
    if (in == graph::kNoValue || g.value(in).dtype != DType::Float32 || g.value(in).shape.size() != y.shape.size()) return nullptr;
  return std::make_unique<BlockConcat>(g, n);
}

bool is_channel_gather(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::Gather || n.inputs.size() != 2 || n.outputs.size() != 1) return false;
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& i = g.value(n.inputs[1]);
  const int64_t axis = n.p<graph::AxisParams>().axis;
  if (x.dtype != DType::Float32 || x.shape.size() != 4 || (axis != 1 && axis != -3)) return false;
  if (!i.is_constant() || i.shape.size() != 1 || (i.dtype != DType::Int64 && i.dtype != DType::Int32)) return false;
  for (int64_t v : to_int64_vector(i.constant))
    if (v < -x.shape[1] || v >= x.shape[1]) return false;  // shape inference refuses these by name
  return true;
}

std::unique_ptr<Kernel> make_channel_gather(const graph::Graph& g, const graph::Node& n) {
  if (!is_channel_gather(g, n)) return nullptr;
  return std::make_unique<ChannelGather>(g, n);
}

}  // namespace sluice::ops
