// Fast float32 elementwise kernels: Add/Sub/Mul/Div of equal shapes (or with a scalar) and
// the common activations, split over threads in cache-sized chunks and vectorised by the
// compiler. Elementwise work does not care about the memory layout, so they serve NCHW and
// NHWC steps alike. Other shapes and dtypes fall back to the reference kernels.
#include <algorithm>
#include <cmath>

#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

constexpr int64_t kChunk = 16384;  // floats per task: 64 KiB, a few per core's L2

template <class F>
void parallel_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

enum class Bin { Add, Sub, Mul, Div };

class Binary final : public Kernel {
 public:
  Binary(Bin op, bool scalar_b, bool scalar_a) : op_(op), scalar_b_(scalar_b), scalar_a_(scalar_a) {}
  void run(const KernelArgs& a) const override {
    const float* A = a.in[0].as<const float>();
    const float* B = a.in[1].as<const float>();
    float* Y = a.out[0].as<float>();
    const int64_t n = a.out[0].numel();
    switch (op_) {
      case Bin::Add: apply(A, B, Y, n, [](float x, float y) { return x + y; }); break;
      case Bin::Sub: apply(A, B, Y, n, [](float x, float y) { return x - y; }); break;
      case Bin::Mul: apply(A, B, Y, n, [](float x, float y) { return x * y; }); break;
      case Bin::Div: apply(A, B, Y, n, [](float x, float y) { return x / y; }); break;
    }
  }
  std::string name() const override { return scalar_a_ || scalar_b_ ? "elementwise:scalar" : "elementwise"; }
  int in_place_input() const override { return scalar_a_ ? 1 : 0; }

 private:
  template <class F>
  void apply(const float* A, const float* B, float* Y, int64_t n, F f) const {
    if (scalar_b_) {
      const float b = B[0];
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(A[i], b);
      });
    } else if (scalar_a_) {
      const float x = A[0];
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(x, B[i]);
      });
    } else {
      parallel_chunks(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) Y[i] = f(A[i], B[i]);
      });
    }
  }
  Bin op_;
  bool scalar_b_, scalar_a_;
};

template <class F>
class Unary final : public Kernel {
 public:
  Unary(const char* name, F f) : name_(name), f_(f) {}
  void run(const KernelArgs& a) const override {
    const float* X = a.in[0].as<const float>();
    float* Y = a.out[0].as<float>();
    parallel_chunks(a.out[0].numel(), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) Y[i] = f_(X[i]);
    });
  }
  std::string name() const override { return std::string("elementwise:") + name_; }
  int in_place_input() const override { return 0; }

 private:
  const char* name_;
  F f_;
};

template <class F>
std::unique_ptr<Kernel> unary(const char* name, F f) {
  return std::make_unique<Unary<F>>(name, f);
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

}  // namespace

std::unique_ptr<Kernel> make_fast_elementwise(const graph::Graph& g, const graph::Node& n) {
  using graph::OpType;
  for (graph::ValueId v : n.inputs)
    if (v == graph::kNoValue || g.value(v).dtype != DType::Float32) return nullptr;
  if (n.outputs.size() != 1 || g.value(n.outputs[0]).dtype != DType::Float32) return nullptr;
  const Shape& y = g.value(n.outputs[0]).shape;
  switch (n.op) {
    case OpType::Add: case OpType::Sub: case OpType::Mul: case OpType::Div: {
      if (n.inputs.size() != 2) return nullptr;
      const Shape& a = g.value(n.inputs[0]).shape;
      const Shape& b = g.value(n.inputs[1]).shape;
      const bool sa = numel_of(a) == 1 && a.size() <= y.size(), sb = numel_of(b) == 1 && b.size() <= y.size();
      if (!((a == y || sa) && (b == y || sb)) || (sa && sb)) return nullptr;
      const Bin op = n.op == OpType::Add ? Bin::Add : n.op == OpType::Sub ? Bin::Sub : n.op == OpType::Mul ? Bin::Mul : Bin::Div;
      return std::make_unique<Binary>(op, b != y, a != y);  // the other side is a scalar
    }
    case OpType::Relu:
      return unary("relu", [](float x) { return x < 0.f ? 0.f : x; });  // NaN stays NaN
    case OpType::Sigmoid:
      return unary("sigmoid", [](float x) { return 1.f / (1.f + std::exp(-x)); });
    case OpType::HardSwish:
      return unary("hardswish", [](float x) { return x * std::max(0.f, std::min(1.f, x / 6.f + 0.5f)); });
    case OpType::LeakyRelu: {
      const float alpha = n.p<graph::AlphaBetaParams>().alpha;
      return unary("leakyrelu", [alpha](float x) { return x >= 0.f ? x : alpha * x; });
    }
    case OpType::HardSigmoid: {
      const float alpha = n.p<graph::AlphaBetaParams>().alpha, beta = n.p<graph::AlphaBetaParams>().beta;
      return unary("hardsigmoid", [alpha, beta](float x) { const float v = alpha * x + beta; return v < 0.f ? 0.f : v > 1.f ? 1.f : v; });
    }
    default:
      return nullptr;
  }
}

}  // namespace sluice::ops
