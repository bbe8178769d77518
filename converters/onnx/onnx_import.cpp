#include "converters/onnx/onnx_import.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "converters/onnx/attributes.h"
#include "converters/onnx/inline_functions.h"
#include "runtime/memory_limit.h"

namespace ONNX_NAMESPACE::checker {
// Defined and exported by libonnx 1.12, not declared in its checker.h: the check with a context,
// which carries the folder that external data is relative to.
void check_model(const ModelProto& model, CheckerContext& ctx);
}  // namespace ONNX_NAMESPACE::checker

namespace sluice::converters::onnx {

namespace op = ::ONNX_NAMESPACE;
using graph::Graph;
using graph::Node;
using graph::OpType;
using graph::Value;
using graph::ValueId;

namespace {

constexpr size_t kMaxFileBytes = (size_t{2} << 30) - 1;  // protobuf's own limit: INT_MAX bytes (2 GiB failed inside it)

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (path.empty()) throw Error("no model file given (an empty path)");
  const auto st = std::filesystem::status(path, ec);
  if (ec == std::errc::too_many_symbolic_link_levels)
    throw Error(path + ": a loop of symbolic links, not a file");
  if (!std::filesystem::exists(st)) {
    if (std::filesystem::is_symlink(std::filesystem::symlink_status(path, ec)))
      throw Error(path + ": a symbolic link to a file that does not exist (" +
                  std::filesystem::read_symlink(path, ec).string() + ")");
    throw Error(path + ": file not found");
  }
  if (std::filesystem::is_directory(st)) throw Error(path + ": is a directory, expected an .onnx file");
  // A FIFO may never be written (reading it hung), a device never end: read regular files only.
  if (!std::filesystem::is_regular_file(st))
    throw Error(path + ": is not a regular file (a pipe or a device?); save the model to an .onnx file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file for reading");
  f.seekg(0, std::ios::end);
  auto size = static_cast<size_t>(f.tellg());
  if (size > kMaxFileBytes) throw Error(path + ": file is larger than 2 GiB; use ONNX external data for weights");
  // Read whole, then parsed (about twice its size at once): refused up front past the memory
  // this process may use, naming the limit, rather than as a bad_alloc inside.
  if (const double have = runtime::machine_bytes(); have > 0 && 2.0 * static_cast<double>(size) > have)
    throw Error(path + ": reading this " + runtime::gib(static_cast<double>(size)) + " model takes about twice that, more than " +
                runtime::memory_limit().what);
  f.seekg(0);
  std::string bytes(size, '\0');
  f.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!f) throw Error(path + ": read error");
  return bytes;
}

}  // namespace

DType dtype_from_onnx(int32_t t, const std::string& where) {
  switch (t) {
    case op::TensorProto::FLOAT: return DType::Float32;
    case op::TensorProto::DOUBLE: return DType::Float64;
    case op::TensorProto::INT64: return DType::Int64;
    case op::TensorProto::INT32: return DType::Int32;
    case op::TensorProto::INT8: return DType::Int8;
    case op::TensorProto::UINT8: return DType::UInt8;
    case op::TensorProto::BOOL: return DType::Bool;
    default: break;
  }
  const auto* desc = op::TensorProto::DataType_descriptor()->FindValueByNumber(t);
  throw Error(where + ": element type " + (desc ? desc->name() : std::to_string(t)) +
              " is not supported (Sluice supports float, double, int64, int32, int8, uint8, bool, and float16 or "
              "bfloat16 constants that are only cast to float)");
}


namespace {
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t bits;
  if (e == 0x1F) {
    bits = sign | 0x7F800000u | (m << 13);  // inf, NaN
  } else if (e != 0) {
    bits = sign | ((e + 112) << 23) | (m << 13);
  } else {  // zero or subnormal: m * 2^-24
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A FLOAT16 / BFLOAT16 tensor as float32 (raw_data, or the int32_data that holds each value's bits).
Tensor widened_half(const op::TensorProto& tp, const std::string& where) {
  const bool bf16 = tp.data_type() == op::TensorProto::BFLOAT16;
  Shape shape(tp.dims().begin(), tp.dims().end());
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(where + ": has a negative dimension in its dims");
    if (d != 0 && n > (int64_t{1} << 40) / d) throw Error(where + ": dims " + shape_str(shape) + " are too large");
    n *= d;
  }
  if (tp.data_location() == op::TensorProto::EXTERNAL)
    throw Error(where + ": a 16-bit float tensor in external data is not supported; save the model with its data inside");
  const bool raw = tp.has_raw_data();
  if (raw ? tp.raw_data().size() != static_cast<size_t>(n) * 2 : tp.int32_data_size() != n)
    throw Error(where + ": holds " + std::to_string(raw ? tp.raw_data().size() / 2 : static_cast<size_t>(tp.int32_data_size())) +
                " 16-bit values but its dims " + shape_str(shape) + " need " + std::to_string(n));
  Tensor t(DType::Float32, shape);
  float* dst = t.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    if (raw)
      std::memcpy(&h, tp.raw_data().data() + 2 * i, 2);
    else
      h = static_cast<uint16_t>(tp.int32_data(static_cast<int>(i)));
    if (bf16) {
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(dst + i, &bits, 4);
    } else {
      dst[i] = half_to_float(h);
    }
  }
  return t;
}
}  // namespace

