// Unstructured-sparse Gemm (design.md §7): Y = act(A * W^T + bias) with W [N_out, K] held in
// CSR (the non-zeros of each output row, with their column). At batch 1 a fully connected layer
// is a matrix-vector product bound by reading W, so reading only the non-zeros and their
// indices is where the time goes; rows are split over threads, and the x values of 16
// non-zeros (AVX-512) or 8 (AVX2) at a time are gathered into one vector.
#include <algorithm>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef __AVX512F__
// GCC 12 flags the _mm512_undefined_* inside its own gather and reduce intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "ops/kernel.h"
#include "ops/sparse/sparse.h"

namespace sluice::ops {

namespace {

class SparseGemm final : public Kernel {
 public:
  // Y[rows, nout] = act(A[rows, k] * W + bias), W stored [nout, k] (trans_b) or [k, nout].
  SparseGemm(int64_t rows, int64_t k, int64_t nout, const float* B, bool trans_b, std::vector<float> bias,
             const graph::FusedActivation& act)
      : act_(act), rows_(rows), k_(k), nout_(nout), bias_(std::move(bias)) {
    row_.assign(1, 0);
    for (int64_t o = 0; o < nout_; ++o) {
      for (int64_t kk = 0; kk < k_; ++kk) {
        const float w = trans_b ? B[o * k_ + kk] : B[kk * nout_ + o];
        if (w == 0.f) continue;
        col_.push_back(static_cast<int32_t>(kk));
        val_.push_back(w);
      }
      row_.push_back(static_cast<int64_t>(val_.size()));
    }
  }

  void run(const KernelArgs& a) const override {
    const float* A = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(val_.size()) * rows_ > 32768)
    for (int64_t o = 0; o < nout_; ++o) {
      const int64_t k0 = row_[static_cast<size_t>(o)], k1 = row_[static_cast<size_t>(o) + 1];
      for (int64_t r = 0; r < rows_; ++r) {
        const float* x = A + r * k_;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;  // four chains hide the add latency
        int64_t k = k0;
#ifdef __AVX512F__
        // 16 non-zeros at a time: their x gathered by column into one vector.
        if (k1 - k0 >= 32) {
          __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
          for (; k + 31 < k1; k += 32) {
            const __m512i c0 = _mm512_loadu_si512(col_.data() + k), c1 = _mm512_loadu_si512(col_.data() + k + 16);
            v0 = _mm512_fmadd_ps(_mm512_loadu_ps(val_.data() + k), _mm512_i32gather_ps(c0, x, 4), v0);
            v1 = _mm512_fmadd_ps(_mm512_loadu_ps(val_.data() + k + 16), _mm512_i32gather_ps(c1, x, 4), v1);
          }
          s0 = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
        }
#elif defined(__AVX2__)
        // 8 non-zeros at a time, two vectors in flight.
        if (k1 - k0 >= 16) {
          __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
          for (; k + 15 < k1; k += 16) {
            const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col_.data() + k));
            const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col_.data() + k + 8));
            v0 = _mm256_fmadd_ps(_mm256_loadu_ps(val_.data() + k), _mm256_i32gather_ps(x, c0, 4), v0);
            v1 = _mm256_fmadd_ps(_mm256_loadu_ps(val_.data() + k + 8), _mm256_i32gather_ps(x, c1, 4), v1);
          }
          const __m256 v = _mm256_add_ps(v0, v1);
          __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
          h = _mm_add_ps(h, _mm_movehl_ps(h, h));
          s0 = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
        }
#endif
        for (; k + 3 < k1; k += 4) {
          s0 += val_[static_cast<size_t>(k)] * x[col_[static_cast<size_t>(k)]];
          s1 += val_[static_cast<size_t>(k) + 1] * x[col_[static_cast<size_t>(k) + 1]];
          s2 += val_[static_cast<size_t>(k) + 2] * x[col_[static_cast<size_t>(k) + 2]];
          s3 += val_[static_cast<size_t>(k) + 3] * x[col_[static_cast<size_t>(k) + 3]];
        }
        for (; k < k1; ++k) s0 += val_[static_cast<size_t>(k)] * x[col_[static_cast<size_t>(k)]];
        Y[r * nout_ + o] = graph::apply_activation(act_, (s0 + s1) + (s2 + s3) + bias_[static_cast<size_t>(o)]);
      }
    }
  }
  std::string name() const override {
    char buf[48];
    std::snprintf(buf, sizeof buf, "sparse:csr(%.0f%% zeros)",
                  100.0 * (1.0 - static_cast<double>(val_.size()) / static_cast<double>(nout_ * k_)));
    return buf;
  }
  int64_t executed_macs() const override { return rows_ * static_cast<int64_t>(val_.size()); }

 private:
  graph::FusedActivation act_;
  int64_t rows_, k_, nout_;
  std::vector<float> bias_;
  std::vector<int64_t> row_;
  std::vector<int32_t> col_;
  std::vector<float> val_;
};

}  // namespace

