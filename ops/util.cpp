#include "ops/util.h"

#include <algorithm>

namespace sluice::ops {

int64_t normalize_axis(InferContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    ctx.fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank) + " (valid: " +
             std::to_string(-rank) + " to " + std::to_string(rank - 1) + ")");
  return axis < 0 ? axis + rank : axis;
}

int64_t normalize_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

Shape broadcast_shapes(InferContext& ctx, const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.fail("shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together (dimension " +
               std::to_string(i) + ": " + std::to_string(da) + " vs " + std::to_string(db) + ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

int64_t checked_numel(InferContext& ctx, const Shape& s) {
  constexpr int64_t kMax = int64_t{1} << 40;
  for (int64_t d : s)
    if (d < 0) ctx.fail("shape " + ints_str(s) + " has a negative dimension");
  if (std::find(s.begin(), s.end(), 0) != s.end()) return 0;  // empty, whatever the other dimensions
  int64_t n = 1;
  for (int64_t d : s) {
    if (n > kMax / d)
      ctx.fail("shape " + shape_str(s) + " is too large (more than 2^40 elements); check the model's shape constants");
    n *= d;
  }
  return n;
}

std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  std::vector<int64_t> own = strides_of(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) s[off + i] = in[i] == 1 ? 0 : own[i];
  return s;
}

namespace {
template <class View>
std::vector<int64_t> ints_of(DType dt, const void* data, int64_t n) {
  std::vector<int64_t> r(static_cast<size_t>(n));
  if (dt == DType::Int64) {
    const auto* p = static_cast<const int64_t*>(data);
    r.assign(p, p + n);
  } else if (dt == DType::Int32) {
    const auto* p = static_cast<const int32_t*>(data);
    for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = p[i];
  } else {
    throw Error(std::string("expected an int64 or int32 tensor, got ") + dtype_name(dt));
  }
  return r;
}
}  // namespace

std::string ints_str(const std::vector<int64_t>& v) {
  std::string r = "[";
  for (size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
  return r + "]";
}

std::vector<int64_t> to_int64_vector(const Tensor& t) { return ints_of<Tensor>(t.dtype(), t.raw(), t.numel()); }
std::vector<int64_t> to_int64_vector(const TensorView& t) { return ints_of<TensorView>(t.dtype, t.data, t.numel()); }

}  // namespace sluice::ops