// Converts a TensorProto (raw_data, typed fields, or external data relative to base_dir).
Tensor tensor_from_proto(const op::TensorProto& tp, const std::string& where, const std::string& base_dir,
                         bool widen_half) {
  if (widen_half && (tp.data_type() == op::TensorProto::FLOAT16 || tp.data_type() == op::TensorProto::BFLOAT16))
    return widened_half(tp, where);
  DType dt = dtype_from_onnx(tp.data_type(), where);
  Shape shape(tp.dims().begin(), tp.dims().end());
  for (int64_t d : shape)
    if (d < 0) {
      std::string dims;  // as written (shape_str would show a negative dimension as a dynamic '?')
      for (int64_t e : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(e);
      throw Error(where + ": has a negative dimension in its dims [" + dims + "]");
    }
  // The element count, and whether the data holds that many, before anything is allocated:
  // dims that do not match the data must not turn into a huge allocation.
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > (int64_t{1} << 40) / d)
      throw Error(where + ": dims " + shape_str(shape) + " are too large (more than 2^40 elements)");
    n *= d;
  }
  const size_t need = static_cast<size_t>(n) * dtype_size(dt);
  auto field_size = [&]() -> int64_t {
    switch (dt) {
      case DType::Float32: return tp.float_data_size();
      case DType::Float64: return tp.double_data_size();
      case DType::Int64: return tp.int64_data_size();
      default: return tp.int32_data_size();
    }
  };
  // External data: where it is, and whether the file holds it, also before allocating.
  std::string full;
  int64_t offset = 0;
  if (tp.data_location() == op::TensorProto::EXTERNAL) {
    std::string location;
    int64_t length = -1;
    auto number = [&](const std::string& key, const std::string& text) {
      try {
        size_t used = 0;
        const long long v = std::stoll(text, &used);
        if (used == text.size() && v >= 0) return static_cast<int64_t>(v);
      } catch (const std::exception&) {
      }
      throw Error(where + ": external data " + key + " '" + text + "' is not a non-negative integer");
    };
    for (const auto& kv : tp.external_data()) {
      if (kv.key() == "location") location = kv.value();
      if (kv.key() == "offset") offset = number("offset", kv.value());
      if (kv.key() == "length") length = number("length", kv.value());
    }
    if (base_dir.empty())
      throw Error(where + ": uses external data ('" + location + "'), which needs the model loaded from a file path");
    std::filesystem::path p = std::filesystem::path(location);
    if (location.empty() || p.is_absolute() || location.find("..") != std::string::npos)
      throw Error(where + ": external data location '" + location + "' must be a relative path inside the model's folder");
    full = (std::filesystem::path(base_dir) / p).string();
    std::error_code ec;
    const auto file_bytes = std::filesystem::file_size(full, ec);
    if (ec || !std::filesystem::is_regular_file(full, ec))
      throw Error(where + ": external data file '" + full + "' cannot be opened");
    // Symlinks resolved: the data must really lie inside the model's folder.
    const std::string dir = std::filesystem::canonical(base_dir, ec).string() + "/";
    const std::string real = std::filesystem::canonical(full, ec).string();
    if (ec || real.compare(0, dir.size(), dir) != 0)
      throw Error(where + ": external data file '" + full + "' resolves to '" + real +
                  "', outside the model's folder; copy the data next to the model");
    if (length >= 0 && static_cast<size_t>(length) != need)
      throw Error(where + ": external data length " + std::to_string(length) + " bytes does not match dims " +
                  shape_str(shape) + " (" + std::to_string(need) + " bytes)");
    if (static_cast<uintmax_t>(offset) > file_bytes || file_bytes - static_cast<uintmax_t>(offset) < need)
      throw Error(where + ": external data file '" + full + "' (" + std::to_string(file_bytes) +
                  " bytes) is shorter than offset " + std::to_string(offset) + " + the tensor's " + std::to_string(need) +
                  " bytes");
  } else if (tp.has_raw_data() && tp.raw_data().size() != need) {
    throw Error(where + ": raw_data has " + std::to_string(tp.raw_data().size()) + " bytes but its dims " +
                shape_str(shape) + " need " + std::to_string(need) + " (" + std::to_string(n) + " elements of " +
                std::to_string(dtype_size(dt)) + " bytes)");
  } else if (!tp.has_raw_data() && field_size() != n) {
    throw Error(where + ": holds " + std::to_string(field_size()) + " elements of data but its dims " +
                shape_str(shape) + " need " + std::to_string(n));
  }
  Tensor t;
  try {
    t = Tensor(dt, shape);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  if (!full.empty()) {
    std::ifstream f(full, std::ios::binary);
    f.seekg(offset);
    f.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(need));
    if (!f || static_cast<size_t>(f.gcount()) != need)
      throw Error(where + ": external data file '" + full + "' is shorter than the tensor's " + std::to_string(need) + " bytes");
    return t;
  }
  if (tp.has_raw_data()) {
    std::memcpy(t.raw(), tp.raw_data().data(), need);
    return t;
  }
  auto copy_field = [&](const auto& field, auto cast_to) {  // its size was checked above (field_size)
    using Dst = decltype(cast_to);
    Dst* dst = static_cast<Dst*>(t.raw());
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(field.Get(static_cast<int>(i)));
  };
  switch (dt) {
    case DType::Float32: copy_field(tp.float_data(), float{}); break;
    case DType::Float64: copy_field(tp.double_data(), double{}); break;
    case DType::Int64: copy_field(tp.int64_data(), int64_t{}); break;
    case DType::Int32: copy_field(tp.int32_data(), int32_t{}); break;
    case DType::Int8: copy_field(tp.int32_data(), int8_t{}); break;
    case DType::UInt8: copy_field(tp.int32_data(), uint8_t{}); break;
    case DType::Bool: copy_field(tp.int32_data(), bool{}); break;
    default: throw Error(where + ": unsupported element type");
  }
  return t;
}

namespace {

// Every node of gp and of the graphs in its nodes' attributes (If branches), with its index in
// its own graph.
void for_each_node(const op::GraphProto& gp, const std::function<void(const op::NodeProto&, int)>& fn) {
  for (int i = 0; i < gp.node_size(); ++i) {
    fn(gp.node(i), i);
    for (const auto& a : gp.node(i).attribute())
      if (a.type() == op::AttributeProto::GRAPH) for_each_node(a.g(), fn);
  }
}

void for_each_node_mut(op::GraphProto& gp, const std::function<void(op::NodeProto&, int)>& fn) {
  for (int i = 0; i < gp.node_size(); ++i) {
    fn(*gp.mutable_node(i), i);
    for (auto& a : *gp.mutable_node(i)->mutable_attribute())
      if (a.type() == op::AttributeProto::GRAPH) for_each_node_mut(*a.mutable_g(), fn);
  }
}

// A node's inputs and, for an If, the outer values its branches read, in a fixed order.
std::vector<std::string> all_reads(const op::NodeProto& n) {
  std::vector<std::string> r(n.input().begin(), n.input().end());
  std::set<std::string> implicit;
  for (const auto& a : n.attribute())
    if (a.type() == op::AttributeProto::GRAPH)
      for (const auto& in : outer_reads(a.g())) implicit.insert(in);
  r.insert(r.end(), implicit.begin(), implicit.end());
  return r;
}

// The ops whose ONNX 1.12 shape inference reads past its arrays on an input of too low a rank
// (check_window_input_ranks).
bool windowed(const std::string& op_type) { return op_type == "Conv" || op_type == "MaxPool" || op_type == "AveragePool"; }

bool has_subgraphs(const op::GraphProto& gp) {
  for (const auto& n : gp.node())
    for (const auto& a : n.attribute())
      if (a.type() == op::AttributeProto::GRAPH) return true;
  return false;
}

class Importer {
 public:
  Importer(std::string name, std::string base_dir) : name_(std::move(name)), base_dir_(std::move(base_dir)) {}

