// TopK, ScatterElements, GatherElements and OneHot: the ops FBS gates export to (the last two
// when written with torch.gather / one_hot). ScatterND: PyTorch's export of slice
// assignment (out[:, c, 1:] = x[:, c, :-1], a way to write a shift).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/util.h"

namespace sluice::ops {

void infer_TopK(InferContext& ctx) {
  auto& p = ctx.node().p<graph::TopKParams>();
  const auto& x = ctx.in(0);
  if (x.dtype == DType::Bool) ctx.fail("bool input is not supported");
  if (x.shape.empty()) ctx.fail("input must have rank >= 1");
  p.axis = normalize_axis(ctx, p.axis, static_cast<int64_t>(x.shape.size()));
  // The spec's K is 1-D of one value; ONNX Runtime refuses a scalar one too.
  if (const Tensor& kt = ctx.require_const(1, "K"); kt.shape().size() != 1)
    ctx.fail("K ('" + ctx.in(1).name + "') must be a 1-D tensor of one value (shape [1]), got shape " +
             shape_str(kt.shape()) + ": reshape it to [1] in the model (ONNX Runtime refuses it too)");
  const auto kv = ctx.require_ints(1, "K");
  if (kv.size() != 1) ctx.fail("K must hold exactly one value, got " + std::to_string(kv.size()));
  const int64_t k = kv[0], len = x.shape[static_cast<size_t>(p.axis)];
  if (k < 0 || k > len)
    ctx.fail("K = " + std::to_string(k) + " is out of range: axis " + std::to_string(p.axis) + " has " +
             std::to_string(len) + " elements (need 0 <= K <= " + std::to_string(len) + ")");
  Shape out = x.shape;
  out[static_cast<size_t>(p.axis)] = k;
  ctx.set_output(0, x.dtype, out);
  ctx.set_output(1, DType::Int64, out);
}

namespace {

// A heap of k indices whose root is the weakest (the next to be pushed out): `beats(a, b)` says
// a ranks above b. Moves entry i down to its place in h[0 .. k).
template <class Beats>
void sift_weakest_up(int64_t* h, int64_t i, int64_t k, const Beats& beats) {
  for (;;) {
    const int64_t l = 2 * i + 1, r = l + 1;
    int64_t to = -1;
    if (r < k) {
      const bool over_l = beats(h[i], h[l]);
      if (over_l && beats(h[r], h[l])) to = l;  // l is the weakest of the three: it goes up
      else if (over_l || beats(h[i], h[r])) to = r;
    } else if (l < k && beats(h[i], h[l])) {
      to = l;
    }
    if (to < 0) return;
    std::swap(h[i], h[to]);
    i = to;
  }
}

// The k best of row positions 0 .. len-1 into sel[0 .. k) in ONNX Runtime's unsorted order
// (sorted = 0 leaves the order to the runtime; a graph that reads the values by position then
// gives ORT's answer): for k = 1 the best; for small k (k < 4, or log2(k) < 0.725 log2(len)) a
// heap of the k best in heap order; otherwise std::nth_element's arrangement, as ORT's CPU
// kernel (onnxruntime/core/providers/cpu/math/top_k.cc) leaves them.
template <class Beats>
void select_unsorted(int64_t len, int64_t k, const Beats& beats, std::vector<int64_t>& sel) {
  sel.resize(static_cast<size_t>(len));
  if (k == 1) {
    int64_t best = 0;
    for (int64_t i = 1; i < len; ++i)
      if (beats(i, best)) best = i;
    sel[0] = best;
    return;
  }
  if (k < 4 || std::log2(static_cast<double>(k)) / std::log2(static_cast<double>(len)) < 0.725) {
    int64_t* h = sel.data();
    for (int64_t l = 0; l < k; ++l) {  // the first k, added from the bottom up
      h[k - l - 1] = l;
      sift_weakest_up(h, k - l - 1, k, beats);
    }
    for (int64_t l = k; l < len; ++l)
      if (beats(l, h[0])) {  // a later equal value never replaces an earlier one
        h[0] = l;
        sift_weakest_up(h, 0, k, beats);
      }
    return;
  }
  std::iota(sel.begin(), sel.end(), 0);
  std::nth_element(sel.begin(), sel.begin() + (k - 1), sel.end(), beats);
}

}  // namespace

void reference_TopK(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::TopKParams>();
  const Shape& s = in[0].shape;
  const int64_t axis = p.axis, len = s[static_cast<size_t>(axis)], k = out[0].shape[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < axis) outer *= s[i];
    if (i > axis) inner *= s[i];
  }
  if (k == 0) return;
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* X = in[0].as<const T>();
      T* V = out[0].as<T>();
      int64_t* I = out.size() > 1 && out[1].data ? out[1].as<int64_t>() : nullptr;
      std::vector<int64_t> idx(static_cast<size_t>(len));
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          auto val = [&](int64_t i) { return X[(o * len + i) * inner + j]; };
          // Ties: the lower index first (stable order), as ONNX Runtime does. NaN ranks above
          // every number, as numpy and torch order it: first when taking the largest, last when
          // taking the smallest. (Compared as numbers, NaN broke the sort's order: a NaN landed
          // mid-list and the rest came out unsorted; ONNX Runtime 1.20's order with NaN is not
          // consistent either.)
          auto before = [&](int64_t a, int64_t b) {
            const T va = val(a), vb = val(b);
            const bool na = va != va, nb = vb != vb;  // NaN (never for integers)
            if (na || nb) return na && nb ? a < b : p.largest ? na : nb;
            if (va != vb) return p.largest ? va > vb : va < vb;
            return a < b;
          };
          if (p.sorted) {
            std::iota(idx.begin(), idx.end(), 0);
            std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
          } else {
            select_unsorted(len, k, before, idx);
          }
          for (int64_t r = 0; r < k; ++r) {
            const int64_t at = (o * k + r) * inner + j;
            V[at] = val(idx[static_cast<size_t>(r)]);
            if (I) I[at] = idx[static_cast<size_t>(r)];
          }
        }
    }
  });
}

