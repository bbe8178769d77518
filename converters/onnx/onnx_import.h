// ONNX -> graph::Graph. The only place in Sluice that reads protobuf.
#pragma once

#include <memory>
#include <string>

#include "graph/graph.h"

namespace sluice::converters::onnx {

constexpr int64_t kMinOpset = 7;   // older default-domain opsets are refused
constexpr int64_t kMaxOpset = 21;  // newest default-domain opset whose op semantics we implement (and ORT 1.20 runs)
constexpr int64_t kMaxIrVersion = 10;  // what opsets up to 21 come with (and ORT 1.20 reads)
constexpr int64_t kCheckerOpset = 17;  // newest that Debian's ONNX (1.12) checker knows; see restate_for_checker

// Parses, checks (onnx::checker), runs ONNX shape inference and converts.
// `name` is used in error messages (usually the file path).
std::unique_ptr<graph::Graph> import_file(const std::string& path);
std::unique_ptr<graph::Graph> import_bytes(const void* data, size_t size, const std::string& name);

// Reads a serialized onnx.TensorProto (.pb, as in ONNX's backend test data).
Tensor read_tensor_file(const std::string& path);

}  // namespace sluice::converters::onnx
