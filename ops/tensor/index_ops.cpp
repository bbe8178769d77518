// Slice, Gather, Pad, Constant, ConstantOfShape, Range.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/tensor/strided_copy.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {
struct SliceDims {
  std::vector<int64_t> start, step, count;  // per data axis
};

// Resolves starts/ends/axes/steps exactly as the ONNX spec clamps them.
SliceDims resolve_slice(InferContext& ctx) {
  const Shape& s = ctx.in(0).shape;
  const int64_t rank = static_cast<int64_t>(s.size());
  auto starts = ctx.require_ints(1, "starts");
  auto ends = ctx.require_ints(2, "ends");
  std::vector<int64_t> axes, steps;
  if (ctx.has_input(3)) axes = ctx.require_ints(3, "axes");
  else for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (ctx.has_input(4)) steps = ctx.require_ints(4, "steps");
  else steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    ctx.fail("starts, ends, axes and steps must have the same length");
  SliceDims r;
  r.start.assign(s.size(), 0);
  r.step.assign(s.size(), 1);
  r.count = s;
  std::vector<bool> seen(s.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t a = normalize_axis(ctx, axes[i], rank);
    if (seen[static_cast<size_t>(a)]) ctx.fail("axis " + std::to_string(a) + " is repeated");
    seen[static_cast<size_t>(a)] = true;
    const int64_t dim = s[static_cast<size_t>(a)], step = steps[i];
    if (step == 0) ctx.fail("steps must not be 0");
    int64_t b = starts[i], e = ends[i];
    if (b < 0) b += dim;
    if (e < 0) e += dim;
    if (step > 0) {
      b = std::clamp(b, int64_t{0}, dim);
      e = std::clamp(e, int64_t{0}, dim);
    } else {
      b = std::clamp(b, int64_t{0}, dim - 1);
      e = std::clamp(e, int64_t{-1}, dim - 1);
    }
    // ceil((e - b) / step) without forming e - b + step - 1, which overflows for steps near
    // +-2^63 (a fuzzer's step of -(2^63 - 1) gave 0 elements instead of 1)
    const int64_t n = step > 0 ? (e > b ? (e - b - 1) / step + 1 : 0) : (b > e ? (b - e - 1) / -step + 1 : 0);
    r.start[static_cast<size_t>(a)] = b;
    r.step[static_cast<size_t>(a)] = step;
    r.count[static_cast<size_t>(a)] = std::max<int64_t>(0, n);
  }
  return r;
}
}  // namespace

void infer_Slice(InferContext& ctx) {
  SliceDims d = resolve_slice(ctx);
  ctx.set_output(0, ctx.in(0).dtype, d.count);
}

void reference_Slice(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  // Recompute the clamped starts from the (constant) inputs, as inference did.
  const Shape& s = in[0].shape;
  const size_t rank = s.size();
  auto starts = to_int64_vector(in[1]);
  std::vector<int64_t> axes, steps;
  if (in.size() > 3 && in[3].data) axes = to_int64_vector(in[3]);
  else for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (in.size() > 4 && in[4].data) steps = to_int64_vector(in[4]);
  else steps.assign(starts.size(), 1);
  std::vector<int64_t> start(rank, 0), step(rank, 1);
  for (size_t i = 0; i < starts.size(); ++i) {
    const size_t a = static_cast<size_t>(normalize_axis(axes[i], static_cast<int64_t>(rank)));
    const int64_t dim = s[a];
    int64_t b = starts[i] < 0 ? starts[i] + dim : starts[i];
    b = steps[i] > 0 ? std::clamp(b, int64_t{0}, dim) : std::clamp(b, int64_t{0}, dim - 1);
    start[a] = b;
    step[a] = steps[i];
  }
  auto st = strides_of(s);
  int64_t offset = 0;
  std::vector<int64_t> src_strides(rank);
  for (size_t d = 0; d < rank; ++d) {
    offset += start[d] * st[d];
    src_strides[d] = step[d] * st[d];
  }
  strided_copy(in[0].as<const std::byte>(), offset, src_strides, out[0].as<std::byte>(), out[0].shape, dtype_size(in[0].dtype));
}

