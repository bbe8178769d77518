// MaxPool from resident planes to resident planes (ops/conv/planar.h): the pool between two
// thin convs that keep their activations planar (a VGG stage's end, a ResNet stem's pool). Per
// channel plane, each output row is the max over the window's rows and columns that are inside
// the map (the zero border is never read: it would be a wrong maximum for negative inputs), as
// (acc < x ? x : acc) like the NHWC kernel, so NaN taps are skipped the same way.
#include <algorithm>
#include <limits>
#include <type_traits>

#include "ops/conv/planar.h"
#include "ops/kernel.h"

namespace sluice::ops {

namespace {

class ResidentMaxPool final : public Kernel {
 public:
  ResidentMaxPool(const graph::Graph& g, const graph::Node& n) : p_(n.p<graph::PoolParams>()) {
    const Shape& x = g.value(n.inputs[0]).shape;
    const Shape& y = g.value(n.outputs[0]).shape;
    planes_ = x[0] * x[1], h_ = x[2], w_ = x[3], oh_ = y[2], ow_ = y[3];
  }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t ps_in = planar::resident(h_, w_).plane(), ps_out = planar::resident(oh_, ow_).plane();
#pragma omp parallel for schedule(static) if (planes_ * oh_ * ow_ > 16384)
    for (int64_t c = 0; c < planes_; ++c) {
      float* y = Y + c * ps_out;
      planar::clear_resident_borders(oh_, ow_, 1, y);
      for (int64_t oy = 0; oy < oh_; ++oy) pool_row(X + c * ps_in, oy, y + planar::resident_index(ow_, oy, 0));
    }
  }
  std::string name() const override { return "planar (resident planes)"; }

 private:
  // Row oy of the output into out[0 .. ow), with its border zeros at out[-1] and out[ow].
  void pool_row(const float* x, int64_t oy, float* out) const {
    const int64_t sy = p_.strides[0], sx = p_.strides[1];
    std::fill(out, out + ow_, -std::numeric_limits<float>::infinity());
    out[-1] = out[ow_] = 0.f;
    for (int64_t ky = 0; ky < p_.kernel_shape[0]; ++ky) {
      const int64_t iy = oy * sy - p_.pads[0] + ky;
      if (iy < 0 || iy >= h_) continue;
      const float* row = x + planar::resident_index(w_, iy, 0);
      for (int64_t kx = 0; kx < p_.kernel_shape[1]; ++kx) {
        // Output columns whose tap kx is inside the row: 0 <= ox * sx - pad + kx < w.
        const int64_t d = kx - p_.pads[1];
        const int64_t lo = d >= 0 ? 0 : (-d + sx - 1) / sx, hi = std::min(ow_, w_ - d > 0 ? (w_ - d - 1) / sx + 1 : 0);
        if (sx == 1)
          max_into(out, row + d, lo, hi, std::integral_constant<int64_t, 1>{});
        else if (sx == 2)
          max_into(out, row + d, lo, hi, std::integral_constant<int64_t, 2>{});
        else
          for (int64_t ox = lo; ox < hi; ++ox) out[ox] = out[ox] < row[ox * sx + d] ? row[ox * sx + d] : out[ox];
      }
    }
  }
  // A constant stride, so that the compiler vectorises the strided reads.
  template <class S>
  static void max_into(float* out, const float* row, int64_t lo, int64_t hi, S) {
    for (int64_t ox = lo; ox < hi; ++ox) {
      const float v = row[ox * S::value];
      out[ox] = out[ox] < v ? v : out[ox];
    }
  }

  graph::PoolParams p_;
  int64_t planes_, h_, w_, oh_, ow_;
};

}  // namespace

bool resident_pool(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::MaxPool || n.inputs.size() != 1 || n.outputs.empty()) return false;
  for (size_t i = 1; i < n.outputs.size(); ++i)
    if (n.outputs[i] != graph::kNoValue) return false;  // Indices
  const auto& p = n.p<graph::PoolParams>();
  const graph::Value& x = g.value(n.inputs[0]);
  const graph::Value& y = g.value(n.outputs[0]);
  return x.dtype == DType::Float32 && x.shape_known && y.shape_known && x.shape.size() == 4 && y.shape.size() == 4 &&
         p.kernel_shape.size() == 2 && p.strides.size() == 2 && p.pads.size() == 4 && p.strides[0] > 0 &&
         p.strides[1] > 0 && std::all_of(p.dilations.begin(), p.dilations.end(), [](int64_t d) { return d == 1; });
}

std::unique_ptr<Kernel> make_resident_pool(const graph::Graph& g, const graph::Node& n) {
  if (n.layout != graph::Layout::Planar || !resident_pool(g, n)) return nullptr;
  return std::make_unique<ResidentMaxPool>(g, n);
}

}  // namespace sluice::ops
