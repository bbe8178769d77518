// Model-local ONNX functions (ModelProto.functions, IR >= 8), inlined at import.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace sluice::converters::onnx {

// Replaces every call of a model-local function in the main graph by the function's body,
// recursively: the body's values are renamed "<call node>/<name>", its inputs and outputs bound
// to the call's (a missing trailing input is absent), and an attribute that refers to the
// function's (ref_attr_name) takes the call's value or else the function's default. Then drops
// the nodes that reach no graph output (function bodies compute values their callers ignore:
// PyTorch's BatchNorm function returns the running statistics too). Returns whether anything
// was inlined; throws Error naming `model_name` and the call on a bad call.
//
// PyTorch's dynamo exporter (torch 2.5) writes BatchNorm, GELU, hardswish and hardtanh as such
// calls, in domain "pkg.onnxscript.torch_lib".
// `calls` counts the inlined calls per "domain.name" (nested ones too).
bool inline_local_functions(::ONNX_NAMESPACE::ModelProto& model, const std::string& model_name,
                            std::map<std::string, int64_t>& calls);

// The names that the nodes of gp (and of the graphs inside them) read from outside gp: what an
// If node reads through its branches, besides its condition.
std::set<std::string> outer_reads(const ::ONNX_NAMESPACE::GraphProto& gp);

}  // namespace sluice::converters::onnx
