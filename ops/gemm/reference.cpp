// Gemm and MatMul: shape inference and plain reference kernels.
#include "ops/util.h"

namespace sluice::ops {

void infer_Gemm(InferContext& ctx) {
  const auto& p = ctx.node().p<graph::GemmParams>();
  ctx.expect_input(0, DType::Float32, 2);
  ctx.expect_input(1, DType::Float32, 2);
  const Shape &a = ctx.in(0).shape, &b = ctx.in(1).shape;
  const int64_t m = p.trans_a ? a[1] : a[0], k = p.trans_a ? a[0] : a[1];
  const int64_t kb = p.trans_b ? b[1] : b[0], n = p.trans_b ? b[0] : b[1];
  if (k != kb)
    ctx.fail("inner dimensions differ: A " + shape_str(a) + (p.trans_a ? " (transposed)" : "") + " and B " +
             shape_str(b) + (p.trans_b ? " (transposed)" : "") + " give K = " + std::to_string(k) + " vs " +
             std::to_string(kb));
  if (ctx.has_input(2)) {
    ctx.expect_input(2, DType::Float32);
    Shape bc = broadcast_shapes(ctx, ctx.in(2).shape, {m, n});
    if (bc != Shape{m, n}) ctx.fail("C of shape " + shape_str(ctx.in(2).shape) + " does not broadcast to " + shape_str({m, n}));
  }
  ctx.set_output(0, DType::Float32, {m, n});
}

void reference_Gemm(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::GemmParams>();
  const TensorView &a = in[0], &b = in[1], &y = out[0];
  const int64_t m = y.shape[0], n = y.shape[1], k = p.trans_a ? a.shape[0] : a.shape[1];
  const float *A = a.as<const float>(), *B = b.as<const float>();
  const bool has_c = in.size() > 2 && in[2].data;
  std::vector<int64_t> cs = has_c ? broadcast_strides(in[2].shape, y.shape) : std::vector<int64_t>{0, 0};
  float* Y = y.as<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < k; ++t)
        acc += static_cast<double>(p.trans_a ? A[t * m + i] : A[i * k + t]) * (p.trans_b ? B[j * k + t] : B[t * n + j]);
      float v = p.alpha * static_cast<float>(acc);
      if (has_c) v += p.beta * in[2].as<const float>()[i * cs[0] + j * cs[1]];
      Y[i * n + j] = graph::apply_activation(p.activation, v);
    }
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
  ctx.expect_input(0, DType::Float32);
  ctx.expect_input(1, DType::Float32);
  MatMulDims d = matmul_dims(&ctx, ctx.in(0).shape, ctx.in(1).shape);
  Shape out = d.batch;
  if (!d.a_vec) out.push_back(d.m);
  if (!d.b_vec) out.push_back(d.n);
  ctx.set_output(0, DType::Float32, out);
}

void reference_MatMul(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
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
  const float *A = in[0].as<const float>(), *B = in[1].as<const float>();
  float* Y = out[0].as<float>();
  if (batch.empty()) batch = {1}, sa = {0}, sb = {0};
  for_each_broadcast(batch, sa, sb, [&](int64_t o, int64_t ia, int64_t ib) {
    const float* a = A + ia * m * k;
    const float* b = B + ib * k * n;
    float* y = Y + o * m * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < k; ++t) acc += static_cast<double>(a[i * k + t]) * b[t * n + j];
        y[i * n + j] = static_cast<float>(acc);
      }
  });
}

}  // namespace sluice::ops