  std::unique_ptr<Graph> run(op::ModelProto& model) {
    g_ = std::make_unique<Graph>();
    g_->model_name = name_;
    check_opset(model);
    inline_local_functions(model, name_, g_->inlined_calls);
    check_ops(model.graph());
    densify_sparse_initializers(*model.mutable_graph());
    sort_nodes(*model.mutable_graph());
    check_initializer_bytes(model.graph());
    check(model);
    const op::GraphProto& gp = model.graph();
    // 16-bit float weights that the graph casts to float (a half-precision export run in
    // float): widened at load, the Casts then float to float.
    std::map<std::string, bool>& only_cast_to_float = only_cast_to_float_;
    for_each_node(gp, [&](const op::NodeProto& n, int) {
      for (const auto& in : n.input()) {
        bool cast = n.op_type() == "Cast" && n.domain().empty();
        if (cast) {
          cast = false;
          for (const auto& at : n.attribute()) cast |= at.name() == "to" && at.i() == op::TensorProto::FLOAT;
        }
        auto [it, fresh] = only_cast_to_float.emplace(in, cast);
        if (!fresh) it->second = it->second && cast;
      }
    });
    for (const auto& out : gp.output()) only_cast_to_float[out.name()] = false;
    for (const auto& init : gp.initializer()) {
      auto it = only_cast_to_float.find(init.name());
      add_initializer(init, it != only_cast_to_float.end() && it->second);
    }
    for (const auto& in : gp.input()) {
      if (by_name_.count(in.name())) continue;  // an initializer listed as input (IR < 4 style)
      ValueId v = add_value_info(in);
      g_->value(v).is_input = true;
      g_->inputs.push_back(v);
    }
    for_each_node(gp, [&](const op::NodeProto& n, int) { used_.insert(n.input().begin(), n.input().end()); });
    for (const auto& out : gp.output()) used_.insert(out.name());
    for (int i = 0; i < gp.node_size(); ++i) declare_outputs(gp.node(i), i);
    for (int i = 0; i < gp.node_size(); ++i) add_node(gp.node(i), i);
    // ONNX's shape inference runs after Sluice's own import has checked every tensor and
    // attribute: it reads raw_data without checking its size and divides by strides (ONNX 1.12
    // crashes on both).
    bool windowed_in_branch = false;
    if (has_subgraphs(gp))
      for_each_node(gp, [&](const op::NodeProto& n, int) {
        windowed_in_branch = windowed_in_branch || windowed(n.op_type());
      });
    if (g_->opset <= kCheckerOpset && !windowed_in_branch) {
      check_window_input_ranks(model);
      // The graph outputs' declared shapes are left out of it: ONNX refuses a model whose
      // declared output shape differs from the inferred one (a rank-0 placeholder, stale dims
      // after an edit: "differ in rank: (4) vs (0)", naming neither), where ONNX Runtime runs
      // it, as Sluice does newer opsets: the run's output has the computed shape, and `sluice
      // run` notes the difference, naming the output.
      std::vector<op::TypeProto> declared;
      for (auto& out : *model.mutable_graph()->mutable_output()) {
        declared.push_back(out.type());
        if (out.type().has_tensor_type()) {  // (its elem type too: Sluice's own check names the output)
          out.mutable_type()->mutable_tensor_type()->clear_shape();
          out.mutable_type()->mutable_tensor_type()->clear_elem_type();
        }
      }
      // So are the intermediate values' value_info: one that contradicts the inferred shape
      // ("Inferred shape and existing shape differ in rank: (2) vs (3)", naming no value) is a
      // stale annotation, which ONNX Runtime runs past too.
      google::protobuf::RepeatedPtrField<op::ValueInfoProto> value_info;
      value_info.Swap(model.mutable_graph()->mutable_value_info());
      try {  // its results are not used (Sluice infers its own shapes); this catches what only ONNX's schemas know
        op::shape_inference::InferShapes(model);
      } catch (const std::exception& e) {
        throw Error(name_ + ": ONNX shape inference failed: " + first_line(e.what()));
      }
      value_info.Swap(model.mutable_graph()->mutable_value_info());
      for (int i = 0; i < model.graph().output_size(); ++i)
        *model.mutable_graph()->mutable_output(i)->mutable_type() = declared[static_cast<size_t>(i)];
    }  // newer: no ONNX shape inference, which would infer the restated nodes' older semantics
    for (const auto& out : gp.output()) {
      auto it = by_name_.find(out.name());
      if (it == by_name_.end())
        throw Error(name_ + ": graph output '" + out.name() + "' is not produced by any node, input or initializer");
      g_->value(it->second).is_output = true;
      if (g_->value(it->second).dtype == DType::Undefined) set_type(g_->value(it->second), out);
      g_->outputs.push_back(it->second);
    }
    if (g_->outputs.empty()) throw Error(name_ + ": the graph has no outputs");
    g_->rebuild_links();
    g_->topological_order();  // throws on a cycle, naming a node on it
    return std::move(g_);
  }

