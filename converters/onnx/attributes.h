// ONNX attributes -> typed graph::Params, parsed once per node.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

#include "graph/graph.h"

namespace sluice::converters::onnx {

// ONNX element type -> DType; fails naming `where` for types Sluice does not support.
DType dtype_from_onnx(int32_t onnx_type, const std::string& where);
// widen_half: a FLOAT16 or BFLOAT16 tensor comes back as float32 (exactly: every half value is a
// float), for constants that the graph only casts to float.
Tensor tensor_from_proto(const ::ONNX_NAMESPACE::TensorProto& tp, const std::string& where, const std::string& base_dir,
                         bool widen_half = false);

class AttributeReader {
 public:
  AttributeReader(const ::ONNX_NAMESPACE::NodeProto& node, std::string where);
  bool has(const char* name) const;
  int64_t i(const char* name, int64_t dflt) const;
  // A 0/1 attribute (largest, keepdims, transA, ...): any other value is refused, naming it.
  bool flag(const char* name, bool dflt) const;
  float f(const char* name, float dflt) const;
  std::string s(const char* name, const std::string& dflt) const;
  std::vector<int64_t> ints(const char* name) const;  // empty when absent
  const ::ONNX_NAMESPACE::AttributeProto* get(const char* name) const;
  [[noreturn]] void fail(const std::string& what) const;
  const std::string& where() const { return where_; }

 private:
  const ::ONNX_NAMESPACE::AttributeProto* typed(const char* name, int type) const;
  const ::ONNX_NAMESPACE::NodeProto& node_;
  std::string where_;
};

graph::Params parse_params(graph::OpType op, const AttributeReader& a, int64_t opset, const std::string& base_dir);

}  // namespace sluice::converters::onnx