void infer_Gather(InferContext& ctx) {
  auto& p = ctx.node().p<graph::AxisParams>();
  const auto& x = ctx.in(0);
  const auto& idx = ctx.in(1);
  if (idx.dtype != DType::Int64 && idx.dtype != DType::Int32) ctx.fail("indices must be int64 or int32");
  if (x.shape.empty()) ctx.fail("data must have rank >= 1");
  p.axis = normalize_axis(ctx, p.axis, static_cast<int64_t>(x.shape.size()));
  if (const Tensor* it = ctx.const_in(1)) {
    const int64_t dim = x.shape[static_cast<size_t>(p.axis)];
    for (int64_t i : to_int64_vector(*it))
      if (i < -dim || i >= dim) ctx.fail("index " + std::to_string(i) + " is out of range for axis size " + std::to_string(dim));
  }
  Shape out(x.shape.begin(), x.shape.begin() + p.axis);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), x.shape.begin() + p.axis + 1, x.shape.end());
  ctx.set_output(0, x.dtype, out);
}

void reference_Gather(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const int64_t axis = node.p<graph::AxisParams>().axis;
  const Shape& s = in[0].shape;
  const size_t es = dtype_size(in[0].dtype);
  int64_t outer = 1, inner = static_cast<int64_t>(es);
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < axis) outer *= s[static_cast<size_t>(i)];
    if (i > axis) inner *= s[static_cast<size_t>(i)];
  }
  const int64_t dim = s[static_cast<size_t>(axis)];
  const auto idx = to_int64_vector(in[1]);
  const auto* X = in[0].as<const std::byte>();
  auto* Y = out[0].as<std::byte>();
  const int64_t n = static_cast<int64_t>(idx.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n; ++j) {
      int64_t i = idx[static_cast<size_t>(j)];
      if (i < -dim || i >= dim)
        throw Error("node '" + node.name + "' (Gather): index " + std::to_string(i) + " is out of range for axis size " + std::to_string(dim));
      if (i < 0) i += dim;
      std::copy_n(X + (o * dim + i) * inner, inner, Y + (o * n + j) * inner);
    }
}

void infer_Pad(InferContext& ctx) {
  const auto& x = ctx.in(0);
  auto given = ctx.require_ints(1, "pads");
  const size_t rank = x.shape.size();
  std::vector<int64_t> pads = given;
  if (ctx.has_input(3)) {  // opset 18: the amounts apply to these axes only
    auto axes = ctx.require_ints(3, "axes");
    if (given.size() != 2 * axes.size())
      ctx.fail("pads has " + std::to_string(given.size()) + " values for " + std::to_string(axes.size()) + " axes, expected " +
               std::to_string(2 * axes.size()));
    pads.assign(2 * rank, 0);
    std::vector<bool> seen(rank, false);
    for (size_t i = 0; i < axes.size(); ++i) {
      const auto d = static_cast<size_t>(normalize_axis(ctx, axes[i], static_cast<int64_t>(rank)));
      if (seen[d]) ctx.fail("axes names axis " + std::to_string(d) + " twice");
      seen[d] = true;
      pads[d] = given[i];
      pads[d + rank] = given[i + axes.size()];
    }
  }
  if (pads.size() != 2 * rank) ctx.fail("pads has " + std::to_string(pads.size()) + " values, expected " + std::to_string(2 * rank));
  ctx.node().p<graph::PadParams>().pads = pads;
  if (ctx.has_input(2) && ctx.in(2).dtype != x.dtype) ctx.fail("constant_value must have the data's dtype");
  const std::string& mode = ctx.node().p<graph::PadParams>().mode;
  Shape out = x.shape;
  for (size_t i = 0; i < rank; ++i) {
    // Each side on its own, and the sum without overflow: pads of INT64_MIN on both sides wrapped
    // to the input's size (a reflect pad of them then never ended).
    const int64_t lo = pads[i], hi = pads[i + rank];
    int64_t t = 0;
    if (lo < -x.shape[i] || hi < -x.shape[i])
      ctx.fail("pads " + ints_str(pads) + " crop more than the input " + shape_str(x.shape) + " has");
    if (__builtin_add_overflow(x.shape[i], lo, &t) || __builtin_add_overflow(t, hi, &out[i]))
      ctx.fail("pads " + ints_str(pads) + " are too large: axis " + std::to_string(i) + " of " + shape_str(x.shape) +
               " would have more than 2^63 entries");
    if (out[i] < 0) ctx.fail("pads " + ints_str(pads) + " crop more than the input " + shape_str(x.shape) + " has");
    if (mode != "constant" && x.shape[i] == 0 && out[i] > 0) ctx.fail("cannot " + mode + "-pad an empty dimension");
    if (mode == "reflect" && (pads[i] >= x.shape[i] || pads[i + rank] >= x.shape[i]) && (pads[i] > 0 || pads[i + rank] > 0))
      ctx.fail("reflect pads must be smaller than the dimension they pad");
  }
  checked_numel(ctx, out);
  ctx.set_output(0, x.dtype, out);
}