std::unique_ptr<Kernel> make_sparse_gemm(const graph::Graph& g, const graph::Node& n) {
  const auto& p = n.p<graph::GemmParams>();
  const graph::Value& b = g.value(n.inputs[1]);
  if (p.trans_a || p.alpha != 1.f || !b.is_constant() || b.dtype != DType::Float32 || b.shape.size() != 2) return nullptr;
  if (g.value(n.inputs[0]).shape.size() != 2 || b.constant.numel() >= (int64_t{1} << 31)) return nullptr;
  if (n.inputs.size() > 2 && n.inputs[2] != graph::kNoValue) {
    const auto& c = g.value(n.inputs[2]);
    if (p.beta != 1.f || !c.is_constant() || c.constant.numel() != g.value(n.outputs[0]).shape[1]) return nullptr;
  }
  const Shape& a = g.value(n.inputs[0]).shape;
  return std::make_unique<SparseGemm>(a[0], a[1], g.value(n.outputs[0]).shape[1], b.constant.data<float>(), p.trans_b,
                                      constant_or_zeros(g, n, 2, g.value(n.outputs[0]).shape[1]), p.activation);
}

std::unique_ptr<Kernel> make_sparse_matmul(const graph::Graph& g, const graph::Node& n) {
  const graph::Value& a = g.value(n.inputs[0]);
  const graph::Value& b = g.value(n.inputs[1]);
  if (n.layout != graph::Layout::NCHW || a.dtype != DType::Float32 || !b.is_constant() || b.dtype != DType::Float32 ||
      a.shape.size() < 2 || b.shape.size() != 2 || a.shape.back() != b.shape[0] || b.constant.numel() >= (int64_t{1} << 31))
    return nullptr;
  int64_t rows = 1;  // A [..., K] as [rows, K]: a Linear layer exported as MatMul
  for (size_t d = 0; d + 1 < a.shape.size(); ++d) rows *= a.shape[d];
  return std::make_unique<SparseGemm>(rows, b.shape[0], b.shape[1], b.constant.data<float>(), false,
                                      std::vector<float>(static_cast<size_t>(b.shape[1]), 0.f), graph::FusedActivation{});
}

namespace {

// The dense kernel, or the measured faster of it and the sparse one (weights >= kMinSparsity zero).
std::unique_ptr<Kernel> dense_or_sparse(std::unique_ptr<Kernel> dense, const graph::Graph& g, const graph::Node& n,
                                        SparseMode sparse,
                                        std::unique_ptr<Kernel> (*make_sparse)(const graph::Graph&, const graph::Node&)) {
  if (sparse == SparseMode::Off || !dense) return dense;
  const double zeros = zero_fraction(g.value(n.inputs[1]).constant);
  if (zeros < kMinSparsity && sparse != SparseMode::Always) return dense;
  // A few rows (a classifier at batch 1): the layer streams its weights, which in a model's run
  // come from memory, not from the cache the timing ran in. With at least 3/4 of them zero the
  // sparse kernel reads less than half the bytes (a value and an index per non-zero) and wins
  // ties: ResNet-18's fc at 90% zeros timed 0.010 ms either way, and took 0.018 ms sparse
  // against 0.057 dense in the model on 2 threads.
  const Tensor& b = g.value(n.inputs[1]).constant;
  const Shape& bs = b.shape();
  const int64_t k = bs.size() < 2 ? 0 : n.op == graph::OpType::Gemm && n.p<graph::GemmParams>().trans_b ? bs[1] : bs[bs.size() - 2];
  const int64_t rows = k > 0 ? TensorView{DType::Float32, g.value(n.inputs[0]).shape, nullptr}.numel() / k : 0;
  const bool streams = rows > 0 && rows <= 8 && zeros >= 0.75;
  return choose_measured(std::move(dense), make_sparse(g, n), sparse, zeros, g, n, -1, -1, streams ? 1.1 : 0.9);
}

}  // namespace

std::unique_ptr<Kernel> make_gemm(const graph::Graph& g, const graph::Node& n, SparseMode sparse) {
  return dense_or_sparse(make_onednn_gemm(g, n), g, n, sparse, make_sparse_gemm);
}

std::unique_ptr<Kernel> make_matmul(const graph::Graph& g, const graph::Node& n, SparseMode sparse) {
  return dense_or_sparse(make_onednn_matmul(g, n), g, n, sparse, make_sparse_matmul);
}

}  // namespace sluice::ops
