// Every op has: a shape/type inference function and a plain reference kernel.
// They are registered explicitly in ops/op_registry.cpp from graph/op_list.inc
// (no self-registering statics: a missing op is a link error, not a silent gap).
#pragma once

#include <span>
#include <string>

#include "graph/graph.h"

namespace sluice::ops {

// A tensor buffer as a kernel sees it: logical shape (NCHW for images) and a
// dense row-major buffer. Reference kernels only ever see Layout::NCHW.
struct TensorView {
  DType dtype = DType::Undefined;
  Shape shape;
  void* data = nullptr;

  int64_t numel() const;
  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

// "<what> must be float32, got <dtype>", and for float64 how to get a float32 model.
std::string need_float32(const std::string& what, DType got);

class InferContext {
 public:
  InferContext(graph::Graph& g, graph::NodeId id) : g_(g), id_(id) {}

  graph::Node& node() { return g_.node(id_); }
  const graph::Graph& graph() const { return g_; }
  size_t num_inputs() const { return g_.node(id_).inputs.size(); }
  size_t num_outputs() const { return g_.node(id_).outputs.size(); }
  bool has_input(size_t i) const {
    return i < num_inputs() && g_.node(id_).inputs[i] != graph::kNoValue;
  }
  // Fails with a clear error when input i is absent.
  const graph::Value& in(size_t i) const;
  // The constant value of input i, or nullptr when it is computed at run time.
  const Tensor* const_in(size_t i) const;
  // Like const_in, but fails with "input i (name) must be a constant" when it is not.
  const Tensor& require_const(size_t i, const char* what) const;
  // require_const for a list of integers (axes, pads, shape, ...): an int64 or int32 tensor of
  // rank 0 or 1, else a failure naming the input.
  std::vector<int64_t> require_ints(size_t i, const char* what) const;
  // Fails unless input i is present, has the given dtype (Undefined: any) and rank (-1: any).
  void expect_input(size_t i, DType dtype, int rank = -1) const;

  void set_output(size_t i, DType dtype, Shape shape);
  [[noreturn]] void fail(const std::string& what) const { g_.fail(id_, what); }

 private:
  graph::Graph& g_;
  graph::NodeId id_;
};

// Infers output dtypes and shapes from input types/shapes (and constant inputs where
// the op needs them, e.g. Reshape's shape). May normalise the node's params (resolve
// auto_pad, fill default kernel_shape). Throws Error naming the node on bad input.
using InferFn = void (*)(InferContext&);
// Computes outputs from inputs; output buffers are pre-allocated with inferred shapes.
using ReferenceFn = void (*)(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out);

struct OpSchema {
  graph::OpType type;
  const char* name;
  InferFn infer;
  ReferenceFn reference;
};

const OpSchema& schema(graph::OpType t);

// Declarations of every op's functions: infer_<Op>, reference_<Op>.
#define SLUICE_OP(name)                  \
  void infer_##name(InferContext& ctx); \
  void reference_##name(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out);
#include "graph/op_list.inc"
#undef SLUICE_OP

}  // namespace sluice::ops
