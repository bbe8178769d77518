// MaxPool from resident planes (ops/conv/planar.h) to resident planes, or to NHWC: the pool
// between two thin convs that keep their activations planar (a ResNet stem's pool), or after
// one whose reader runs on NHWC (a VGG stage's end before a oneDNN conv: the conv then writes
// its planes in place and the pool transposes a map a quarter the size). Per
// channel plane, each output row is the max over the window's rows and columns that are inside
// the map (the zero border is never read: it would be a wrong maximum for negative inputs), as
// (acc < x ? x : acc) like the NHWC kernel, so NaN taps are skipped the same way.
#include <algorithm>
#include <limits>
#include <utility>

#include <omp.h>

#include "ops/common/simd.h"
#include "ops/conv/planar.h"
#include "ops/kernel.h"
#include "ops/pool/resident.h"

namespace sluice::ops {

namespace {

// Lanes 0, 2, 4, ... (odd_of: 1, 3, 5, ...) of a then b; down_one: lanes 1 .. L-1 of a, then b's lane 0.
template <size_t... I>
simd::vf even_of(simd::vf a, simd::vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I)...);
}
template <size_t... I>
simd::vf odd_of(simd::vf a, simd::vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I + 1)...);
}
template <size_t... I>
simd::vf down_one_of(simd::vf a, simd::vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (I + 1)...);
}
simd::vf even(simd::vf a, simd::vf b) { return even_of(a, b, std::make_index_sequence<simd::kLanes>()); }
simd::vf odd(simd::vf a, simd::vf b) { return odd_of(a, b, std::make_index_sequence<simd::kLanes>()); }
simd::vf down_one(simd::vf a, simd::vf b) { return down_one_of(a, b, std::make_index_sequence<simd::kLanes>()); }

// Window width and stride as constants, so that the compiler vectorises the strided reads.
template <int KW, int SX>
void across(const float* col, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float m = -std::numeric_limits<float>::infinity();  // not col[i * SX]: that may be NaN
    for (int kx = 0; kx < KW; ++kx) m = m < col[i * SX + kx] ? col[i * SX + kx] : m;
    out[i] = m;
  }
}

class ResidentMaxPool final : public Kernel {
 public:
  ResidentMaxPool(const graph::Graph& g, const graph::Node& n)
      : rows_(n.p<graph::PoolParams>(), g.value(n.inputs[0]).shape, g.value(n.outputs[0]).shape,
              g.value(n.outputs[0]).layout != graph::Layout::Planar) {
    // (keep_planes_resident gives wide rows to sparse convs only)
    if (g.value(n.inputs[0]).wide_rows || g.value(n.outputs[0]).wide_rows)
      throw Error("internal error: the resident pool '" + n.name + "' does not take wide rows");
    threads_ = std::max(1, omp_get_max_threads());
  }

  size_t scratch_bytes() const override { return static_cast<size_t>(threads_ * rows_.tmp_floats()) * sizeof(float); }

  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t n = rows_.batch(), c = rows_.channels(), oh = rows_.out_h(), planes = n * c;
    const bool big = planes * oh * rows_.out_w() > 16384;
    if (rows_.nhwc_out()) {
#pragma omp parallel num_threads(threads_) if (big)
      {
        float* tmp = static_cast<float*>(a.scratch) + omp_get_thread_num() * rows_.tmp_floats();
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n * oh; ++r)
          rows_.rows(X + (r / oh) * rows_.in_floats(), r % oh, r % oh + 1, Y + (r / oh) * rows_.out_floats(), tmp);
      }
      return;
    }
    // Resident output: a channel plane per task.
    const int64_t ps_in = planar::resident(rows_.in_h(), rows_.in_w()).plane(),
                  ps_out = planar::resident(oh, rows_.out_w()).plane();
#pragma omp parallel for schedule(static) if (big)
    for (int64_t p = 0; p < planes; ++p) {
      float* y = Y + p * ps_out;
      planar::clear_resident_borders(oh, rows_.out_w(), 1, y);
      for (int64_t oy = 0; oy < oh; ++oy)
        rows_.pool_row(X + p * ps_in, oy, y + planar::resident_index(rows_.out_w(), oy, 0));
    }
  }
  std::string name() const override {
    return rows_.nhwc_out() ? "planar (resident planes in, NHWC out)" : "planar (resident planes)";
  }

 private:
  ResidentPoolRows rows_;
  int threads_;
};

}  // namespace

