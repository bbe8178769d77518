// Runs ONNX's backend node tests (the test_* case directories shipped with ONNX, e.g.
// /usr/share/libonnx-testdata/data/node) through Sluice.
//
//   sluice_onnx_backend_tests [--skip-list FILE] [DATA_DIR] [NAME_FILTER]
//
// For every case whose ops are all Sluice ops (graph/op_list.inc) and which is not in the
// skip list, each test_data_set_* is run twice, with the optimised kernels and with the
// reference kernels (optimize=false), both single-threaded, and every output is compared
// with the expected one: floats with rtol 1e-3, atol 1e-4, ints and bools exactly.
// Prints one line per failing case, a summary, and finally "N passed, M failed".
// With a NAME_FILTER (substring of the case name) every matching case's result is shown.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "converters/onnx/onnx_import.h"
#include "sluice/sluice.h"

namespace fs = std::filesystem;
using sluice::DType;
using sluice::Tensor;

#ifndef SLUICE_BACKEND_SKIP_LIST
#define SLUICE_BACKEND_SKIP_LIST "tests/onnx_backend/skip_list.txt"
#endif
#ifndef SLUICE_BACKEND_DATA_DIR
#define SLUICE_BACKEND_DATA_DIR "/usr/share/libonnx-testdata/data/node"
#endif

namespace {

constexpr double kRtol = 1e-3, kAtol = 1e-4;

// ---- which ops Sluice supports ------------------------------------------------------------

const std::set<std::string>& sluice_ops() {
  static const std::set<std::string> ops = [] {
    std::set<std::string> s{
#define SLUICE_OP(name) #name,
#include "graph/op_list.inc"
#undef SLUICE_OP
    };
    // Internal ops ("Sluice*") never appear in ONNX files.
    std::erase_if(s, [](const std::string& n) { return n.rfind("Sluice", 0) == 0; });
    s.insert("Scatter");  // (opsets 9-10's name for ScatterElements: graph::op_from_name)
    return s;
  }();
  return ops;
}

void collect_ops(const onnx::GraphProto& g, std::set<std::string>& unsupported) {
  for (const auto& node : g.node()) {
    bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    if (!default_domain || !sluice_ops().count(node.op_type()))
      unsupported.insert(default_domain ? node.op_type() : node.domain() + "." + node.op_type());
    for (const auto& attr : node.attribute()) {
      if (attr.has_g()) collect_ops(attr.g(), unsupported);
      for (const auto& sub : attr.graphs()) collect_ops(sub, unsupported);
    }
  }
}

// The op types of the model that Sluice does not have (empty: all supported).
std::set<std::string> unsupported_ops(const fs::path& model_path) {
  std::ifstream f(model_path, std::ios::binary);
  onnx::ModelProto model;
  if (!f || !model.ParseFromIstream(&f)) return {"<unreadable model.onnx>"};
  std::set<std::string> unsupported;
  collect_ops(model.graph(), unsupported);
  return unsupported;
}

// ---- skip list ------------------------------------------------------------------------------

// "test_name  # reason" per line; blank lines and lines starting with '#' are ignored.
std::map<std::string, std::string> read_skip_list(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    std::cerr << "error: cannot read skip list " << path << "\n";
    std::exit(2);
  }
  std::map<std::string, std::string> skip;
  std::string line;
  while (std::getline(f, line)) {
    std::string reason;
    if (auto hash = line.find('#'); hash != std::string::npos) {
      reason = line.substr(hash + 1);
      line.resize(hash);
    }
    std::istringstream words(line);
    std::string name;
    if (!(words >> name)) continue;
    reason.erase(0, reason.find_first_not_of(' '));
    skip[name] = reason;
  }
  return skip;
}

// ---- comparing outputs -------------------------------------------------------------------

std::string index_str(int64_t flat, const sluice::Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    idx[i] = shape[i] ? flat % shape[i] : 0;
    flat = shape[i] ? flat / shape[i] : 0;
  }
  return sluice::shape_str(idx);
}