 private:
  // ONNX 1.12's shape inference for Conv and the pools reads past its arrays when the data
  // input has fewer dims than the kernel (a fuzzer's Conv fed a 2-D tensor: SIGSEGV). Before it
  // runs, the ranks it would see are found by running it on a copy in which those nodes are
  // Identities of their data input (an output of a conv or pool has its input's rank; a node
  // without a schema, as they were, left every value after it unranked, and a second conv's
  // rank-5 weight on a conv's output crashed it: a fuzzer), and a mismatch is refused by name. The copy's initializers keep
  // their data only when small (shape arguments such as a Reshape's target): the weights' dims
  // are all the ranks need, and copying them would double a large model's memory at load.
  void check_window_input_ranks(op::ModelProto& model) {
    bool any = false;
    for (const auto& n : model.graph().node()) any = any || windowed(n.op_type());
    if (!any) return;
    // (A windowed op inside an If branch: the caller leaves ONNX's shape inference out; Sluice's
    // own checks the branch that is taken.)
    constexpr int64_t kKeepData = 1024;  // elements
    google::protobuf::RepeatedPtrField<op::TensorProto> inits;
    inits.Swap(model.mutable_graph()->mutable_initializer());
    for (const op::TensorProto& t : inits) {
      bool small = true;  // at most kKeepData elements (dims were checked at import: none negative)
      int64_t numel = 1;
      for (int64_t d : t.dims()) {
        if (d == 0) numel = 0;
        else if (numel > kKeepData / d) small = false;
        else numel *= d;
      }
      small = small || numel == 0;
      op::TensorProto* light = model.mutable_graph()->add_initializer();
      if (small) {
        *light = t;
      } else {
        light->set_name(t.name());
        light->set_data_type(t.data_type());
        *light->mutable_dims() = t.dims();
      }
    }
    op::ModelProto copy = model;
    model.mutable_graph()->mutable_initializer()->Swap(&inits);  // the model's own initializers back
    for (auto& n : *copy.mutable_graph()->mutable_node()) {
      if (!windowed(n.op_type())) continue;
      if (n.input_size() < 1 || n.input(0).empty() || n.output_size() < 1) {
        n.set_op_type("SluiceRankCheck" + n.op_type());  // (no schema: ONNX skips it; the import refuses it)
        continue;
      }
      const std::string x = n.input(0), y = n.output(0);
      n.clear_input();
      n.add_input(x);
      n.clear_output();
      n.add_output(y);
      n.clear_attribute();
      n.set_op_type("Identity");
      n.clear_domain();
    }
    try {
      op::shape_inference::InferShapes(copy);
    } catch (const std::exception&) {
      return;  // the real run reports it
    }
    std::map<std::string, int> rank;
    auto note = [&](const op::ValueInfoProto& vi) {
      if (vi.type().has_tensor_type() && vi.type().tensor_type().has_shape())
        rank[vi.name()] = vi.type().tensor_type().shape().dim_size();
    };
    for (const auto& vi : copy.graph().value_info()) note(vi);
    for (const auto& vi : copy.graph().input()) note(vi);
    for (const auto& t : copy.graph().initializer()) rank[t.name()] = t.dims_size();
    const auto& nodes = model.graph().node();
    for (int i = 0; i < nodes.size(); ++i) {
      const op::NodeProto& n = nodes.Get(i);
      if (!windowed(n.op_type()) || n.input_size() < 1) continue;
      const auto in = rank.find(n.input(0));
      if (in == rank.end()) continue;
      int want = -1;
      std::string why;
      if (n.op_type() == "Conv" && n.input_size() > 1 && rank.count(n.input(1))) {
        want = rank[n.input(1)];
        why = "its weight '" + n.input(1) + "' has rank " + std::to_string(want);
      }
      for (const auto& a : n.attribute())
        if (a.name() == "kernel_shape") {
          want = a.ints_size() + 2;
          why = "its kernel_shape has " + std::to_string(a.ints_size()) + " dims";
        }
      if (want >= 0 && in->second != want)
        throw Error(name_ + ": node '" + node_name(n, i) + "' (" + n.op_type() + "): its input '" + n.input(0) + "' has rank " +
                    std::to_string(in->second) + " and " + why + "; they must match (N, C and the spatial dims)");
    }
  }

  static std::string first_line(const std::string& s) {
    auto p = s.find('\n');
    return p == std::string::npos ? s : s.substr(0, p);
  }

  // The checker's first line, with the node its context names ("==> Context: Bad node spec for
  // node. Name: c1 OpType: Conv"): the first line alone ("Unrecognized attribute: padc for
  // operator Conv") did not say which of a model's convs.
  static std::string checker_message(const std::string& s) {
    std::string r = first_line(s);
    const std::string tag = "Bad node spec for node. Name: ";
    const auto at = s.find(tag);
    if (at == std::string::npos) return r;
    const auto name0 = at + tag.size(), op = s.find(" OpType: ", name0);
    if (op == std::string::npos) return r;
    const std::string name = s.substr(name0, op - name0);
    const std::string type = first_line(s.substr(op + 9));
    return r + (name.empty() ? " (a " + type + " node without a name)" : " (node '" + name + "', " + type + ")");
  }

  static std::string node_name(const op::NodeProto& np, int index) {
    return np.name().empty() ? np.op_type() + "_" + std::to_string(index) : np.name();
  }

  // Nodes in an order where each reads only what is already there (ONNX Runtime accepts a
  // file whose nodes are out of order; ONNX's checker does not), or an error naming the node
  // that reads a value nothing provides (a missing initializer?) or the nodes of a cycle.
  void sort_nodes(op::GraphProto& gp) const {
    std::set<std::string> have{""};
    for (const auto& v : gp.input()) have.insert(v.name());
    for (const auto& v : gp.initializer()) have.insert(v.name());
    std::map<std::string, int> producer;
    for (int i = 0; i < gp.node_size(); ++i)
      for (const auto& o : gp.node(i).output()) producer.emplace(o, i);
    for (int i = 0; i < gp.node_size(); ++i)
      for (const auto& in : all_reads(gp.node(i)))
        if (!have.count(in) && !producer.count(in))
          throw Error(name_ + ": node '" + node_name(gp.node(i), i) + "' (" + gp.node(i).op_type() + ") reads '" + in +
                      "', which no node, graph input or initializer provides (a missing initializer?)");
    // Kahn's algorithm, the ready node of lowest index first: file order wherever it works.
    std::vector<int> waiting(static_cast<size_t>(gp.node_size()), 0);
    std::map<std::string, std::vector<int>> readers;
    std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
    for (int i = 0; i < gp.node_size(); ++i) {
      for (const auto& in : all_reads(gp.node(i)))
        if (!have.count(in)) {
          ++waiting[static_cast<size_t>(i)];
          readers[in].push_back(i);
        }
      if (waiting[static_cast<size_t>(i)] == 0) ready.push(i);
    }
    std::vector<int> order;
    std::vector<bool> placed(static_cast<size_t>(gp.node_size()), false);
    while (!ready.empty()) {
      const int i = ready.top();
      ready.pop();
      placed[static_cast<size_t>(i)] = true;
      order.push_back(i);
      for (const auto& o : gp.node(i).output()) {
        auto it = readers.find(o);
        if (it == readers.end()) continue;
        for (int r : it->second)
          if (--waiting[static_cast<size_t>(r)] == 0) ready.push(r);
        readers.erase(it);  // a value produced twice is the checker's to refuse
      }
    }
    if (static_cast<int>(order.size()) < gp.node_size()) {
      std::string names;
      for (int i = 0, n = 0; i < gp.node_size() && n < 5; ++i)
        if (!placed[static_cast<size_t>(i)]) names += std::string(n++ ? ", " : "") + "'" + node_name(gp.node(i), i) + "'";
      throw Error(name_ + ": nodes " + names + " wait on each other's outputs (a cycle); a graph must be acyclic");
    }
    bool sorted = true;
    for (size_t i = 0; i < order.size(); ++i) sorted = sorted && order[i] == static_cast<int>(i);
    if (sorted) return;
    google::protobuf::RepeatedPtrField<op::NodeProto> nodes;
    for (int i : order) *nodes.Add() = gp.node(i);
    gp.mutable_node()->Swap(&nodes);
  }

