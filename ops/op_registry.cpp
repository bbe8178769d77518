#include "ops/op_registry.h"

#include "ops/util.h"

namespace sluice::ops {

namespace {
const OpSchema kSchemas[] = {
#define SLUICE_OP(name) {graph::OpType::name, #name, &infer_##name, &reference_##name},
#include "graph/op_list.inc"
#undef SLUICE_OP
};
}  // namespace

const OpSchema& schema(graph::OpType t) { return kSchemas[static_cast<int>(t)]; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const graph::Value& InferContext::in(size_t i) const {
  if (!has_input(i)) fail("input " + std::to_string(i) + " is required but missing");
  return g_.value(g_.node(id_).inputs[i]);
}

const Tensor* InferContext::const_in(size_t i) const {
  if (!has_input(i)) return nullptr;
  const graph::Value& v = in(i);
  return v.is_constant() ? &v.constant : nullptr;
}

const Tensor& InferContext::require_const(size_t i, const char* what) const {
  const Tensor* t = const_in(i);
  if (t) return *t;
  const bool small_int = has_input(i) && (in(i).dtype == DType::Int64 || in(i).dtype == DType::Int32 ||
                                          in(i).dtype == DType::Bool);
  if (has_input(i) && in(i).is_input && small_int && in(i).shape_known) {
    int64_t n = 1;
    for (int64_t d : in(i).shape) n = d > 64 || n * d > 64 ? 65 : n * d;  // (capped: no overflow)
    if (n > 64)  // (runtime/session.cpp, specialise_on_value: a plan per value of up to 64 entries)
      fail(std::string("input ") + std::to_string(i) + " ('" + in(i).name + "', the " + what + ") is the model input '" +
           in(i).name + "' of more than 64 entries: its value would set this node's output shape, and plans are "
           "made for such values of up to 64 entries; make it a constant (an initializer) in the model");
  }
  if (has_input(i) && in(i).is_input && small_int)
    fail(std::string("input ") + std::to_string(i) + " ('" + in(i).name + "', the " + what + ") is the model input '" +
         in(i).name + "': its value sets this node's output shape, so a plan is made for the value given (run() "
         "takes it from its inputs; `sluice inspect` needs it as --input " + in(i).name + "=FILE.npy)");
  fail(std::string("input ") + std::to_string(i) + " ('" + (has_input(i) ? in(i).name : std::string("?")) + "', the " +
       what + ") must be a constant (an initializer, or computable from the input shapes and the values of integer "
       "model inputs); Sluice does not support output shapes that depend on other data");
  return *t;
}

std::vector<int64_t> InferContext::require_ints(size_t i, const char* what) const {
  const Tensor& t = require_const(i, what);
  if ((t.dtype() != DType::Int64 && t.dtype() != DType::Int32) || t.shape().size() > 1)
    fail(std::string("input ") + std::to_string(i) + " ('" + in(i).name + "', the " + what + ") must be a 1-D int64 or int32 " +
         "tensor, got " + dtype_name(t.dtype()) + " of shape " + shape_str(t.shape()));
  return to_int64_vector(t);
}

namespace {
std::string float32_hint(DType got) {
  return got == DType::Float64 ? " (this op runs in float32: export the model in float32, e.g. model.float() before "
                                 "torch.onnx.export, or Cast the value to float32 in the graph)"
                               : "";
}
}  // namespace

std::string need_float32(const std::string& what, DType got) {
  return what + " must be float32, got " + dtype_name(got) + float32_hint(got);
}

void InferContext::expect_input(size_t i, DType dtype, int rank) const {
  const graph::Value& v = in(i);
  if (dtype != DType::Undefined && v.dtype != dtype)
    fail("input " + std::to_string(i) + " ('" + v.name + "') has dtype " + dtype_name(v.dtype) + ", expected " +
         dtype_name(dtype) + (dtype == DType::Float32 ? float32_hint(v.dtype) : ""));
  if (rank >= 0 && static_cast<int>(v.shape.size()) != rank)
    fail("input " + std::to_string(i) + " ('" + v.name + "') has shape " + shape_str(v.shape) + ", expected rank " +
         std::to_string(rank));
}

void InferContext::set_output(size_t i, DType dtype, Shape shape) {
  graph::Node& n = g_.node(id_);
  if (i >= n.outputs.size() || n.outputs[i] == graph::kNoValue) return;  // optional output not used
  graph::Value& v = g_.value(n.outputs[i]);
  // A graph output comes in with the type the file declares (ONNX's own shape inference,
  // which compares them, does not run above opset 17).
  if (v.is_output && v.dtype != DType::Undefined && v.dtype != dtype)
    fail("graph output '" + v.name + "' is declared " + dtype_name(v.dtype) + " in the model, but this node computes " +
         dtype_name(dtype));
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.shape_known = true;
  for (int64_t d : v.shape)
    if (d < 0) fail("inferred a negative dimension for output '" + v.name + "': " + shape_str(v.shape));
}

}  // namespace sluice::ops