template <class T>
double as_double(const Tensor& t, int64_t i) {
  return static_cast<double>(t.data<T>()[i]);
}

double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::Float32: return as_double<float>(t, i);
    case DType::Float64: return as_double<double>(t, i);
    case DType::Int64: return as_double<int64_t>(t, i);
    case DType::Int32: return as_double<int32_t>(t, i);
    case DType::Int8: return as_double<int8_t>(t, i);
    case DType::UInt8: return as_double<uint8_t>(t, i);
    case DType::Bool: return t.data<bool>()[i] ? 1 : 0;
    case DType::Undefined: break;
  }
  return 0;
}

// Empty if equal within tolerance, else a description of the first mismatch.
std::string compare(const Tensor& expected, const Tensor& got) {
  if (got.dtype() != expected.dtype())
    return std::string("dtype ") + sluice::dtype_name(got.dtype()) + ", expected " +
           sluice::dtype_name(expected.dtype());
  if (got.shape() != expected.shape())
    return "shape " + sluice::shape_str(got.shape()) + ", expected " + sluice::shape_str(expected.shape());
  bool is_float = expected.dtype() == DType::Float32 || expected.dtype() == DType::Float64;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    double e = element(expected, i), g = element(got, i);
    bool ok;
    if (!is_float) ok = e == g;
    else if (std::isnan(e)) ok = std::isnan(g);
    else if (std::isinf(e)) ok = e == g;
    else ok = std::fabs(g - e) <= kAtol + kRtol * std::fabs(e);  // false for NaN g
    if (!ok && bad++ == 0) first = i;
  }
  if (!bad) return "";
  std::ostringstream os;
  os.precision(9);
  os << "at index " << index_str(first, expected.shape()) << " expected " << element(expected, first)
     << ", got " << element(got, first) << " (" << bad << " of " << expected.numel()
     << " elements differ)";
  return os.str();
}

// ---- running one case ---------------------------------------------------------------------

std::vector<fs::path> numbered_files(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (int i = 0;; ++i) {
    fs::path p = dir / (prefix + std::to_string(i) + ".pb");
    if (!fs::exists(p)) break;
    files.push_back(p);
  }
  return files;
}

// Empty on success, else the reason of the first failure.
std::string run_data_set(const sluice::Model& model, sluice::Session& session, const fs::path& dir) {
  auto input_files = numbered_files(dir, "input_");
  auto output_files = numbered_files(dir, "output_");
  auto inputs_info = model.inputs();
  auto outputs_info = model.outputs();
  if (input_files.size() != inputs_info.size())
    return dir.filename().string() + " has " + std::to_string(input_files.size()) +
           " inputs, the model " + std::to_string(inputs_info.size());
  if (output_files.size() != outputs_info.size())
    return dir.filename().string() + " has " + std::to_string(output_files.size()) +
           " outputs, the model " + std::to_string(outputs_info.size());

  std::map<std::string, Tensor> feeds;
  for (size_t i = 0; i < input_files.size(); ++i)
    feeds[inputs_info[i].name] = sluice::converters::onnx::read_tensor_file(input_files[i].string());
  auto results = session.run(feeds);
  for (size_t i = 0; i < output_files.size(); ++i) {
    const std::string& name = outputs_info[i].name;
    auto it = results.find(name);
    if (it == results.end()) return "output " + std::to_string(i) + " '" + name + "' missing";
    Tensor expected = sluice::converters::onnx::read_tensor_file(output_files[i].string());
    if (std::string diff = compare(expected, it->second); !diff.empty())
      return "output " + std::to_string(i) + " '" + name + "': " + diff;
  }
  return "";
}

