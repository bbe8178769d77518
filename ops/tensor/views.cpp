// Ops that only change the shape (the bytes are the same): Reshape, Flatten, Squeeze,
// Unsqueeze, Identity, Dropout. The planner usually makes the output share the
// input's buffer; the kernel copies only when it does not. Also Shape.
#include <algorithm>
#include <cstring>

#include "ops/util.h"

namespace sluice::ops {

namespace {

void copy_bytes(std::span<const TensorView> in, std::span<TensorView> out) {
  if (out[0].data != in[0].data)
    std::memcpy(out[0].data, in[0].data, static_cast<size_t>(in[0].numel()) * dtype_size(in[0].dtype));
}

// Axes from input 1 (opset >= 13) or the attribute.
std::vector<int64_t> axes_of(InferContext& ctx, const graph::AxesParams& p, bool& given) {
  given = p.has_axes;
  if (ctx.has_input(1)) {
    given = true;
    return ctx.require_ints(1, "axes");
  }
  return p.axes;
}

}  // namespace

void infer_Reshape(InferContext& ctx) {
  const auto& x = ctx.in(0);
  const bool allowzero = ctx.node().p<graph::ReshapeParams>().allowzero;
  std::vector<int64_t> target = ctx.require_ints(1, "shape");
  int64_t known = 1, infer_at = -1;
  const int64_t total = checked_numel(ctx, x.shape);
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t& d = target[i];
    if (d == 0 && !allowzero) {
      if (i >= x.shape.size()) ctx.fail("shape " + ints_str(target) + ": 0 at position " + std::to_string(i) + " has no input dim to copy");
      d = x.shape[i];
    }
    if (d == -1) {
      if (infer_at >= 0) ctx.fail("shape " + ints_str(target) + " has more than one -1");
      infer_at = static_cast<int64_t>(i);
      continue;
    }
    if (d < 0) ctx.fail("shape " + ints_str(target) + " has a negative dimension");
  }
  // The product of the given dimensions, 0 if one is 0 ([2^20, 2^21, 0] is empty, not too large).
  Shape given;
  for (size_t i = 0; i < target.size(); ++i)
    if (static_cast<int64_t>(i) != infer_at) given.push_back(target[i]);
  known = checked_numel(ctx, given);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0)
      ctx.fail("cannot reshape " + shape_str(x.shape) + " (" + std::to_string(total) + " elements) to " + shape_str(target));
    target[static_cast<size_t>(infer_at)] = total / known;
  } else if (known != total) {
    ctx.fail("cannot reshape " + shape_str(x.shape) + " (" + std::to_string(total) + " elements) to " + shape_str(target) +
             " (" + std::to_string(known) + " elements)");
  }
  ctx.set_output(0, x.dtype, target);
}

void infer_Flatten(InferContext& ctx) {
  const auto& x = ctx.in(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  int64_t axis = ctx.node().p<graph::AxisParams>().axis;
  if (axis < -rank || axis > rank) ctx.fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  if (axis < 0) axis += rank;
  int64_t a = 1, b = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? a : b) *= x.shape[static_cast<size_t>(i)];
  ctx.set_output(0, x.dtype, {a, b});
}

void infer_Squeeze(InferContext& ctx) {
  const auto& x = ctx.in(0);
  bool given = false;
  auto axes = axes_of(ctx, ctx.node().p<graph::AxesParams>(), given);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<bool> drop(x.shape.size(), false);
  if (!given || axes.empty()) {
    for (size_t i = 0; i < x.shape.size(); ++i) drop[i] = x.shape[i] == 1;
  } else {
    for (int64_t a : axes) {
      a = normalize_axis(ctx, a, rank);
      if (x.shape[static_cast<size_t>(a)] != 1)
        ctx.fail("cannot squeeze axis " + std::to_string(a) + " of shape " + shape_str(x.shape) + ": its size is not 1");
      drop[static_cast<size_t>(a)] = true;
    }
  }
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i)
    if (!drop[i]) out.push_back(x.shape[i]);
  ctx.set_output(0, x.dtype, out);
}