void reference_Pad(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const std::string& mode = node.p<graph::PadParams>().mode;
  const Shape& s = in[0].shape;
  const size_t rank = s.size(), es = dtype_size(in[0].dtype);
  const std::vector<int64_t>& pads = node.p<graph::PadParams>().pads;
  std::vector<std::byte> fill(es, std::byte{0});
  if (in.size() > 2 && in[2].data) std::memcpy(fill.data(), in[2].data, es);
  auto st = strides_of(s);
  const Shape& os = out[0].shape;
  const int64_t total = out[0].numel();
  std::vector<int64_t> idx(rank, 0);
  const auto* X = in[0].as<const std::byte>();
  auto* Y = out[0].as<std::byte>();
  for (int64_t o = 0; o < total; ++o) {
    int64_t src = 0;
    bool inside = true;
    for (size_t d = 0; d < rank; ++d) {
      int64_t i = idx[d] - pads[d];
      const int64_t n = s[d];
      if (i < 0 || i >= n) {
        if (mode == "constant") inside = false;
        else if (mode == "edge") i = std::clamp(i, int64_t{0}, n - 1);
        else {  // reflect, without repeating the edge
          while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
        }
      }
      src += i * st[d];
    }
    std::memcpy(Y + o * static_cast<int64_t>(es), inside ? X + src * static_cast<int64_t>(es) : fill.data(), es);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < os[d]) break;
      idx[d] = 0;
    }
  }
}

void infer_Constant(InferContext& ctx) {
  const Tensor& v = ctx.node().p<graph::ConstantParams>().value;
  ctx.set_output(0, v.dtype(), v.shape());
}
void reference_Constant(const graph::Node& node, std::span<const TensorView>, std::span<TensorView> out) {
  const Tensor& v = node.p<graph::ConstantParams>().value;
  std::memcpy(out[0].data, v.raw(), v.nbytes());
}

void infer_ConstantOfShape(InferContext& ctx) {
  auto shape = ctx.require_ints(0, "shape");
  checked_numel(ctx, shape);
  ctx.set_output(0, ctx.node().p<graph::ConstantParams>().value.dtype(), shape);
}
void reference_ConstantOfShape(const graph::Node& node, std::span<const TensorView>, std::span<TensorView> out) {
  const Tensor& v = node.p<graph::ConstantParams>().value;
  const size_t es = dtype_size(v.dtype());
  for (int64_t i = 0; i < out[0].numel(); ++i) std::memcpy(out[0].as<std::byte>() + i * static_cast<int64_t>(es), v.raw(), es);
}

// Range(start, limit, delta): its length depends on the values, so they must be constants (an
// exporter's Range over a shape folds away once the input shapes are known).
void infer_Range(InferContext& ctx) {
  const DType t = ctx.in(0).dtype;
  if (t == DType::Bool || t == DType::Undefined) ctx.fail("start must be a number, got " + std::string(dtype_name(t)));
  double v[3];
  const char* what[3] = {"start", "limit", "delta"};
  for (size_t i = 0; i < 3; ++i) {
    const Tensor& c = ctx.require_const(i, what[i]);
    if (c.dtype() != t) ctx.fail(std::string(what[i]) + " has dtype " + dtype_name(c.dtype()) + ", start has " + dtype_name(t));
    if (c.numel() != 1 || !c.shape().empty()) ctx.fail(std::string(what[i]) + " must be a scalar, got shape " + shape_str(c.shape()));
    dispatch_numeric(t, [&](auto tag) { v[i] = static_cast<double>(c.data<decltype(tag)>()[0]); });
  }
  if (v[2] == 0 || !std::isfinite(v[0]) || !std::isfinite(v[1]) || !std::isfinite(v[2]))
    ctx.fail("start, limit and delta must be finite and delta non-zero (got " + std::to_string(v[0]) + ", " +
             std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")");
  const double n = std::max(std::ceil((v[1] - v[0]) / v[2]), 0.0);
  if (n > 1e12) ctx.fail("the range has more than 10^12 elements; check start, limit and delta");
  const Shape out{static_cast<int64_t>(n)};
  checked_numel(ctx, out);
  ctx.set_output(0, t, out);
}
void reference_Range(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  dispatch_numeric(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T start = in[0].as<const T>()[0], delta = in[2].as<const T>()[0];
      for (int64_t i = 0; i < out[0].numel(); ++i) out[0].as<T>()[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    }
  });
}

}  // namespace sluice::ops