  // Unsupported operators are named with their node before the checker runs (its
  // message for an unknown op does not say which node).
  // (Inside an If's branches, an operator of the default domain that Sluice lacks fails the If
  // only if it takes that branch: import_branches.)
  void check_ops(const op::GraphProto& gp) {
    for (int i = 0; i < gp.node_size(); ++i) check_op(gp.node(i), i);
    // In a branch: another domain, or an operator that ONNX itself does not know (the checker
    // would name the If alone).
    for_each_node(gp, [&](const op::NodeProto& np, int i) {
      if ((!np.domain().empty() && np.domain() != "ai.onnx") ||
          !op::OpSchemaRegistry::Schema(np.op_type(), static_cast<int>(g_->opset), ""))
        check_op(np, i);
    });
  }
  void check_op(const op::NodeProto& np, int i) const {
    const std::string where = name_ + ": node '" + node_name(np, i) + "' (" + np.op_type() + ")";
    if (!np.domain().empty() && np.domain() != "ai.onnx")
      throw Error(where + ": operator domain '" + np.domain() + "' is not supported (only the default ONNX domain)");
    if (!graph::op_from_name(np.op_type()))
      throw Error(where + ": unsupported operator '" + np.op_type() +
                  "'; run `sluice ops` for the list of supported operators");
  }

  // The ONNX 1.12 checker, on the model as it would be written for it, then put back (in
  // place: a copy would double the weights in memory):
  // - it insists on a `shape` for every graph input and output, which the IR does not (ONNX
  //   Runtime accepts shapeless outputs, and some exporters write them): those are set aside;
  // - it knows IR versions up to 8: IR 9 and 10 (newer onnx writes 10 whatever the opset) add
  //   nothing the import reads once functions are inlined, so it sees 8;
  // - it knows opsets up to 17: a newer model's nodes are restated (restate_for_checker).
  void check(op::ModelProto& model) {
    op::GraphProto* g = model.mutable_graph();
    auto saved_inputs = g->input();
    auto saved_outputs = g->output();
    const int64_t saved_ir = model.ir_version();
    auto saved_imports = model.opset_import();
    google::protobuf::RepeatedPtrField<op::NodeProto> saved_nodes;
    const bool restate = g_->opset > kCheckerOpset;
    if (restate) {
      saved_nodes = g->node();
      restate_for_checker(model);
    }
    model.set_ir_version(std::min<int64_t>(saved_ir, 8));
    auto has_shape = [](const op::ValueInfoProto& v) {
      return !v.type().has_tensor_type() || v.type().tensor_type().has_shape();
    };
    // A tensor without a shape is legal ONNX (Sluice asks for it at run time); the checker of
    // ONNX 1.12 wants one, so it sees an empty one.
    auto give_shapes = [&](google::protobuf::RepeatedPtrField<op::ValueInfoProto>* list) {
      for (auto& v : *list)
        if (!has_shape(v)) v.mutable_type()->mutable_tensor_type()->mutable_shape();
    };
    give_shapes(g->mutable_input());
    give_shapes(g->mutable_output());
    std::string error;
    try {
      op::checker::CheckerContext ctx;  // external data is looked for next to the model, not in the working directory
      if (!base_dir_.empty()) ctx.set_model_dir(base_dir_ + "/");
      op::checker::check_model(model, ctx);
    } catch (const std::exception& e) {
      error = checker_message(e.what());
    }
    *g->mutable_input() = saved_inputs;
    *g->mutable_output() = saved_outputs;
    model.set_ir_version(saved_ir);
    if (restate) {
      g->mutable_node()->Swap(&saved_nodes);
      *model.mutable_opset_import() = saved_imports;
    }
    if (!error.empty()) throw Error(name_ + ": the ONNX checker rejects the model: " + error);
  }

  // Debian's ONNX 1.12 knows operator schemas up to opset 17. A newer model is checked
  // restated at opset 17 (check puts the original back). Between opsets 18 and 21 most ops
  // Sluice runs only gained types; the signatures that changed go back to their opset-17
  // form, for the check alone (the import reads the original, with the newer semantics):
  //   the axes input and noop_with_empty_axes of every Reduce op but ReduceSum (18), Pad axes
  //   input (18): dropped
  //   Split num_outputs (18), Resize axes/antialias/keep_aspect_ratio_policy (18), AveragePool
  //   dilations (19), Cast saturate (19): dropped
  //   Gelu (new in 20): checked as an Identity, which has its signature
  // (Local functions are inlined, and gone from the model, before this.)
  void restate_for_checker(op::ModelProto& m) const {
    for (auto& imp : *m.mutable_opset_import())
      if (imp.domain().empty() || imp.domain() == "ai.onnx") imp.set_version(kCheckerOpset);
    auto drop_attr = [](op::NodeProto& n, const char* name) {
      auto* attrs = n.mutable_attribute();
      for (int i = attrs->size() - 1; i >= 0; --i)
        if (attrs->Get(i).name() == name) attrs->DeleteSubrange(i, 1);
    };
    auto keep_inputs = [](op::NodeProto& n, int count) {
      while (n.input_size() > count) n.mutable_input()->RemoveLast();
    };
    // Only what the model's opset has: AveragePool's dilations at 18 stay, for the checker to
    // refuse, and Gelu before 20 is refused here.
    const int64_t opset = g_->opset;
    for_each_node_mut(*m.mutable_graph(), [&](op::NodeProto& n, int i) {
      const std::string& t = n.op_type();
      if (t.rfind("Reduce", 0) == 0 && t != "ReduceSum") {  // ReduceSum took its axes as an input at 13
        keep_inputs(n, 1);
        drop_attr(n, "noop_with_empty_axes");
      } else if (t == "Pad") {
        keep_inputs(n, 3);
      } else if (t == "Resize") {  // 18: axes, antialias, keep_aspect_ratio_policy
        for (const char* a : {"axes", "antialias", "keep_aspect_ratio_policy"}) drop_attr(n, a);
      } else if (t == "Split") {
        drop_attr(n, "num_outputs");
      } else if (t == "AveragePool" && opset >= 19) {
        drop_attr(n, "dilations");
      } else if (t == "Cast" && opset >= 19) {
        drop_attr(n, "saturate");
      } else if (t == "Gelu") {
        if (opset < 20)
          throw Error(name_ + ": node '" + node_name(n, i) + "' (Gelu): Gelu is an operator from opset 20, " +
                      "the model imports opset " + std::to_string(opset));
        drop_attr(n, "approximate");
        n.set_op_type("Identity");
      }
    });
  }