void infer_Unsqueeze(InferContext& ctx) {
  const auto& x = ctx.in(0);
  bool given = false;
  auto axes = axes_of(ctx, ctx.node().p<graph::AxesParams>(), given);
  if (!given || axes.empty()) ctx.fail("axes are required");
  const int64_t rank = static_cast<int64_t>(x.shape.size() + axes.size());
  std::vector<bool> inserted(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    a = normalize_axis(ctx, a, rank);
    if (inserted[static_cast<size_t>(a)]) ctx.fail("axis " + std::to_string(a) + " is repeated");
    inserted[static_cast<size_t>(a)] = true;
  }
  Shape out;
  size_t j = 0;
  for (int64_t i = 0; i < rank; ++i) out.push_back(inserted[static_cast<size_t>(i)] ? 1 : x.shape[j++]);
  ctx.set_output(0, x.dtype, out);
}

void infer_Identity(InferContext& ctx) { ctx.set_output(0, ctx.in(0).dtype, ctx.in(0).shape); }

// An If is replaced by its taken branch in passes::fold_constants, before any shape is
// inferred past it: one that gets here was not.
void infer_If(InferContext& ctx) { ctx.fail("internal error: an If reached shape inference with its branches unresolved"); }

void infer_Dropout(InferContext& ctx) {
  if (ctx.has_input(2)) {
    const Tensor& training = ctx.require_const(2, "training_mode");
    if (training.dtype() != DType::Bool || training.numel() != 1) ctx.fail("training_mode must be one bool");
    if (training.data<bool>()[0]) ctx.fail("training_mode=true is not supported: Sluice runs inference only");
  }
  ctx.set_output(0, ctx.in(0).dtype, ctx.in(0).shape);
  // The mask: bool from opset 10, the data's type before (a float mask at opsets 7-9).
  const int64_t opset = ctx.graph().opset;
  ctx.set_output(1, opset > 0 && opset < 10 ? ctx.in(0).dtype : DType::Bool, ctx.in(0).shape);
}

void reference_Reshape(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { copy_bytes(in, out); }
void reference_Flatten(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { copy_bytes(in, out); }
void reference_Squeeze(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { copy_bytes(in, out); }
void reference_Unsqueeze(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { copy_bytes(in, out); }
void reference_Identity(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) { copy_bytes(in, out); }
void reference_If(const graph::Node& node, std::span<const TensorView>, std::span<TensorView>) {
  throw Error("internal error: If '" + node.name + "' reached a kernel with its branches unresolved");
}
void reference_Dropout(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  copy_bytes(in, out);
  // Every element kept at inference: true, or 1 in the data's type (opsets 7-9), as ONNX's
  // reference implementation gives. (ONNX Runtime 1.20 gives false and 0.)
  if (out.size() < 2 || !out[1].data) return;
  switch (out[1].dtype) {
    case DType::Bool: std::fill_n(out[1].as<bool>(), out[1].numel(), true); break;
    case DType::Float32: std::fill_n(out[1].as<float>(), out[1].numel(), 1.f); break;
    case DType::Float64: std::fill_n(out[1].as<double>(), out[1].numel(), 1.0); break;
    default: throw Error(std::string("Dropout: a mask of type ") + dtype_name(out[1].dtype) + " is not supported");
  }
}

void infer_Shape(InferContext& ctx) {
  const auto& p = ctx.node().p<graph::ShapeParams>();
  const int64_t rank = static_cast<int64_t>(ctx.in(0).shape.size());
  auto clampi = [&](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  const int64_t n = std::max<int64_t>(0, clampi(p.end) - clampi(p.start));
  ctx.set_output(0, DType::Int64, {n});
}

void reference_Shape(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::ShapeParams>();
  const int64_t rank = static_cast<int64_t>(in[0].shape.size());
  int64_t start = p.start < 0 ? p.start + rank : p.start;
  start = std::clamp(start, int64_t{0}, rank);
  for (int64_t i = 0; i < out[0].numel(); ++i) out[0].as<int64_t>()[i] = in[0].shape[static_cast<size_t>(start + i)];
}

// Size: the element count, an int64 scalar. Like Shape it reads only the input's shape, so
// constant folding computes it whenever that shape is known.
void infer_Size(InferContext& ctx) {
  (void)ctx.in(0);
  ctx.set_output(0, DType::Int64, {});
}

void reference_Size(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  out[0].as<int64_t>()[0] = in[0].numel();
}

}  // namespace sluice::ops