ResidentPoolRows::ResidentPoolRows(const graph::PoolParams& p, const Shape& x, const Shape& y, bool nhwc_out)
    : p_(p), n_(x[0]), c_(x[1]), h_(x[2]), w_(x[3]), oh_(y[2]), ow_(y[3]), nhwc_out_(nhwc_out) {}

int64_t ResidentPoolRows::in_floats() const { return c_ * planar::resident(h_, w_).plane(); }
int64_t ResidentPoolRows::out_floats() const { return c_ * (nhwc_out_ ? oh_ * ow_ : planar::resident(oh_, ow_).plane()); }

std::pair<int64_t, int64_t> ResidentPoolRows::window(int64_t oy) const {
  const int64_t top = oy * p_.strides[0] - p_.pads[0];
  return {std::max<int64_t>(0, top), std::min(h_, top + p_.kernel_shape[0])};
}

void ResidentPoolRows::rows(const float* x, int64_t oy0, int64_t oy1, float* y, float* tmp) const {
  const int64_t ps_in = planar::resident(h_, w_).plane();
  if (nhwc_out_) {
    // Per row: every channel's output row into tmp ([c][ow + 2], with the border places
    // pool_row writes), then transposed into the row's pixels by store_block.
    const planar::Geometry row{1, ow_, 1, 1, 1, ow_, 0, 0};
    const int64_t stride = ow_ + 2;
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      for (int64_t c = 0; c < c_; ++c) pool_row(x + c * ps_in, oy, tmp + c * stride + 1);
      planar::store_block(row, tmp + 1, stride, 0, ow_, c_, y + oy * ow_ * c_, c_, nullptr, nullptr, 0, {});
    }
    return;
  }
  const int64_t ps_out = planar::resident(oh_, ow_).plane(), bottom = (oh_ + 1) * (ow_ + 2);
  for (int64_t c = 0; c < c_; ++c) {
    float* p = y + c * ps_out;
    if (oy0 == 0) std::fill(p, p + ow_ + 2, 0.f);
    for (int64_t oy = oy0; oy < oy1; ++oy) pool_row(x + c * ps_in, oy, p + planar::resident_index(ow_, oy, 0));
    if (oy1 == oh_) std::fill(p + bottom, p + ps_out, 0.f);
  }
}

// Row oy of the output into out[0 .. ow), with its border zeros at out[-1] and out[ow]. In two
// steps, over chunks of the row: the max down the window's rows inside the map, column by column
// (whole vectors), then across each window's columns. Nine strided passes over the output row
// (3x3 windows) took 2.5x as long. Columns and rows in the padding stay -inf: never a maximum.
void ResidentPoolRows::pool_row(const float* x, int64_t oy, float* out) const {
  const int64_t sy = p_.strides[0], sx = p_.strides[1], kh = p_.kernel_shape[0], kw = p_.kernel_shape[1];
  const int64_t pl = p_.pads[1], iy0 = std::max<int64_t>(0, oy * sy - p_.pads[0]),
                iy1 = std::min(h_, oy * sy - p_.pads[0] + kh);
  out[-1] = out[ow_] = 0.f;
  // (A right pad of kw or more leaves windows wholly in the padding, whose vector reads
  // would run past the plane: the general path takes those maps.)
  if (sx == 2 && (kw == 2 || kw == 3) && pl <= 1 && p_.pads[3] < kw && iy1 - iy0 >= 1 && iy1 - iy0 <= 3) {
    if (kw == 3)
      row_s2<3>(x, iy0, iy1, pl, out);
    else
      row_s2<2>(x, iy0, iy1, pl, out);
    return;
  }
  constexpr int64_t kChunk = 1024;
  constexpr float kLow = -std::numeric_limits<float>::infinity();
  if (iy0 >= iy1 || kw > kChunk) {  // no row inside the map; absurdly wide windows
    std::fill(out, out + ow_, kLow);
    if (iy0 < iy1) wide_row(x, iy0, iy1, out);
    return;
  }
  const int64_t per = (kChunk - kw) / sx + 1;  // output columns per chunk
  float col[kChunk];
  for (int64_t ox0 = 0; ox0 < ow_; ox0 += per) {
    const int64_t ox1 = std::min(ow_, ox0 + per), c0 = ox0 * sx - pl, c1 = (ox1 - 1) * sx - pl + kw;
    const int64_t a = std::max<int64_t>(c0, 0), b = std::min(c1, w_);
    std::fill(col, col + (c1 - c0), kLow);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const float* row = x + planar::resident_index(w_, iy, 0);
      float* cm = col - c0;
      for (int64_t c = a; c < b; ++c) cm[c] = cm[c] < row[c] ? row[c] : cm[c];
    }
    if (kw == 3 && sx == 2)
      across<3, 2>(col, ox1 - ox0, out + ox0);
    else if (kw == 3 && sx == 1)
      across<3, 1>(col, ox1 - ox0, out + ox0);
    else if (kw == 2 && sx == 2)
      across<2, 2>(col, ox1 - ox0, out + ox0);
    else
      for (int64_t i = 0; i < ox1 - ox0; ++i) {
        float m = kLow;
        for (int64_t kx = 0; kx < kw; ++kx) m = m < col[i * sx + kx] ? col[i * sx + kx] : m;
        out[ox0 + i] = m;
      }
  }
}