  void check_opset(const op::ModelProto& model) {
    int64_t opset = -1;
    for (const auto& imp : model.opset_import())
      if (imp.domain().empty() || imp.domain() == "ai.onnx") opset = imp.version();
    if (opset < 0) throw Error(name_ + ": the model imports no default-domain (ai.onnx) opset");
    if (opset > kMaxOpset)
      throw Error(name_ + ": opset " + std::to_string(opset) + " is newer than Sluice supports (" +
                  std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) +
                  "); re-export with opset_version=" + std::to_string(kMaxOpset) + " or lower");
    if (opset < kMinOpset)
      throw Error(name_ + ": opset " + std::to_string(opset) + " is older than Sluice supports (" +
                  std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) + "); convert it with onnx.version_converter");
    g_->opset = opset;
  }

  ValueId new_value(const std::string& name, const std::string& what) {
    if (name.empty()) throw Error(name_ + ": " + what + " has an empty name");
    if (by_name_.count(name)) throw Error(name_ + ": value '" + name + "' is defined twice (" + what + ")");
    Value v;
    v.name = name;
    ValueId id = g_->add_value(std::move(v));
    by_name_[name] = id;
    return id;
  }

  // Sparse initializers (ONNX's SparseTensorProto: the non-zero values and their indices, flat
  // or one coordinate per axis) become dense float initializers of their dims, which the
  // pruning and sparse kernels then find as any other. Float only; the dense size is checked
  // against the machine's memory before anything is allocated.
  void densify_sparse_initializers(op::GraphProto& gp) const {
    for (const auto& sp : gp.sparse_initializer()) {
      const std::string name = sp.values().name();
      const std::string where = name_ + ": sparse initializer '" + name + "'";
      std::string dims = "[";
      for (int64_t d : sp.dims()) dims += (dims.size() > 1 ? ", " : "") + std::to_string(d);
      dims += "]";
      if (sp.values().data_type() != op::TensorProto::FLOAT)
        throw Error(where + ": only float32 sparse initializers are supported (store it dense, or as float32)");
      double numel = 1;
      for (int64_t d : sp.dims()) {
        if (d < 0) throw Error(where + ": dims " + dims + " has a negative size");
        numel *= static_cast<double>(d);
      }
      const double have = runtime::machine_bytes();
      if (numel > static_cast<double>(int64_t{1} << 40) || (have > 0 && numel * 4 > have))
        throw Error(where + ": dense, its dims " + dims + " would take " +
                    runtime::gib(numel * 4) + ", more than this machine's memory; check the model's dims");
      const Tensor values = tensor_from_proto(sp.values(), where + " values", base_dir_);
      const Tensor indices = tensor_from_proto(sp.indices(), where + " indices", base_dir_);
      const int64_t nnz = values.numel(), rank = sp.dims_size();
      if (values.shape().size() != 1 || indices.dtype() != DType::Int64 ||
          !(indices.shape() == Shape{nnz} || indices.shape() == Shape{nnz, rank}))
        throw Error(where + ": expected values [NNZ] and int64 indices [NNZ] or [NNZ, " + std::to_string(rank) +
                    "], got values " + shape_str(values.shape()) + " and indices " + shape_str(indices.shape()) + " (" +
                    dtype_name(indices.dtype()) + ")");
      const auto n = static_cast<int64_t>(numel);
      std::string dense(static_cast<size_t>(n) * sizeof(float), '\0');
      auto* out = reinterpret_cast<float*>(dense.data());
      const int64_t* idx = indices.data<int64_t>();
      const bool flat = indices.shape().size() == 1;
      for (int64_t i = 0; i < nnz; ++i) {
        int64_t at = 0;
        bool inside = true;
        if (flat) {
          at = idx[i];
          inside = at >= 0 && at < n;
        } else {
          for (int64_t a = 0; a < rank; ++a) {
            const int64_t c = idx[i * rank + a];
            inside = inside && c >= 0 && c < sp.dims(static_cast<int>(a));
            at = at * sp.dims(static_cast<int>(a)) + c;
          }
        }
        if (!inside) throw Error(where + ": index " + std::to_string(i) + " of its values lies outside its dims " +
                                 dims);
        out[at] = values.data<float>()[i];
      }
      op::TensorProto* tp = gp.add_initializer();
      tp->set_name(name);
      tp->set_data_type(op::TensorProto::FLOAT);
      for (int64_t d : sp.dims()) tp->add_dims(d);
      tp->set_raw_data(std::move(dense));
    }
    gp.clear_sparse_initializer();
  }

  // The external initializers' total size against the machine's memory, from their dims alone,
  // before any is read: their files can hold more than fits (each one alone is checked as it
  // is read; the others' data is in the model file already).
  void check_initializer_bytes(const op::GraphProto& gp) const {
    const double have = runtime::machine_bytes();
    if (have <= 0) return;
    double total = 0, largest = 0;
    std::string largest_name;
    for (const auto& tp : gp.initializer()) {
      if (tp.data_location() != op::TensorProto::EXTERNAL) continue;  // in the file already: checked as it is read
      double bytes = 4;
      switch (tp.data_type()) {
        case op::TensorProto::DOUBLE: case op::TensorProto::INT64: bytes = 8; break;
        case op::TensorProto::INT8: case op::TensorProto::UINT8: case op::TensorProto::BOOL: bytes = 1; break;
        default: break;  // float, int32, and 16-bit floats widened to float
      }
      for (int64_t d : tp.dims()) bytes *= static_cast<double>(std::max<int64_t>(d, 0));
      total += bytes;
      if (bytes > largest) largest = bytes, largest_name = tp.name();
    }
    if (total > have)
      throw Error(name_ + ": its initializers in external data hold " + runtime::gib(total) + ", more than " +
                  runtime::memory_limit().what + " (the largest, '" + largest_name + "', " + runtime::gib(largest) +
                  "); check the model's dims");
  }

  void add_initializer(const op::TensorProto& tp, bool widen_half) {
    set_constant(g_->value(new_value(tp.name(), "an initializer")), tp, name_ + ": initializer '" + tp.name() + "'",
                 widen_half);
  }
  void set_constant(Value& v, const op::TensorProto& tp, const std::string& where, bool widen_half) {
    v.constant = tensor_from_proto(tp, where, base_dir_, widen_half);
    v.dtype = v.constant.dtype();
    v.shape = v.constant.shape();
    v.shape_known = true;
  }

  // A value by name: an If branch's own (innermost branch first), else the graph's; kNoValue
  // when neither has it.
  ValueId lookup(const std::string& name) const {
    for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s)
      if (auto it = s->find(name); it != s->end()) return it->second;
    auto it = by_name_.find(name);
    return it == by_name_.end() ? graph::kNoValue : it->second;
  }

  // An If's branches: their initializers and nodes' outputs become values of the graph, known
  // by name within the branch only; their nodes are kept aside (fold_constants splices in the
  // branch that is taken). A branch reads the enclosing graphs' values by name, as ONNX allows.
  std::shared_ptr<const graph::IfBranches> import_branches(const op::NodeProto& np, const std::string& where) {
    auto b = std::make_shared<graph::IfBranches>();
    const char* names[2] = {"then_branch", "else_branch"};
    for (int k = 0; k < 2; ++k) {
      const op::AttributeProto* a = nullptr;
      for (const auto& at : np.attribute())
        if (at.name() == names[k]) a = &at;
      if (!a || a->type() != op::AttributeProto::GRAPH)
        throw Error(where + ": the graph attribute '" + names[k] + "' is missing");
      const op::GraphProto& sub = a->g();
      const std::string in = where + ": its " + names[k];
      if (sub.input_size() > 0) throw Error(in + " declares inputs; an If branch takes none (it reads outer values by name)");
      if (sub.sparse_initializer_size() > 0) throw Error(in + " has sparse initializers, which are not supported there");
      // An operator that Sluice lacks (Loop, ...) fails the If only if this branch is taken.
      bool lacking = false;
      for_each_node(sub, [&](const op::NodeProto& bn, int i) {
        if (lacking) return;
        try {
          check_op(bn, i);
        } catch (const Error& e) {
          lacking = true;
          b->error[k] = std::string(e.what()) + " (in the " + names[k] + " of If '" + np.name() + "', which takes it)";
        }
      });
      if (lacking) continue;
      scopes_.emplace_back();
      auto local = [&](const std::string& name, const std::string& what) {
        if (name.empty()) throw Error(in + ": " + what + " has an empty name");
        if (scopes_.back().count(name)) throw Error(in + ": value '" + name + "' is defined twice (" + what + ")");
        Value v;
        v.name = name;
        return scopes_.back()[name] = g_->add_value(std::move(v));
      };
      for (const auto& init : sub.initializer()) {
        auto it = only_cast_to_float_.find(init.name());  // (names read only by Casts to float)
        set_constant(g_->value(local(init.name(), "an initializer")), init, in + ": initializer '" + init.name() + "'",
                     it != only_cast_to_float_.end() && it->second);
      }
      for (int i = 0; i < sub.node_size(); ++i)
        for (const auto& out : sub.node(i).output())
          if (!out.empty()) local(out, "an output of node '" + node_name(sub.node(i), i) + "'");
      const std::string unnamed = np.name() + "/" + (k == 0 ? "then" : "else") + "/";
      for (int i = 0; i < sub.node_size(); ++i)
        if (std::optional<Node> n = make_node(sub.node(i), i, unnamed)) b->nodes[k].push_back(std::move(*n));
      for (const auto& out : sub.output()) {
        const ValueId id = lookup(out.name());
        if (id == graph::kNoValue)
          throw Error(in + ": its output '" + out.name() + "' is computed neither in it nor before the If");
        b->outputs[k].push_back(id);
      }
      scopes_.pop_back();
      if (static_cast<int>(b->outputs[k].size()) != np.output_size())
        throw Error(in + " has " + std::to_string(b->outputs[k].size()) + " outputs; the If has " +
                    std::to_string(np.output_size()));
    }
    return b;
  }

  // Types of graph inputs and outputs. ONNX shape inference may write a negative
  // dim into an output of a broken node: that dim is unknown, and our own inference
  // then names the node at fault. A negative dim on an input is the file's own error.
  void set_type(Value& v, const op::ValueInfoProto& vi, bool is_input = false) {
    if (!vi.type().has_tensor_type()) throw Error(name_ + ": value '" + vi.name() + "' is not a tensor");
    const auto& tt = vi.type().tensor_type();
    v.dtype = dtype_from_onnx(tt.elem_type(), name_ + ": value '" + vi.name() + "'");
    v.shape.clear();
    v.shape_known = tt.has_shape();
    if (tt.has_shape())
      for (const auto& d : tt.shape().dim()) {
        const bool known = d.has_dim_value() && d.dim_value() >= 0;
        if (is_input && d.has_dim_value() && d.dim_value() < 0)
          throw Error(name_ + ": input '" + vi.name() + "' has a negative dimension");
        v.shape.push_back(known ? d.dim_value() : -1);
        if (!known) v.shape_known = false;
      }
  }

  ValueId add_value_info(const op::ValueInfoProto& vi) {
    ValueId id = new_value(vi.name(), "a graph input");
    set_type(g_->value(id), vi, true);
    return id;
  }

  void declare_outputs(const op::NodeProto& np, int index) {
    for (const auto& out : np.output())
      if (!out.empty()) new_value(out, "output of node " + std::to_string(index) + " (" + np.op_type() + ")");
  }

  void add_node(const op::NodeProto& np, int index) {
    if (std::optional<Node> n = make_node(np, index)) g_->add_node(std::move(*n));
  }

  // The node, or nothing for a Constant (its value is set on its output).
  // (unnamed: what a branch's unnamed nodes' names start with, "<If>/then/")
  std::optional<Node> make_node(const op::NodeProto& np, int index, const std::string& unnamed = "") {
    Node n;
    n.name = np.name().empty() ? unnamed + node_name(np, index) : np.name();
    const std::string where = name_ + ": node '" + n.name + "' (" + np.op_type() + ")";
    const std::optional<OpType> op = graph::op_from_name(np.op_type());
    if (!op) throw Error(where + ": unsupported operator '" + np.op_type() + "'");  // (check_ops has said so)
    n.op = *op;
    std::vector<std::string> reads(np.input().begin(), np.input().end());
    if (n.op == OpType::If) reads = all_reads(np);  // the condition, then what the branches read
    for (const auto& in : reads) {
      if (in.empty()) {
        n.inputs.push_back(graph::kNoValue);
        continue;
      }
      const ValueId v = lookup(in);
      if (v == graph::kNoValue)
        throw Error(where + ": input '" + in + "' is not a graph input, an initializer, or any node's output "
                            "(missing initializer?)");
      n.inputs.push_back(v);
    }
    for (const auto& out : np.output()) n.outputs.push_back(out.empty() ? graph::kNoValue : lookup(out));
    AttributeReader attrs(np, where);
    attributes_to_inputs(attrs, n);
    n.params = parse_params(n.op, attrs, g_->opset, base_dir_);
    if (n.op == OpType::Constant) {
      // Constants become initializers: one less node and foldable at once.
      if (n.outputs.size() != 1 || n.outputs[0] == graph::kNoValue) throw Error(where + ": needs exactly one output");
      Value& v = g_->value(n.outputs[0]);
      v.constant = std::get<graph::ConstantParams>(n.params).value;
      v.dtype = v.constant.dtype();
      v.shape = v.constant.shape();
      v.shape_known = true;
      return std::nullopt;
    }
    if (n.op == OpType::MaxPool && n.outputs.size() > 1 && n.outputs[1] != graph::kNoValue) {
      // PyTorch's dynamo exporter names the Indices output even when nothing reads it.
      if (used_.count(np.output(1))) throw Error(where + ": the Indices output of MaxPool is not supported");
      n.outputs.resize(1);
    }
    if (n.op == OpType::If) {
      if (np.input_size() != 1 || n.inputs[0] == graph::kNoValue) throw Error(where + ": needs exactly one input, the condition");
      n.params = graph::IfParams{import_branches(np, where)};
    }
    return n;
  }

  // Opsets before 10 and 11 gave some inputs as attributes: Slice-1's starts, ends and axes,
  // TopK-1's k, Pad-2's pads and value. They become constant inputs, the form of every later
  // opset, which is what the kernels read.
  void attributes_to_inputs(const AttributeReader& a, Node& n) {
    auto add = [&](size_t index, Tensor t, const char* what) {
      if (n.inputs.size() <= index) n.inputs.resize(index + 1, graph::kNoValue);
      std::string name = n.name + ":" + what;
      for (int k = 1; by_name_.count(name); ++k) name = n.name + ":" + what + "#" + std::to_string(k);  // names need not be unique
      Value& v = g_->value(n.inputs[index] = new_value(name, std::string("attribute ") + what + " of " + n.name));
      v.dtype = t.dtype();
      v.shape = t.shape();
      v.shape_known = true;
      v.constant = std::move(t);
    };
    auto ints = [](const std::vector<int64_t>& v) { return Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v); };
    const int64_t opset = g_->opset;
    if (n.op == OpType::Slice && opset < 10) {
      if (!a.has("starts") || !a.has("ends")) a.fail("attributes 'starts' and 'ends' are required before opset 10");
      add(1, ints(a.ints("starts")), "starts");
      add(2, ints(a.ints("ends")), "ends");
      if (a.has("axes")) add(3, ints(a.ints("axes")), "axes");
    } else if (n.op == OpType::TopK && opset < 10) {
      if (!a.has("k")) a.fail("attribute 'k' is required before opset 10");
      add(1, ints({a.i("k", 0)}), "k");
    } else if (n.op == OpType::Pad && opset < 11) {
      if (!a.has("pads")) a.fail("attribute 'pads' is required before opset 11");
      add(1, ints(a.ints("pads")), "pads");
      if (const float value = a.f("value", 0.f); value != 0.f) add(2, Tensor::from_vector<float>({}, {value}), "value");
    }
  }

  std::string name_, base_dir_;
  std::unique_ptr<Graph> g_;
  std::unordered_map<std::string, ValueId> by_name_;
  std::unordered_set<std::string> used_;  // names that a node reads or the graph outputs
  std::vector<std::unordered_map<std::string, ValueId>> scopes_;  // the If branches being imported, innermost last
  std::map<std::string, bool> only_cast_to_float_;  // initializers that only Casts to float read (widened if 16-bit)
};