// Empty on success, else the reason of the failure, for one session configuration.
std::string run_case(const fs::path& case_dir, bool optimize) {
  try {
    sluice::Model model = sluice::Model::load((case_dir / "model.onnx").string());
    sluice::Session session(model, sluice::SessionOptions{.threads = 1, .optimize = optimize});
    std::vector<fs::path> sets;
    for (const auto& e : fs::directory_iterator(case_dir))
      if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0)
        sets.push_back(e.path());
    std::sort(sets.begin(), sets.end());
    if (sets.empty()) return "no test_data_set_* directory";
    for (const auto& set : sets)
      if (std::string r = run_data_set(model, session, set); !r.empty()) return r;
    return "";
  } catch (const std::exception& e) {
    return std::string("exception: ") + e.what();
  }
}

// So that a crashing kernel still tells which case it was.
volatile const char* g_current_case = nullptr;
void on_crash(int sig) {
  const char* name = const_cast<const char*>(g_current_case);
  const char msg[] = "\nCRASH (signal) while running ";
  if (write(2, msg, sizeof msg - 1) < 0 || (name && write(2, name, std::strlen(name)) < 0) ||
      write(2, "\n", 1) < 0) {
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

int main(int argc, char** argv) {
  std::string skip_list_path = SLUICE_BACKEND_SKIP_LIST;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--skip-list" && i + 1 < argc) skip_list_path = argv[++i];
    else if (a == "-h" || a == "--help") {
      std::cout << "usage: " << argv[0] << " [--skip-list FILE] [DATA_DIR] [NAME_FILTER]\n";
      return 0;
    } else positional.push_back(a);
  }
  fs::path data_dir = positional.size() > 0 ? positional[0] : SLUICE_BACKEND_DATA_DIR;
  std::string filter = positional.size() > 1 ? positional[1] : "";
  if (!fs::is_directory(data_dir)) {
    std::cerr << "error: " << data_dir << " is not a directory (install libonnx-testdata)\n";
    return 2;
  }
  auto skip = read_skip_list(skip_list_path);

  std::vector<fs::path> cases;
  for (const auto& e : fs::directory_iterator(data_dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_", 0) == 0) cases.push_back(e.path());
  std::sort(cases.begin(), cases.end());
  for (const auto& [name, reason] : skip)
    if (!fs::is_directory(data_dir / name))
      std::cout << "warning: skip list entry " << name << " is not a case in " << data_dir.string() << "\n";

  std::signal(SIGSEGV, on_crash);
  std::signal(SIGABRT, on_crash);
  std::signal(SIGFPE, on_crash);
  std::signal(SIGBUS, on_crash);

  int passed = 0, failed = 0, skipped_list = 0, skipped_op = 0;
  for (const auto& dir : cases) {
    std::string name = dir.filename().string();
    if (!filter.empty() && name.find(filter) == std::string::npos) continue;
    bool verbose = !filter.empty();
    if (auto it = skip.find(name); it != skip.end()) {
      ++skipped_list;
      if (verbose) std::cout << "SKIP " << name << ": " << it->second << "\n";
      continue;
    }
    if (auto ops = unsupported_ops(dir / "model.onnx"); !ops.empty()) {
      ++skipped_op;
      if (verbose) {
        std::cout << "SKIP " << name << ": unsupported op";
        for (const auto& op : ops) std::cout << " " << op;
        std::cout << "\n";
      }
      continue;
    }
    g_current_case = name.c_str();
    std::string fast = run_case(dir, true);
    std::string ref = run_case(dir, false);
    g_current_case = nullptr;
    if (fast.empty() && ref.empty()) {
      ++passed;
      if (verbose) std::cout << "PASS " << name << "\n";
      continue;
    }
    ++failed;
    std::cout << "FAIL " << name << ": ";
    if (fast == ref) std::cout << "[optimized and reference] " << fast;
    else if (ref.empty()) std::cout << "[optimized] " << fast;
    else if (fast.empty()) std::cout << "[reference] " << ref;
    else std::cout << "[optimized] " << fast << " | [reference] " << ref;
    std::cout << "\n";
    std::cout.flush();
  }

  std::cout << "\nsummary: " << passed << " passed, " << failed << " failed, " << skipped_list
            << " skipped (skip list), " << skipped_op << " skipped (unsupported op)\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed ? 1 : 0;
}