// Stride-2 windows KW (2 or 3) wide, left padding 0 or 1, up to 3 rows (ResNet's stem pool,
// VGG's pools), a vector of output columns at a time from the input rows in place. Output
// lane i's window starts at column c0 + 2i: the max down the rows of the 2L columns from c0
// (two vectors a, b) gives tap 0 as their even lanes and tap 1 as their odd lanes; tap 2 is
// tap 0 moved down a lane, with column c0 + 2L (one more float per row) in the last lane.
// Columns outside the map count as -inf, as in the general path. (Reading each tap's columns
// anew, 6 vectors per row for 3x3 windows, the stem pool of a 20-channel 112x112 map took
// 64 us on 1 thread; the general path's two passes through a buffer took 61.)
template <int KW>
void ResidentPoolRows::row_s2(const float* x, int64_t iy0, int64_t iy1, int64_t pl, float* out) const {
  using simd::vf;
  constexpr int64_t L = simd::kLanes;
  typedef int32_t vi __attribute__((vector_size(L * sizeof(int32_t)), aligned(4)));
  constexpr float kLow = -std::numeric_limits<float>::infinity();
  const vf low = vf{} + kLow;
  const float* rows[3];
  const int nr = static_cast<int>(iy1 - iy0);
  for (int r = 0; r < nr; ++r) rows[r] = x + planar::resident_index(w_, iy0 + r, 0);
  vi lane;
  for (int64_t i = 0; i < L; ++i) lane[i] = static_cast<int32_t>(i);
  const auto w = static_cast<int32_t>(w_);
  for (int64_t ox0 = 0; ox0 < ow_; ox0 += L) {
    const int64_t c0 = 2 * ox0 - pl;  // reads columns c0 .. c0 + 2L: the border, slack or the next rows
    vf a = low, b = low;  // from -inf, so that a NaN is skipped, as in the general path
    float c = kLow;
    for (int r = 0; r < nr; ++r) {
      const vf ra = *reinterpret_cast<const vf*>(rows[r] + c0), rb = *reinterpret_cast<const vf*>(rows[r] + c0 + L);
      a = a < ra ? ra : a;
      b = b < rb ? rb : b;
      if constexpr (KW == 3) c = c < rows[r][c0 + 2 * L] ? rows[r][c0 + 2 * L] : c;
    }
    const vi ca = lane + static_cast<int32_t>(c0), cb = ca + static_cast<int32_t>(L);
    a = ca >= 0 && ca < w ? a : low;
    b = cb >= 0 && cb < w ? b : low;
    const vf t0 = even(a, b), t1 = odd(a, b);
    vf m = low;
    m = m < t0 ? t0 : m;
    m = m < t1 ? t1 : m;
    if constexpr (KW == 3) {
      if (c0 + 2 * L >= w_) c = kLow;  // (c0 + 2L >= 0 always)
      const vf t2 = down_one(t0, c - vf{});  // (c - 0 keeps -0; 0 + c would make it +0)
      m = m < t2 ? t2 : m;
    }
    const int64_t n = std::min(L, ow_ - ox0);
    if (n == L)
      *reinterpret_cast<vf*>(out + ox0) = m;
    else
      for (int64_t i = 0; i < n; ++i) out[ox0 + i] = m[i];
  }
}

// Windows wider than a chunk: tap by tap.
void ResidentPoolRows::wide_row(const float* x, int64_t iy0, int64_t iy1, float* out) const {
  const int64_t sx = p_.strides[1];
  for (int64_t iy = iy0; iy < iy1; ++iy) {
    const float* row = x + planar::resident_index(w_, iy, 0);
    for (int64_t ox = 0; ox < ow_; ++ox)
      for (int64_t kx = 0; kx < p_.kernel_shape[1]; ++kx) {
        const int64_t ix = ox * sx - p_.pads[1] + kx;
        if (ix >= 0 && ix < w_) out[ox] = out[ox] < row[ix] ? row[ix] : out[ox];
      }
  }
}



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