std::unique_ptr<Graph> import_proto_bytes(const void* data, size_t size, const std::string& name,
                                          const std::string& base_dir) {
  if (size == 0) throw Error(name + ": file is empty, expected an ONNX model");
  if (size > kMaxFileBytes) throw Error(name + ": larger than 2 GiB");
  op::ModelProto model;
  if (!model.ParseFromArray(data, static_cast<int>(size)))
    throw Error(name + ": not a valid ONNX model (protobuf parsing failed; is the file truncated or not .onnx?)");
  if (!model.has_graph() || model.ir_version() <= 0)
    throw Error(name + ": not a valid ONNX model (no graph or no ir_version)");
  if (model.ir_version() > kMaxIrVersion)  // newer fields would be read as unknown, and ignored
    throw Error(name + ": IR version " + std::to_string(model.ir_version()) + " is newer than Sluice reads (up to " +
                std::to_string(kMaxIrVersion) + ", ONNX 1.16); save the model with onnx < 1.18 or set model.ir_version = " +
                std::to_string(kMaxIrVersion));
  return Importer(name, base_dir).run(model);
}

}  // namespace

std::unique_ptr<Graph> import_file(const std::string& path) {
  std::string bytes = read_whole_file(path);
  std::string dir = std::filesystem::path(path).parent_path().string();
  return import_proto_bytes(bytes.data(), bytes.size(), path, dir.empty() ? "." : dir);
}

std::unique_ptr<Graph> import_bytes(const void* data, size_t size, const std::string& name) {
  return import_proto_bytes(data, size, name, "");
}

Tensor read_tensor_file(const std::string& path) {
  std::string bytes = read_whole_file(path);
  op::TensorProto tp;
  if (!tp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw Error(path + ": not a serialized onnx.TensorProto");
  std::string dir = std::filesystem::path(path).parent_path().string();
  return tensor_from_proto(tp, path, dir.empty() ? "." : dir);
}

}  // namespace sluice::converters::onnx