namespace {
// y[off] = upd[u], or combined with y[off] by the reduction.
void scatter_one(graph::ScatterParams::Reduction r, const TensorView& y, const TensorView& upd, int64_t off, int64_t u, size_t es) {
  using R = graph::ScatterParams::Reduction;
  if (r == R::None) {
    std::copy_n(upd.as<const std::byte>() + u * static_cast<int64_t>(es), es, y.as<std::byte>() + off * static_cast<int64_t>(es));
    return;
  }
  dispatch_numeric(y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      T& dst = y.as<T>()[off];
      const T v = upd.as<const T>()[u];
      switch (r) {
        case R::Add: dst = static_cast<T>(dst + v); break;
        case R::Mul: dst = static_cast<T>(dst * v); break;
        case R::Max: dst = std::max(dst, v); break;
        case R::Min: dst = std::min(dst, v); break;
        case R::None: break;
      }
    }
  });
}

void check_scatter_types(InferContext& ctx, const graph::ScatterParams& p) {
  if (ctx.in(1).dtype != DType::Int64 && ctx.in(1).dtype != DType::Int32) ctx.fail("indices must be int64 or int32");
  if (ctx.in(2).dtype != ctx.in(0).dtype) ctx.fail("updates must have the data's dtype");
  if (p.reduction != graph::ScatterParams::Reduction::None && ctx.in(0).dtype == DType::Bool)
    ctx.fail("a reduction on bool data is not supported");
}

// The indices of ScatterElements and GatherElements: the data's rank, and no larger than the
// data outside the axis. Returns the axis, normalised.
int64_t check_element_indices(InferContext& ctx, const Shape& data, const Shape& idx, int64_t axis) {
  if (data.empty()) ctx.fail("data must have rank >= 1");
  if (idx.size() != data.size())
    ctx.fail("indices " + shape_str(idx) + " must have the data's rank (data " + shape_str(data) + ")");
  axis = normalize_axis(ctx, axis, static_cast<int64_t>(data.size()));
  for (size_t d = 0; d < idx.size(); ++d)
    if (static_cast<int64_t>(d) != axis && idx[d] > data[d])
      ctx.fail("indices shape " + shape_str(idx) + " exceeds data shape " + shape_str(data) + " outside the axis");
  return axis;
}

