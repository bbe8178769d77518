// Gemm and MatMul: shape inference and plain reference kernels.
#include <type_traits>

#include "ops/util.h"

namespace sluice::ops {

namespace {
// Gemm and MatMul run in float32, or in float64 when every operand is (torch exports a Linear
// that reads a double tensor, e.g. behind torch.where(c, 1.0, 0.0), with double weights): the
// reference kernel then, in double.
DType linear_dtype(InferContext& ctx, size_t inputs) {
  int f32 = 0, f64 = 0;
  for (size_t i = 0; i < inputs; ++i) {
    if (!ctx.has_input(i)) continue;
    f32 += ctx.in(i).dtype == DType::Float32;
    f64 += ctx.in(i).dtype == DType::Float64;
  }
  if (f32 && f64) {  // name the odd one out (a float64 one on a tie), and one it should match
    const DType odd = f64 > f32 ? DType::Float32 : DType::Float64, like = odd == DType::Float32 ? DType::Float64 : DType::Float32;
    size_t d = 0, f = 0;
    for (size_t i = 0; i < inputs; ++i)
      if (ctx.has_input(i) && (ctx.in(i).dtype == odd || ctx.in(i).dtype == like)) (ctx.in(i).dtype == odd ? d : f) = i;
    ctx.fail("input " + std::to_string(d) + " ('" + ctx.in(d).name + "') has dtype " + dtype_name(odd) + ", expected " +
             dtype_name(like) + " like input " + std::to_string(f) + " ('" + ctx.in(f).name + "') (" +
             graph::op_name(ctx.node().op) + " runs in float32, or in float64 when every operand is): " +
             (odd == DType::Float64 ? "export the model in float32, e.g. model.float() before torch.onnx.export, or Cast "
                                      "the value to float32 in the graph"
                                    : "Cast the value to float64 in the graph, or export the whole model in float32"));
  }
  const DType t = f64 ? DType::Float64 : DType::Float32;
  for (size_t i = 0; i < inputs; ++i)
    if (ctx.has_input(i)) ctx.expect_input(i, t);  // (an integer operand: named, with the type expected)
  return t;
}
}  // namespace

void infer_Gemm(InferContext& ctx) {
  const auto& p = ctx.node().p<graph::GemmParams>();
  const DType t = linear_dtype(ctx, 3);
  ctx.expect_input(0, t, 2);
  ctx.expect_input(1, t, 2);
  const Shape &a = ctx.in(0).shape, &b = ctx.in(1).shape;
  const int64_t m = p.trans_a ? a[1] : a[0], k = p.trans_a ? a[0] : a[1];
  const int64_t kb = p.trans_b ? b[1] : b[0], n = p.trans_b ? b[0] : b[1];
  if (k != kb)
    ctx.fail("inner dimensions differ: A " + shape_str(a) + (p.trans_a ? " (transposed)" : "") + " and B " +
             shape_str(b) + (p.trans_b ? " (transposed)" : "") + " give K = " + std::to_string(k) + " vs " +
             std::to_string(kb));
  if (ctx.has_input(2)) {
    Shape bc = broadcast_shapes(ctx, ctx.in(2).shape, {m, n});
    if (bc != Shape{m, n}) ctx.fail("C of shape " + shape_str(ctx.in(2).shape) + " does not broadcast to " + shape_str({m, n}));
  }
  ctx.set_output(0, t, {m, n});
}

namespace {
template <class T>
void gemm(const graph::GemmParams& p, std::span<const TensorView> in, const TensorView& y) {
  const TensorView &a = in[0], &b = in[1];
  const int64_t m = y.shape[0], n = y.shape[1], k = p.trans_a ? a.shape[0] : a.shape[1];
  const T *A = a.as<const T>(), *B = b.as<const T>();
  const bool has_c = in.size() > 2 && in[2].data;
  std::vector<int64_t> cs = has_c ? broadcast_strides(in[2].shape, y.shape) : std::vector<int64_t>{0, 0};
  T* Y = y.as<T>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < k; ++t)
        acc += static_cast<double>(p.trans_a ? A[t * m + i] : A[i * k + t]) * (p.trans_b ? B[j * k + t] : B[t * n + j]);
      if constexpr (std::is_same_v<T, float>) {
        float v = p.alpha * static_cast<float>(acc);
        if (has_c) v += p.beta * in[2].as<const float>()[i * cs[0] + j * cs[1]];
        Y[i * n + j] = graph::apply_activation(p.activation, v);
      } else {  // (no fused activation: fuse_activations leaves a float64 Gemm alone)
        double v = static_cast<double>(p.alpha) * acc;
        if (has_c) v += static_cast<double>(p.beta) * in[2].as<const double>()[i * cs[0] + j * cs[1]];
        Y[i * n + j] = v;
      }
    }
}
}  // namespace