// f(u, off) for every entry u of the indices: off is the data element it addresses (its own
// position, with the axis entry replaced by the index). An index outside the axis is an error
// naming the node.
template <class F>
void for_each_indexed(const graph::Node& node, const Shape& data_shape, const TensorView& idx, int64_t axis, F&& f) {
  const auto indices = to_int64_vector(idx);
  const auto ds = strides_of(data_shape);
  const int64_t dim = data_shape[static_cast<size_t>(axis)];
  const size_t rank = idx.shape.size();
  std::vector<int64_t> pos(rank, 0);
  for (int64_t u = 0; u < idx.numel(); ++u) {
    int64_t i = indices[static_cast<size_t>(u)];
    if (i < -dim || i >= dim)
      throw Error("node '" + node.name + "' (" + graph::op_name(node.op) + "): index " + std::to_string(i) +
                  " is out of range for axis size " + std::to_string(dim));
    if (i < 0) i += dim;
    int64_t off = 0;
    for (size_t d = 0; d < rank; ++d) off += (static_cast<int64_t>(d) == axis ? i : pos[d]) * ds[d];
    f(u, off);
    for (size_t d = rank; d-- > 0;) {
      if (++pos[d] < idx.shape[d]) break;
      pos[d] = 0;
    }
  }
}
}  // namespace

void infer_ScatterElements(InferContext& ctx) {
  auto& p = ctx.node().p<graph::ScatterParams>();
  const auto& data = ctx.in(0);
  const auto& idx = ctx.in(1);
  const auto& upd = ctx.in(2);
  check_scatter_types(ctx, p);
  if (idx.shape != upd.shape) ctx.fail("indices " + shape_str(idx.shape) + " and updates " + shape_str(upd.shape) + " must have one shape");
  p.axis = check_element_indices(ctx, data.shape, idx.shape, p.axis);
  ctx.set_output(0, data.dtype, data.shape);
}

void reference_ScatterElements(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ScatterParams>();
  const TensorView &data = in[0], &idx = in[1], &upd = in[2], &y = out[0];
  const size_t es = dtype_size(data.dtype);
  if (y.data != data.data) std::copy_n(data.as<const std::byte>(), static_cast<size_t>(data.numel()) * es, y.as<std::byte>());
  for_each_indexed(node, data.shape, idx, p.axis, [&](int64_t u, int64_t off) { scatter_one(p.reduction, y, upd, off, u, es); });
}

// ScatterND: indices [..., k] address slices of data's last r - k axes; updates hold one such
// slice per index tuple: shape indices.shape[:-1] + data.shape[k:].
void infer_ScatterND(InferContext& ctx) {
  const auto& p = ctx.node().p<graph::ScatterParams>();
  const auto& data = ctx.in(0);
  const auto& idx = ctx.in(1);
  const auto& upd = ctx.in(2);
  check_scatter_types(ctx, p);
  if (idx.dtype != DType::Int64) ctx.fail("indices must be int64 (ONNX's ScatterND), got " + std::string(dtype_name(idx.dtype)));
  if (data.shape.empty()) ctx.fail("data must have rank >= 1");
  if (idx.shape.empty()) ctx.fail("indices must have rank >= 1");
  const int64_t k = idx.shape.back();
  if (k < 1 || k > static_cast<int64_t>(data.shape.size()))
    ctx.fail("the last dimension of indices " + shape_str(idx.shape) + " must be between 1 and the data's rank " +
             std::to_string(data.shape.size()));
  Shape want(idx.shape.begin(), idx.shape.end() - 1);
  want.insert(want.end(), data.shape.begin() + k, data.shape.end());
  if (upd.shape != want)
    ctx.fail("updates have shape " + shape_str(upd.shape) + "; indices " + shape_str(idx.shape) + " into data " +
             shape_str(data.shape) + " need " + shape_str(want));
  ctx.set_output(0, data.dtype, data.shape);
}

void reference_ScatterND(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ScatterParams>();
  const TensorView &data = in[0], &idx = in[1], &upd = in[2], &y = out[0];
  const size_t es = dtype_size(data.dtype);
  if (y.data != data.data) std::copy_n(data.as<const std::byte>(), static_cast<size_t>(data.numel()) * es, y.as<std::byte>());
  const auto indices = to_int64_vector(idx);
  const auto ds = strides_of(data.shape);
  const size_t k = static_cast<size_t>(idx.shape.back());
  const int64_t tuples = static_cast<int64_t>(indices.size() / k), slice = ds[k - 1];  // k >= 1 (infer)
  for (int64_t t = 0; t < tuples; ++t) {
    int64_t off = 0;
    for (size_t d = 0; d < k; ++d) {
      const int64_t dim = data.shape[d];
      int64_t i = indices[static_cast<size_t>(t) * k + d];
      if (i < -dim || i >= dim)
        throw Error("node '" + node.name + "' (ScatterND): index " + std::to_string(i) + " is out of range for axis " +
                    std::to_string(d) + " of size " + std::to_string(dim) + " (data " + shape_str(data.shape) + ")");
      off += (i < 0 ? i + dim : i) * ds[d];
    }
    for (int64_t j = 0; j < slice; ++j) scatter_one(p.reduction, y, upd, off + j, t * slice + j, es);
  }
}