void reference_Gemm(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  if (out[0].dtype == DType::Float64)
    gemm<double>(node.p<graph::GemmParams>(), in, out[0]);
  else
    gemm<float>(node.p<graph::GemmParams>(), in, out[0]);
}

namespace {
struct MatMulDims {
  Shape batch;  // broadcast batch dims
  int64_t m, k, n;
  bool a_vec, b_vec;
};

MatMulDims matmul_dims(InferContext* ctx, const Shape& a, const Shape& b) {
  MatMulDims d{};
  if (a.empty() || b.empty()) ctx->fail("MatMul inputs must have rank >= 1");
  d.a_vec = a.size() == 1;
  d.b_vec = b.size() == 1;
  Shape a2 = d.a_vec ? Shape{1, a[0]} : a, b2 = d.b_vec ? Shape{b[0], 1} : b;
  d.m = a2[a2.size() - 2];
  d.k = a2.back();
  d.n = b2.back();
  if (b2[b2.size() - 2] != d.k)
    ctx->fail("inner dimensions differ: " + shape_str(a) + " x " + shape_str(b));
  d.batch = broadcast_shapes(*ctx, Shape(a2.begin(), a2.end() - 2), Shape(b2.begin(), b2.end() - 2));
  return d;
}
}  // namespace

void infer_MatMul(InferContext& ctx) {
  const DType t = linear_dtype(ctx, 2);
  MatMulDims d = matmul_dims(&ctx, ctx.in(0).shape, ctx.in(1).shape);
  Shape out = d.batch;
  if (!d.a_vec) out.push_back(d.m);
  if (!d.b_vec) out.push_back(d.n);
  ctx.set_output(0, t, out);
}

namespace {
template <class T>
void matmul(std::span<const TensorView> in, const TensorView& y_view) {
  const Shape &as = in[0].shape, &bs = in[1].shape;
  Shape a2 = as.size() == 1 ? Shape{1, as[0]} : as, b2 = bs.size() == 1 ? Shape{bs[0], 1} : bs;
  const int64_t m = a2[a2.size() - 2], k = a2.back(), n = b2.back();
  Shape abatch(a2.begin(), a2.end() - 2), bbatch(b2.begin(), b2.end() - 2);
  size_t rank = std::max(abatch.size(), bbatch.size());
  Shape batch(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - abatch.size() ? 1 : abatch[i - (rank - abatch.size())];
    int64_t db = i < rank - bbatch.size() ? 1 : bbatch[i - (rank - bbatch.size())];
    batch[i] = std::max(da, db);
  }
  auto sa = broadcast_strides(abatch, batch), sb = broadcast_strides(bbatch, batch);
  const T *A = in[0].as<const T>(), *B = in[1].as<const T>();
  T* Y = y_view.as<T>();
  if (batch.empty()) batch = {1}, sa = {0}, sb = {0};
  for_each_broadcast(batch, sa, sb, [&](int64_t o, int64_t ia, int64_t ib) {
    const T* a = A + ia * m * k;
    const T* b = B + ib * k * n;
    T* y = Y + o * m * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < k; ++t) acc += static_cast<double>(a[i * k + t]) * b[t * n + j];
        y[i * n + j] = static_cast<T>(acc);
      }
  });
}
}  // namespace

void reference_MatMul(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  if (out[0].dtype == DType::Float64)
    matmul<double>(in, out[0]);
  else
    matmul<float>(in, out[0]);
}

}  // namespace sluice::ops