// GatherElements: y[i...] = data[i... with axis entry indices[i...]]; y has the indices' shape.
void infer_GatherElements(InferContext& ctx) {
  auto& p = ctx.node().p<graph::AxisParams>();
  const auto& data = ctx.in(0);
  const auto& idx = ctx.in(1);
  if (idx.dtype != DType::Int64 && idx.dtype != DType::Int32) ctx.fail("indices must be int64 or int32");
  p.axis = check_element_indices(ctx, data.shape, idx.shape, p.axis);
  ctx.set_output(0, data.dtype, idx.shape);
}

void reference_GatherElements(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const TensorView &data = in[0], &idx = in[1], &y = out[0];
  const auto es = static_cast<int64_t>(dtype_size(data.dtype));
  const auto* X = data.as<const std::byte>();
  auto* Y = y.as<std::byte>();
  for_each_indexed(node, data.shape, idx, node.p<graph::AxisParams>().axis,
                   [&](int64_t u, int64_t off) { std::copy_n(X + off * es, es, Y + u * es); });
}

// OneHot(indices, depth, values = [off, on]): a new axis of size depth, `on` at each index
// (negative indices count from the end), `off` elsewhere; an index outside [-depth, depth)
// gives a row of `off`, as the spec says.
void infer_OneHot(InferContext& ctx) {
  auto& p = ctx.node().p<graph::AxisParams>();
  const auto& idx = ctx.in(0);
  if (idx.dtype == DType::Bool) ctx.fail("indices must be numbers");
  const Tensor& dt = ctx.require_const(1, "depth");
  if (dt.numel() != 1) ctx.fail("depth must hold one value, got " + std::to_string(dt.numel()));
  const double depth = dt.dtype() == DType::Int64 ? static_cast<double>(dt.data<int64_t>()[0])
                       : dt.dtype() == DType::Int32 ? dt.data<int32_t>()[0]
                       : dt.dtype() == DType::Float32 ? dt.data<float>()[0]
                       : dt.dtype() == DType::Float64 ? dt.data<double>()[0]
                                                      : -1.0;
  if (!(depth >= 1) || depth > 1e9) ctx.fail("depth must be a number between 1 and 1e9");
  const auto& vals = ctx.in(2);
  int64_t nv = 1;
  for (int64_t d : vals.shape) nv *= d;
  if (nv != 2) ctx.fail("values must hold two entries [off, on], got shape " + shape_str(vals.shape));
  const auto rank = static_cast<int64_t>(idx.shape.size()) + 1;
  p.axis = normalize_axis(ctx, p.axis, rank);
  Shape out = idx.shape;
  out.insert(out.begin() + p.axis, static_cast<int64_t>(depth));
  checked_numel(ctx, out);
  ctx.set_output(0, vals.dtype, out);
}

void reference_OneHot(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const int64_t axis = node.p<graph::AxisParams>().axis;
  const TensorView &idx = in[0], &vals = in[2], &y = out[0];
  const int64_t depth = y.shape[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(idx.shape.size()); ++d)
    (d < axis ? outer : inner) *= idx.shape[static_cast<size_t>(d)];
  std::vector<double> ids(static_cast<size_t>(idx.numel()));
  dispatch_numeric(idx.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>)
      for (int64_t i = 0; i < idx.numel(); ++i) ids[static_cast<size_t>(i)] = static_cast<double>(idx.as<const T>()[i]);
  });
  const size_t es = dtype_size(vals.dtype);
  const auto* V = vals.as<const std::byte>();  // V[0] off, V[es] on
  auto* Y = y.as<std::byte>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < depth; ++d)
      for (int64_t j = 0; j < inner; ++j) {
        double id = std::trunc(ids[static_cast<size_t>(o * inner + j)]);
        if (id < 0) id += static_cast<double>(depth);
        std::copy_n(V + (id == static_cast<double>(d) ? es : 0), es, Y + ((o * depth + d) * inner + j) * static_cast<int64_t>(es));
      }
}

}  // namespace sluice::ops
