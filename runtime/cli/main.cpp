// The `sluice` command-line tool: run, bench, inspect, eval, ops.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <random>
#include <set>

#include "graph/graph.h"
#include "runtime/cli/eval.h"
#include "runtime/memory_limit.h"
#include "runtime/npy.h"
#include "runtime/timing.h"
#include "sluice/sluice.h"

namespace {

using nlohmann::json;
using sluice::Error;
// A mistake in the command line: options that conflict, or a name, shape or batch that the
// model does not take. Exit code 2, as the argument parser's own errors (README: Errors).
struct UsageError : Error {
  using Error::Error;
};

// "image, mask": the model's input names, for errors that name a wrong one.
std::string input_names(const sluice::Model& model) {
  std::string names;
  for (const auto& d : model.inputs()) names += (names.empty() ? "" : ", ") + d.name;
  return names;
}

// "NAME=FILE" or "FILE" (then matched to the model's inputs in order). every: each of the
// model's inputs must be given (run, bench), else only some may be (inspect).
std::map<std::string, sluice::Tensor> load_inputs(const sluice::Model& model, const std::vector<std::string>& specs,
                                                  bool every = true) {
  std::map<std::string, sluice::Tensor> inputs;
  auto declared = model.inputs();
  size_t positional = 0;
  for (const std::string& spec : specs) {
    std::string name, file = spec;
    auto eq = spec.find('=');
    // A '=' inside a file's path ("eq=dir/x.npy", no input named "eq"): the whole spec is the file.
    std::error_code ec;
    if (eq != std::string::npos &&
        std::none_of(declared.begin(), declared.end(), [&](const auto& d) { return d.name == spec.substr(0, eq); }) &&
        std::filesystem::is_regular_file(spec, ec))
      eq = std::string::npos;
    if (eq != std::string::npos) {
      name = spec.substr(0, eq);
      file = spec.substr(eq + 1);
    } else {
      // The next input not given yet (by name or position).
      while (positional < declared.size() && inputs.count(declared[positional].name)) ++positional;
      if (positional >= declared.size())
        throw UsageError("more --input files than the model has inputs (" + std::to_string(declared.size()) +
                    "); use NAME=FILE.npy to be explicit");
      name = declared[positional++].name;
    }
    auto it = std::find_if(declared.begin(), declared.end(), [&](const auto& d) { return d.name == name; });
    if (it == declared.end()) {
      for (const sluice::graph::Value& v : model.graph()->values)
        if (v.name == name && v.is_constant())
          throw UsageError("--input " + spec + ": '" + name +
                      "' is a constant of the model (a weight: an initializer or a Constant node's output), not "
                      "one of its inputs, and Sluice runs it as a constant even where the file also lists it "
                      "among the graph's inputs (torch.onnx.export(keep_initializers_as_inputs=True)): change it "
                      "in the file instead");
      throw UsageError("--input " + spec + ": the model has no input named '" + name + "' (its inputs: " +
                       input_names(model) + ")");
    }
    if (inputs.count(name)) throw UsageError("--input " + spec + ": input '" + name + "' is given twice");
    if (file.empty()) throw UsageError("--input " + spec + ": no file after '=' (expected NAME=FILE.npy)");
    sluice::Tensor t = sluice::npy::load(file);
    if (t.dtype() != it->dtype)
      throw Error(file + ": input '" + name + "' must be " + sluice::dtype_name(it->dtype) + ", the file holds " +
                  sluice::dtype_name(t.dtype()) + " (convert with numpy's astype)");
    bool fits = t.shape().size() == it->shape.size();
    for (size_t i = 0; fits && i < t.shape().size(); ++i) fits = it->shape[i] < 0 || it->shape[i] == t.shape()[i];
    fits = fits || !it->rank_known;
    if (!fits)
      throw Error(file + ": input '" + name + "' must have shape " + sluice::shape_str(it->shape) + ", the file holds " +
                  sluice::shape_str(t.shape()));
    inputs[name] = std::move(t);
  }
  for (const auto& d : declared)
    if (every && !inputs.count(d.name))
      throw UsageError("missing --input for the model's input '" + d.name + "' " + sluice::shape_str(d.shape));
  return inputs;
}

// An output's file name (without .npy): its name with other characters than letters, digits,
// '.', '_' and '-' as '_'; a name too long for a file name (most file systems take 255 bytes)
// cut to 180 characters and a hash of the whole name (such an output once failed the run
// with "File name too long", writing no output at all).
std::string sanitize(const std::string& name) {
  std::string r = name;
  for (char& c : r)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  if (r.size() > 200) {
    char hash[24];
    std::snprintf(hash, sizeof hash, "_%016zx", std::hash<std::string>{}(name));
    r = r.substr(0, 180) + hash;
  }
  return r.empty() ? "output" : r;
}

json stats_json(const sluice::RunStats& s) {
  json layers = json::array();
  for (const auto& l : s.layers) {
    json j = {{"name", l.name}, {"op", l.op}, {"kernel", l.kernel}, {"dense_macs", l.dense_macs},
              {"executed_macs", l.executed_macs}, {"skipped_macs", l.skipped_macs()}};
    if (l.gated) {
      j["gate_macs"] = l.gate_macs;
      j["in_channels"] = l.in_channels;
      j["active_in_channels"] = l.active_in_channels;
      j["out_channels"] = l.out_channels;
      j["active_out_channels"] = l.active_out_channels;
      j["dense_in_channels"] = l.dense_in_channels;
      j["dense_out_channels"] = l.dense_out_channels;
      json samples = json::array();
      for (const auto& x : l.samples)
        samples.push_back({{"dense_macs", x.dense_macs}, {"executed_macs", x.executed_macs},
                           {"active_in_channels", x.active_in_channels}, {"active_out_channels", x.active_out_channels}});
      j["samples"] = samples;
    }
    layers.push_back(j);
  }
  json samples = json::array();
  for (const auto& x : s.samples)
    samples.push_back({{"dense_macs", x.dense_macs}, {"executed_macs", x.executed_macs},
                       {"skipped_macs", x.skipped_macs()}, {"gate_macs", x.gate_macs}});
  return {{"dense_macs", s.dense_macs}, {"executed_macs", s.executed_macs}, {"skipped_macs", s.skipped_macs()},
          {"gate_macs", s.gate_macs}, {"nonfinite_inputs", s.nonfinite_inputs},
          {"nonfinite_outputs", s.nonfinite_outputs}, {"nonfinite_weights", s.nonfinite_weights}, {"samples", samples}, {"layers", layers}};
}

// `bench --batch N` sets a dynamic first dimension of the generated inputs; where nothing would
// take it, say so rather than time batch 1 under a batch-N label.
void check_batch_applies(const sluice::Model& model, const std::string& path, int64_t batch, bool given_inputs) {
  const std::string b = std::to_string(batch);
  if (given_inputs)
    throw UsageError("bench: --batch " + b + " applies to generated inputs only; with --input the batch is the .npy file's "
                "first dimension");
  std::string fixed;
  for (const auto& d : model.inputs()) {
    if (d.rank_known && !d.shape.empty() && d.shape[0] < 0) return;
    if (fixed.empty() && d.rank_known) fixed = "'" + d.name + "' is " + sluice::shape_str(d.shape);
  }
  throw UsageError("bench: --batch " + b + ", but no input of " + path + " has a dynamic first dimension" +
              (fixed.empty() ? "" : " (" + fixed + ")") + ": export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={NAME: {0: 'N'}})) or pass "
              "a batch-" + b + " input with --input NAME=FILE.npy");
}

// Random inputs of the declared shapes: `shapes` (--shape) where given, else a dynamic first
// dimension becomes `batch`; any other dynamic dimension must come from --shape (set to 1, a
// CNN's image would shrink to a pixel and the timing mean nothing).
std::map<std::string, sluice::Tensor> random_inputs(const sluice::Model& model, int64_t batch,
                                                    const std::map<std::string, sluice::Shape>& shapes) {
  std::map<std::string, sluice::Tensor> inputs;
  std::mt19937 rng(0);
  std::normal_distribution<float> dist;
  for (const auto& d : model.inputs()) {
    sluice::Shape s = d.shape;
    if (auto it = shapes.find(d.name); it != shapes.end()) {
      bool fits = !d.rank_known || it->second.size() == d.shape.size();
      for (size_t i = 0; fits && d.rank_known && i < s.size(); ++i) fits = s[i] < 0 || s[i] == it->second[i];
      if (!fits)
        throw UsageError("--shape " + d.name + "=...: " + sluice::shape_str(it->second) + " does not fit the model's input '" +
                    d.name + "' " + sluice::shape_str(d.shape));
      s = it->second;
      if (std::find(s.begin(), s.end(), 0) != s.end())
        throw UsageError("--shape " + d.name + "=...: " + sluice::shape_str(s) + " is empty (a dimension of 0): nothing to time");
    } else {
      if (!d.rank_known)
        throw UsageError("bench: the model gives input '" + d.name + "' no shape, so bench cannot make one up: give it with --shape " +
                    d.name + "=DxDx... or --input " + d.name + "=FILE.npy");
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] >= 0) continue;
        if (i > 0)
          throw UsageError("bench: input '" + d.name + "' has dynamic dimensions " + sluice::shape_str(d.shape) +
                      " beyond the batch: give them with --shape " + d.name + "=DxDx... (e.g. 1x3x224x224) or --input " +
                      d.name + "=FILE.npy");
        s[i] = batch;
      }
    }
    if (d.dtype != sluice::DType::Float32)
      throw UsageError("bench generates float32 inputs only; input '" + d.name + "' is " + sluice::dtype_name(d.dtype) +
                  ": pass it with --input");
    double bytes = sizeof(float);
    for (int64_t v : s) bytes *= static_cast<double>(v);
    if (const double have = sluice::runtime::machine_bytes(); have > 0 && bytes > have / 2)
      throw Error("bench: input '" + d.name + "' of shape " + sluice::shape_str(s) + " would take " +
                  sluice::runtime::gib(bytes) + " (more than half of " + sluice::runtime::memory_limit().what +
                  "): is that dimension in the model meant? An input of another shape can be given with --input " + d.name +
                  "=FILE.npy");
    sluice::Tensor t(d.dtype, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
    inputs[d.name] = std::move(t);
  }
  return inputs;
}

std::map<std::string, sluice::Shape> parse_shapes(const std::vector<std::string>& specs) {
  std::map<std::string, sluice::Shape> shapes;
  for (const auto& spec : specs) {
    auto eq = spec.find('=');
    if (eq == std::string::npos) throw UsageError("--shape " + spec + ": expected NAME=DxDxD, e.g. input=1x3x224x224");
    sluice::Shape s;
    const std::string dims = spec.substr(eq + 1);
    if (!dims.empty() && dims.back() == 'x')  // getline drops an empty last part: "1x3x" read as [1, 3]
      throw UsageError("--shape " + spec + ": ends in 'x' with no dimension after it");
    std::stringstream ss(dims);
    std::string part;
    while (std::getline(ss, part, 'x')) {
      size_t used = 0;
      long long d = -1;
      try {
        d = std::stoll(part, &used);
      } catch (...) {
      }
      if (used != part.size() || part.empty() || d < 0)
        throw UsageError("--shape " + spec + ": '" + part + "' is not a dimension (a non-negative integer)");
      s.push_back(d);
    }
    if (!shapes.emplace(spec.substr(0, eq), s).second)
      throw UsageError("--shape " + spec + ": input '" + spec.substr(0, eq) + "' is given twice");
  }
  return shapes;
}

// --shape NAME=...: every NAME must be one of the model's inputs.
void check_shape_names(const sluice::Model& model, const std::map<std::string, sluice::Shape>& shapes) {
  const auto ins = model.inputs();
  for (const auto& [name, shape] : shapes) {
    if (std::none_of(ins.begin(), ins.end(), [&](const auto& d) { return d.name == name; })) {
      throw UsageError("--shape " + name + "=...: the model has no input named '" + name + "' (its inputs: " +
                       input_names(model) + ")");
    }
  }
}

// --density or --gating off on a model without a recognised gate changes nothing: say so (stderr).
void note_gate_options(const std::string& model_path, const sluice::SessionOptions& options, const sluice::RunStats& s) {
  // (inputs with inf or NaN ran on the reference kernels, every channel computed: its own note)
  if ((options.density <= 0.f && options.gating) || s.nonfinite_inputs || s.nonfinite_outputs ||
      !s.nonfinite_weights.empty() ||
      std::any_of(s.layers.begin(), s.layers.end(), [](const auto& l) { return l.gated; }))
    return;
  const std::string option = options.density > 0.f && !options.gating ? "--density and --gating off have"
                             : options.density > 0.f                   ? "--density has"
                                                                       : "--gating off has";
  if (!options.optimize)
    std::cerr << "note: " << option << " no effect with --reference: the reference kernels run the model's own "
              << "ops, every channel computed\n";
  else
    std::cerr << "note: " << option << " no effect: " << model_path
              << " has no recognised FBS gate (`sluice inspect` lists the candidates and why each was not taken)\n";
}

// The k largest values of each row of a float output [N, classes] (or [N, classes, 1, 1]: a
// classifier's logits), as "  sample 0: 3 (7.21), 5 (2.10), ..." lines; nothing for other
// outputs. Ties (and NaNs, which come first) in index order.
void print_top(const sluice::Tensor& t, int k) {
  const sluice::Shape& s = t.shape();  // [N, C], or [N, C, 1, ...] (a conv head's logits)
  bool rows = s.size() >= 2 && s[1] > 0;
  for (size_t i = 2; i < s.size(); ++i) rows = rows && s[i] == 1;
  if (k <= 0 || t.dtype() != sluice::DType::Float32 || !rows) return;
  const int64_t n = t.shape()[0], c = t.shape()[1], kk = std::min<int64_t>(k, c);
  const float* v = t.data<float>();
  for (int64_t b = 0; b < n; ++b) {
    std::vector<int64_t> idx(static_cast<size_t>(c));
    std::iota(idx.begin(), idx.end(), 0);
    const float* r = v + b * c;
    std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](int64_t a, int64_t z) {
      const bool na = std::isnan(r[a]), nz = std::isnan(r[z]);  // NaN first, as TopK ranks it
      if (na || nz) return na && nz ? a < z : na;
      return r[a] > r[z] || (r[a] == r[z] && a < z);
    });
    std::printf("  sample %lld:", static_cast<long long>(b));
    for (int64_t j = 0; j < kk; ++j)
      std::printf("%s %lld (%.4g)", j ? "," : "", static_cast<long long>(idx[static_cast<size_t>(j)]),
                  static_cast<double>(r[idx[static_cast<size_t>(j)]]));
    std::printf("\n");
  }
  std::fflush(stdout);
}

int cmd_run(const std::string& model_path, const std::vector<std::string>& input_specs, const std::string& out_dir,
            const std::string& stats_path, const sluice::SessionOptions& options, int top) {
  sluice::Model model = sluice::Model::load(model_path);
  auto inputs = load_inputs(model, input_specs);
  // The output directory first: `-o out --stats-json out/stats.json` in a fresh directory. If
  // the run then fails, the directories made here (out_dir and any missing parents) are removed
  // again, deepest first, as long as they are empty.
  std::error_code ec;
  std::vector<std::filesystem::path> made;
  for (std::filesystem::path d = out_dir; !d.empty() && !std::filesystem::exists(d, ec); d = d.parent_path()) {
    made.push_back(d);
    if (d == d.parent_path()) break;
  }
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error(out_dir + ": cannot create the output directory: " + ec.message());
  sluice::RunStats stats;
  std::map<std::string, sluice::Tensor> outputs;
  try {
    if (!stats_path.empty()) sluice::cli::check_writable(stats_path, "the stats file");
    sluice::Session session(model, options);
    outputs = session.run(inputs, &stats);
  } catch (...) {
    for (const auto& d : made)
      if (!std::filesystem::is_empty(d, ec) || !std::filesystem::remove(d, ec)) break;
    throw;
  }
  note_gate_options(model_path, options, stats);
  std::set<std::string> used;  // outputs 'a/b' and 'a_b' both sanitise to a_b: the second gets a_b_2
  for (const auto& [name, t] : outputs) {
    std::string file = sanitize(name);
    for (int i = 2; used.count(file); ++i) file = sanitize(name) + "_" + std::to_string(i);
    used.insert(file);
    std::string path = (std::filesystem::path(out_dir) / (file + ".npy")).string();
    sluice::npy::save(path, t);
    std::cout << name << " " << sluice::shape_str(t.shape()) << " -> " << path << "\n" << std::flush;
    print_top(t, top);
  }
  if (!stats_path.empty()) {
    sluice::cli::write_file(stats_path, stats_json(stats).dump(2, ' ', false, json::error_handler_t::replace) + "\n",
                            "the stats file");
  }
  // An output whose shape differs from the one the model declares is said, as ONNX Runtime
  // warns of it (a Resize rounding once made an output one pixel short, silently).
  for (const sluice::ValueInfo& vi : model.outputs()) {
    const auto it = outputs.find(vi.name);
    if (it == outputs.end() || !vi.rank_known) continue;
    const sluice::Shape& got = it->second.shape();
    bool differs = got.size() != vi.shape.size();
    for (size_t d = 0; !differs && d < got.size(); ++d) differs = vi.shape[d] >= 0 && vi.shape[d] != got[d];
    if (differs)
      std::cerr << "note: output '" << vi.name << "' has shape " << sluice::shape_str(got)
                << ", where the model declares " << sluice::shape_str(vi.shape)
                << " (if the model is right, this is a Sluice bug: please report it with the file)\n";
  }
  if (!stats.nonfinite_weights.empty())
    std::cerr << "note: the weights or bias of '" << stats.nonfinite_weights << "' hold inf or NaN: the run used the reference "
                 "kernels, whose Relu keeps NaN (the fast kernels' fused Relu maps it to 0; ONNX Runtime keeps it)\n";
  if (stats.nonfinite_inputs)
    std::cerr << "note: the inputs hold inf or NaN: the run used the reference kernels, which multiply what the fast "
                 "ones skip (0 * inf is NaN there, as in ONNX Runtime)\n";
  if (stats.nonfinite_outputs)
    std::cerr << "note: an inf or NaN arose inside the network: the run was repeated on the reference kernels, which "
                 "multiply what the fast ones skip (0 * inf is NaN there, as in ONNX Runtime)\n";
  std::cout << "MACs: " << stats.executed_macs << " executed of " << stats.dense_macs << " dense";
  if (stats.dense_macs > 0)
    std::printf(" (%.1f%% skipped)", 100.0 * static_cast<double>(stats.skipped_macs()) / static_cast<double>(stats.dense_macs));
  std::cout << "\n";
  if (stats.gate_macs > 0) std::cout << "gate MACs: " << stats.gate_macs << " (predictors, not included above)\n";
  return 0;
}

// Per-layer time summed over the timed runs, slowest first (the --profile table).
void print_profile(const std::vector<sluice::RunStats>& runs, size_t top) {
  std::vector<std::pair<double, size_t>> order;
  const auto& layers = runs.front().layers;
  double total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    double t = 0;
    for (const auto& r : runs) t += r.layers[i].time_ms;
    order.emplace_back(t / static_cast<double>(runs.size()), i);
    total += order.back().first;
  }
  std::sort(order.rbegin(), order.rend());
  std::printf("%-40s %-20s %-28s %9s %7s %9s\n", "layer", "op", "kernel", "ms", "%", "GMAC/s");
  for (size_t j = 0; j < std::min(top, order.size()); ++j) {
    const auto& l = layers[order[j].second];
    const double ms = order[j].first;
    std::printf("%-40.40s %-20.20s %-28.28s %9.3f %6.1f%% %9.1f\n", l.name.c_str(), l.op.c_str(), l.kernel.c_str(), ms,
                100 * ms / total, ms > 0 ? l.executed_macs / 1e6 / ms : 0.0);
  }
  std::printf("(%zu layers, %.3f ms summed per run)\n", layers.size(), total);
}

// {name: shape} of the inputs a bench timed, for its JSON.
json input_shapes(const std::map<std::string, sluice::Tensor>& inputs) {
  json j = json::object();
  for (const auto& [name, t] : inputs) j[name] = t.shape();
  return j;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// The session options a bench JSON records, in the CLI's own words (what --against-option sets).
json options_json(const sluice::SessionOptions& o) {
  return {{"gating", o.gating},
          {"density", o.density},
          {"sparse", o.sparse == sluice::SparseMode::Off      ? "off"
                     : o.sparse == sluice::SparseMode::Always ? "always"
                                                              : "auto"},
          {"planes", o.resident_planes ? "resident" : "nhwc"},
          {"reference", !o.optimize}};
}

// `--against-option KEY=VALUE`: the second session's options differ from the first's by these.
void apply_against_option(sluice::SessionOptions& o, const std::string& spec) {
  const size_t eq = spec.find('=');
  const std::string key = spec.substr(0, eq), value = eq == std::string::npos ? "" : spec.substr(eq + 1);
  auto bad = [&](const char* allowed) {
    return UsageError("--against-option " + spec + ": " + key + " takes " + allowed);
  };
  if (key == "gating") {
    if (value != "on" && value != "off") throw bad("on or off");
    o.gating = value == "on";
  } else if (key == "sparse") {
    if (value != "auto" && value != "always" && value != "off") throw bad("auto, always or off");
    o.sparse = value == "off" ? sluice::SparseMode::Off
               : value == "always" ? sluice::SparseMode::Always : sluice::SparseMode::Measured;
  } else if (key == "planes") {
    if (value != "resident" && value != "nhwc") throw bad("resident or nhwc");
    o.resident_planes = value == "resident";
  } else if (key == "density") {
    char* end = nullptr;
    const double d = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(d > 0 && d <= 1)) throw bad("a density in (0, 1]");
    o.density = static_cast<float>(d);
  } else if (key == "reference") {
    if (value != "on" && value != "off") throw bad("on or off");
    o.optimize = value == "off";
  } else {
    throw UsageError("--against-option " + spec + ": no option '" + key +
                "' (KEY=VALUE with KEY one of gating, sparse, planes, density, reference)");
  }
}

// `bench A --against B` (or A with --against-option): both sessions built, then timed in
// alternating blocks of `block` runs (A B B A A B ...: the order in a pair alternates, so that a
// steady drift of the machine favours neither), so that both see the same spells of a shared
// machine. The ratio is the median over adjacent block pairs of median(B block) / median(A block).
// Each block starts with `block_warmup` untimed runs: after the unpruned ResNet-18, its slimmed
// copy's first runs took 2.4-2.6 ms against a steady 2.2 (the big model's weights had taken the
// caches), which cost the 20%-sized side ~5% of its speedup at blocks of 5 (bench/README.md).
int bench_against(const std::string& a_path, const std::string& b_path, const std::vector<std::string>& input_specs,
                  const std::map<std::string, sluice::Shape>& shapes, const sluice::SessionOptions& options,
                  const sluice::SessionOptions& options_b, const std::string& b_label, int runs, int warmup,
                  int64_t batch, int block, int block_warmup, bool as_json) {
  if (!input_specs.empty()) throw UsageError("bench --against: generated inputs only (each model gets its own); drop --input");
  if (options.profile) throw UsageError("bench --against: --profile times one model; run it without --against");
  const int threads = options.threads > 0 ? options.threads : omp_get_num_procs();
  struct Side {
    std::string path;
    std::unique_ptr<sluice::Model> model;
    std::unique_ptr<sluice::Session> session;
    std::map<std::string, sluice::Tensor> inputs;
    sluice::RunStats stats;
    std::vector<double> ms, block_medians;
  };
  if (block > runs)
    throw UsageError("bench --against: --block " + std::to_string(block) + " is more than --runs " + std::to_string(runs) +
                ": give at least one block of runs per side (--runs a multiple of --block)");
  if (!shapes.empty() && batch != 1) throw UsageError("bench: give the batch in --shape, not also with --batch");
  std::vector<Side> side(2);
  for (int k = 0; k < 2; ++k) {
    Side& sd = side[static_cast<size_t>(k)];
    sd.path = k == 0 ? a_path : b_path;
    sd.model = std::make_unique<sluice::Model>(sluice::Model::load(sd.path));
  }
  // A --shape names an input of either model (their inputs may differ): each gets its own.
  for (const auto& [name, shape] : shapes) {
    bool known = false;
    for (const Side& sd : side)
      for (const auto& d : sd.model->inputs()) known |= d.name == name;
    if (!known)
      throw UsageError("--shape " + name + "=...: neither " + a_path + " nor " + b_path + " has an input named '" + name + "'");
  }
  for (int k = 0; k < 2; ++k) {
    Side& sd = side[static_cast<size_t>(k)];
    std::map<std::string, sluice::Shape> own;
    for (const auto& d : sd.model->inputs())
      if (auto it = shapes.find(d.name); it != shapes.end()) own.insert(*it);
    if (batch != 1) check_batch_applies(*sd.model, sd.path, batch, false);
    sd.inputs = random_inputs(*sd.model, batch, own);
    sd.session = std::make_unique<sluice::Session>(*sd.model, k == 0 ? options : options_b);
    for (int i = 0; i < warmup; ++i) sd.session->run(sd.inputs, &sd.stats);
  }
  const int64_t blocks = (static_cast<int64_t>(runs) + block - 1) / block;
  const bool progress = !as_json && isatty(STDERR_FILENO);
  for (int64_t p = 0; p < blocks; ++p) {
    for (int turn = 0; turn < 2; ++turn) {
      Side& sd = side[static_cast<size_t>(p % 2 == 0 ? turn : 1 - turn)];
      std::vector<double> t;
      for (int i = 0; i < block_warmup; ++i) sd.session->run(sd.inputs, &sd.stats);
      for (int i = 0; i < block; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        sd.session->run(sd.inputs, &sd.stats);
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      sd.ms.insert(sd.ms.end(), t.begin(), t.end());
      sd.block_medians.push_back(median_of(t));
    }
    if (progress)
      std::fprintf(stderr, "\rblock pair %lld/%lld", static_cast<long long>(p + 1), static_cast<long long>(blocks));
  }
  if (progress) std::fprintf(stderr, "\r%*s\r", 32, "");
  for (int k = 0; k < 2; ++k) note_gate_options(side[static_cast<size_t>(k)].path, k == 0 ? options : options_b,
                                                side[static_cast<size_t>(k)].stats);
  std::vector<double> ratios;
  for (size_t p = 0; p < side[0].block_medians.size(); ++p)
    ratios.push_back(side[1].block_medians[p] / side[0].block_medians[p]);
  std::vector<double> sorted = ratios;
  std::sort(sorted.begin(), sorted.end());
  // Quartiles by linear interpolation between order statistics (as numpy's default).
  auto quantile = [&](double q) {
    const double at = q * static_cast<double>(sorted.size() - 1);
    const size_t i = static_cast<size_t>(at);
    return i + 1 < sorted.size() ? sorted[i] + (at - static_cast<double>(i)) * (sorted[i + 1] - sorted[i]) : sorted[i];
  };
  const double ratio = median_of(ratios), lo = quantile(0.25), hi = quantile(0.75);
  auto side_json = [&](const Side& sd) {
    json r{{"model", sd.path}, {"label", &sd == &side[0] ? a_path : b_label}, {"median_ms", median_of(sd.ms)},
                {"min_ms", *std::min_element(sd.ms.begin(), sd.ms.end())},
                {"max_ms", *std::max_element(sd.ms.begin(), sd.ms.end())}, {"dense_macs", sd.stats.dense_macs},
                {"executed_macs", sd.stats.executed_macs}, {"gate_macs", sd.stats.gate_macs},
                {"nonfinite_inputs", sd.stats.nonfinite_inputs}, {"nonfinite_outputs", sd.stats.nonfinite_outputs}, {"nonfinite_weights", sd.stats.nonfinite_weights},
                {"input_shapes", input_shapes(sd.inputs)}, {"times_ms", sd.ms},
                {"block_medians_ms", sd.block_medians}};
    r.update(options_json(&sd == &side[0] ? options : options_b));
    return r;
  };
  if (as_json) {
    json j = side_json(side[0]);
    j.update({{"threads", threads}, {"batch", batch}, {"runs", blocks * block}, {"warmup", warmup}, {"block", block}, {"block_warmup", block_warmup},
              {"against", side_json(side[1])}, {"ratio_median", ratio}, {"ratio_iqr", {lo, hi}},
              {"ratio_blocks", ratios}});
    std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (int k = 0; k < 2; ++k)
    std::printf("%s: median %.3f ms over %zu runs, %.1f M MACs\n", (k == 0 ? a_path : b_label).c_str(),
                median_of(side[static_cast<size_t>(k)].ms), side[static_cast<size_t>(k)].ms.size(),
                side[static_cast<size_t>(k)].stats.executed_macs / 1e6);
  std::printf("time of %s / time of %s: %.3f (median of %lld block pairs of %d runs after %d untimed, interquartile %.3f-%.3f), %d thread%s\n",
              b_label.c_str(), a_path.c_str(), ratio, static_cast<long long>(blocks), block, block_warmup, lo, hi, threads,
              threads == 1 ? "" : "s");
  for (int k = 0; k < 2; ++k)
    if (const std::string note = sluice::runtime::uneven_timing_note(side[static_cast<size_t>(k)].ms, k == 0 ? a_path : b_label,
                                                                     threads, omp_get_num_procs());
        !note.empty())
      std::cerr << note << "\n";
  return 0;
}

// bench's pairing flags: --against, --against-option, --block, --block-warmup.
struct Pairing {
  std::string against;
  std::vector<std::string> options;
  int block = 5, block_warmup = 5;
  bool block_given = false, block_warmup_given = false;
};

int cmd_bench(const std::string& model_path, const std::vector<std::string>& input_specs,
              const std::vector<std::string>& shape_specs, sluice::SessionOptions options, int runs, int warmup,
              int64_t batch, bool as_json, const Pairing& pairing = {}) {
  if (runs < 1) throw UsageError("--runs must be at least 1");
  const std::string& against = pairing.against;
  const std::vector<std::string>& against_options = pairing.options;
  if ((pairing.block_given || pairing.block_warmup_given) && against.empty() && against_options.empty())
    throw UsageError(std::string("bench: ") + (pairing.block_given ? "--block" : "--block-warmup") +
                " applies with --against or --against-option only");
  if (!against.empty() || !against_options.empty()) {
    const int block = pairing.block_given ? pairing.block : std::min(pairing.block, runs);  // the default fits any --runs
    sluice::SessionOptions options_b = options;
    std::string label = against.empty() ? model_path : against;
    for (const std::string& spec : against_options) {
      const sluice::SessionOptions before = options_b;
      apply_against_option(options_b, spec);
      if (before.gating == options_b.gating && before.sparse == options_b.sparse &&
          before.resident_planes == options_b.resident_planes && before.density == options_b.density &&
          before.optimize == options_b.optimize)
        throw UsageError("--against-option " + spec + ": already so" +
                    (&spec == &against_options.front() ? std::string(" for the first side") : " (given twice?)") +
                    "; it would time the same thing twice");
      label += (&spec == &against_options.front() ? " with " : ", ") + spec;
    }
    return bench_against(model_path, against.empty() ? model_path : against, input_specs, parse_shapes(shape_specs),
                         options, options_b, label, runs, warmup, batch, block, pairing.block_warmup, as_json);
  }
  const int threads = options.threads > 0 ? options.threads : omp_get_num_procs();  // what the session uses for 0
  const bool profile = options.profile;
  sluice::Model model = sluice::Model::load(model_path);
  const auto shapes = parse_shapes(shape_specs);
  check_shape_names(model, shapes);
  if (!shapes.empty() && !input_specs.empty())
    throw UsageError("bench: --shape applies to generated inputs only; with --input the shape is the .npy file's");
  if (!shapes.empty() && batch != 1) throw UsageError("bench: give the batch in --shape, not also with --batch");
  if (batch != 1) check_batch_applies(model, model_path, batch, !input_specs.empty());
  auto inputs = input_specs.empty() ? random_inputs(model, batch, shapes) : load_inputs(model, input_specs);
  sluice::Session session(model, options);
  sluice::RunStats stats;
  for (int i = 0; i < warmup; ++i) session.run(inputs, &stats);
  if (warmup > 0) note_gate_options(model_path, options, stats);
  std::vector<double> ms;
  std::vector<sluice::RunStats> profiles;
  // A live run counter on a terminal only: piped into a log it would be one long line.
  const bool progress = !as_json && isatty(STDERR_FILENO);
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    session.run(inputs, &stats);
    if (profile) profiles.push_back(stats);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (progress) std::fprintf(stderr, "\rrun %d/%d", i + 1, runs);
  }
  if (progress) std::fprintf(stderr, "\r%*s\r", 24, "");
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = median_of(ms);
  const json shapes_j = input_shapes(inputs);  // what was timed: the inputs' shapes (generated, or the files')
  json j = {{"model", model_path}, {"threads", threads}, {"runs", runs}, {"warmup", warmup},
            {"input_shapes", shapes_j}, {"median_ms", median}, {"min_ms", sorted.front()}, {"max_ms", sorted.back()},
            {"dense_macs", stats.dense_macs}, {"executed_macs", stats.executed_macs}, {"gate_macs", stats.gate_macs},
            {"nonfinite_inputs", stats.nonfinite_inputs}, {"nonfinite_outputs", stats.nonfinite_outputs}, {"nonfinite_weights", stats.nonfinite_weights}, {"times_ms", ms}};
  j.update(options_json(options));
  if (profile && !profiles.empty()) {  // per layer: median and minimum over the timed runs
    json layers = json::array();
    for (size_t i = 0; i < profiles.front().layers.size(); ++i) {
      std::vector<double> t;
      for (const auto& r : profiles) t.push_back(r.layers[i].time_ms);
      std::sort(t.begin(), t.end());
      const auto& l = profiles.front().layers[i];
      layers.push_back({{"name", l.name}, {"op", l.op}, {"kernel", l.kernel}, {"median_ms", t[t.size() / 2]},
                        {"min_ms", t.front()}, {"executed_macs", l.executed_macs}});
    }
    j["layers"] = layers;
  }
  if (as_json) {
    std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    std::printf("%s: median %.3f ms (min %.3f, max %.3f) over %d runs, %d thread%s, %.1f M MACs, %.1f GMAC/s\n",
                model_path.c_str(), median, sorted.front(), sorted.back(), runs, threads, threads == 1 ? "" : "s", stats.executed_macs / 1e6,
                stats.executed_macs / 1e6 / median);
  }
  if (profile && !as_json) print_profile(profiles, 25);
  if (const std::string note = sluice::runtime::uneven_timing_note(ms, model_path, threads, omp_get_num_procs());
      !note.empty())
    std::cerr << note << "\n";
  if (!stats.nonfinite_weights.empty())
    std::cerr << "note: the weights or bias of '" << stats.nonfinite_weights << "' hold inf or NaN: these times are the "
                 "reference kernels', which every run of this model takes (see `sluice run`'s note)\n";
  if (stats.nonfinite_inputs)
    std::cerr << "note: the inputs hold inf or NaN: these times are the reference kernels', which every run with such "
                 "inputs takes (see `sluice run`'s note); time finite inputs for the fast kernels\n";
  if (stats.nonfinite_outputs)
    std::cerr << "note: an inf or NaN arises inside the network: every run is repeated on the reference kernels, and "
                 "these times are both runs' (see `sluice run`'s note)\n";
  return 0;
}

// Number checks with short messages (CLI11's own print the double range).
CLI::Validator number_check(const char* desc, bool (*ok)(double), const char* why) {
  return CLI::Validator(
      [ok, why](std::string& v) -> std::string {
        size_t used = 0;
        double d = 0;
        try {
          d = std::stod(v, &used);
        } catch (...) {
          used = 0;
        }
        if (used != v.size() || v.empty()) return v + " is not a number";
        return ok(d) ? std::string() : v + " " + why;
      },
      desc);
}
const CLI::Validator kNonNegative = number_check("N >= 0", [](double d) { return d >= 0; }, "is negative");
const CLI::Validator kPositive = number_check("N > 0", [](double d) { return d > 0; }, "is not positive");
const CLI::Validator kFinite = number_check("finite", [](double d) { return std::isfinite(d); }, "is not a finite number");
// A normalisation divisor: dividing by less than this turns pixels into inf.
const CLI::Validator kStd = number_check("S >= 1e-6", [](double d) { return std::isfinite(d) && d >= 1e-6; },
                                         "is not a standard deviation (finite, >= 1e-6)");
const CLI::Validator kDensity = number_check("0 < D <= 1", [](double d) { return d > 0 && d <= 1; },
                                             "is not a density in (0, 1]");

// The flags every command that builds a Session takes.
struct SessionFlags {
  int threads = 0;
  bool reference = false;
  std::string gating = "on";
  float density = 0.f;
  std::string sparse = "auto";
  std::string planes = "resident";
  bool profile = false;

  void add(CLI::App* cmd) {
    cmd->add_option("-t,--threads", threads, "Threads (0: all cores)")->check(kNonNegative)->capture_default_str();
    cmd->add_flag("--reference", reference, "Use the plain reference kernels (no graph optimisation, no gating)");
    cmd->add_option("--gating", gating, "on: gated convs skip suppressed channels; off: compute densely and mask")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    cmd->add_option("--density", density,
                    "Run-time density override in (0, 1]: each gate keeps min(k, ceil(D * C_out)) channels")
        ->check(kDensity);
    cmd->add_option("--sparse", sparse,
                    "Sparse kernels for convs and Gemms: auto (those with >= 50% zero weights, where the sparse "
                    "kernel measures faster), always (wherever it applies, whatever the zeros: for tests and "
                    "benchmarks), or off (dense)")
        ->check(CLI::IsMember({"auto", "always", "off"}))
        ->capture_default_str();
    cmd->add_option("--planes", planes,
                    "resident: activations between convs on the direct planar kernel or the sparse kernels stay "
                    "planar, and such a conv reads an NCHW model input as it is; nhwc: every conv reads and writes "
                    "NHWC (what resident planes gain)")
        ->check(CLI::IsMember({"resident", "nhwc"}))
        ->capture_default_str();
  }
  sluice::SessionOptions options() const {
    if (reference && (sparse != "auto" || planes != "resident"))
      std::cerr << "note: " << (sparse != "auto" ? "--sparse " + sparse : "--planes " + planes)
                << " has no effect with --reference: the reference kernels run the model's own ops\n";
    sluice::SessionOptions o;
    o.threads = threads;
    o.optimize = !reference;
    o.profile = profile;
    o.gating = gating == "on";
    o.density = density;
    o.sparse = sparse == "off" ? sluice::SparseMode::Off
               : sparse == "always" ? sluice::SparseMode::Always : sluice::SparseMode::Measured;
    o.resident_planes = planes == "resident";
    return o;
  }
};

}  // namespace

// Levenshtein distance, for the nearest subcommand to a mistyped one.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

int main(int argc, char** argv) {
  CLI::App app{"Sluice: an inference runtime for pruned and dynamically gated CNNs (ONNX).", "sluice"};
  app.set_version_flag("--version", "sluice 0.1.0");
  app.require_subcommand(1);
  app.footer("Exit status: 0 done; 1 the model, its inputs or the run failed (the message names the file, node or "
             "value); 2 the command line is wrong. `sluice SUBCOMMAND --help` lists a subcommand's options.");

  std::string model, out_dir = ".", stats_path;
  std::vector<std::string> input_specs, shape_specs;
  int runs = 20, warmup = 3;
  Pairing pairing;
  int64_t batch = 1;
  bool as_json = false;
  SessionFlags run_flags, bench_flags, inspect_flags, eval_flags;
  sluice::cli::EvalOptions eval_opts;

  auto* run = app.add_subcommand("run", "Run a model on .npy inputs and write one .npy per output.");
  run->add_option("model", model, "ONNX model file")->required();
  // Not required: a model without graph inputs (all constants) runs with none, and a missing
  // one is named by load_inputs with the shape it needs.
  run->add_option("-i,--input", input_specs, "Input as [NAME=]FILE.npy (repeat for several inputs)")->allow_extra_args(false);
  run->add_option("-o,--output-dir", out_dir, "Directory for <output name>.npy files")->capture_default_str();
  run->add_option("--stats-json", stats_path, "Write per-layer MAC statistics as JSON to this file");
  int top = 0;
  run->add_option("--top", top,
                  "Also print, per sample, the K largest values of each [N, classes] output and their indices")
      ->check(kNonNegative);
  run_flags.add(run);

  auto* bench = app.add_subcommand("bench", "Time a model: median, min and max latency over repeated runs.");
  bench->add_option("model", model, "ONNX model file")->required();
  bench->add_option("-i,--input", input_specs, "Input as [NAME=]FILE.npy (default: random data)")->allow_extra_args(false);
  bench_flags.add(bench);
  bench->add_option("-n,--runs", runs, "Timed runs")->check(kPositive)->capture_default_str();
  bench->add_option("-w,--warmup", warmup, "Untimed warm-up runs")->check(kNonNegative)->capture_default_str();
  bench->add_option("-b,--batch", batch, "Batch size for a dynamic first dimension")->check(kPositive)->capture_default_str();
  bench->add_option("-s,--shape", shape_specs, "Shape of a generated input, NAME=1x3x224x224 (for dynamic dimensions)")
      ->allow_extra_args(false);
  bench->add_flag("--json", as_json, "Print the result as JSON");
  bench->add_flag("--profile", bench_flags.profile, "Time every layer and print the slowest ones");
  bench->add_option("--against", pairing.against,
                    "A second model to time alongside, in alternating blocks of runs, and give the ratio of its time "
                    "to this one's (e.g. the unpruned model against its slimmed copy)");
  bench->add_option("--against-option", pairing.options,
                    "KEY=VALUE: time the model (or --against's) also with this option changed, alongside, and give "
                    "the ratio (gating=off, sparse=off|always|auto, planes=nhwc|resident, density=D, reference=on)")
      ->allow_extra_args(false);
  bench->add_option("--block", pairing.block, "Timed runs per block with --against")->check(kPositive)->capture_default_str();
  bench->add_option("--block-warmup", pairing.block_warmup,
                    "Untimed runs at the start of each block with --against (the first runs after the other model "
                    "are slower: its data has taken the caches)")
      ->check(kNonNegative)
      ->capture_default_str();

  auto* inspect = app.add_subcommand("inspect", "Show the optimised graph: per node op, shapes, MACs, kernel.");
  inspect->add_option("model", model, "ONNX model file")->required();
  inspect->add_option("-s,--shape", shape_specs, "Concrete input shape NAME=1x3x224x224 (for dynamic inputs)")
      ->allow_extra_args(false);
  inspect->add_option("-i,--input", input_specs,
                      "Input as NAME=FILE.npy: its shape, and the value of a small integer input that sets a shape "
                      "(TopK's K, a Reshape target)")
      ->allow_extra_args(false);
  inspect->add_option("-b,--batch", batch, "Batch size for a dynamic first dimension (as bench)")
      ->check(kPositive)->capture_default_str();
  inspect->add_flag("--json", as_json, "Print JSON");
  inspect_flags.add(inspect);

  auto* eval = app.add_subcommand("eval", "Classify a labelled test set: accuracy, executed MACs per image, and a plot of "
                                            "per-layer active-channel density.");
  eval->add_option("model", eval_opts.model, "ONNX classifier (input N x 1 x 28 x 28, output N x classes)")->required();
  eval->add_option("--data", eval_opts.data, "Dataset")->check(CLI::IsMember({"fashion-mnist"}))->capture_default_str();
  eval->add_option("--data-dir", eval_opts.data_dir, "Where the dataset's .gz files are (Debian: dataset-fashion-mnist)")
      ->capture_default_str();
  eval->add_option("--split", eval_opts.split, "test or train")->check(CLI::IsMember({"test", "train"}))->capture_default_str();
  eval->add_option("-l,--limit", eval_opts.limit, "Evaluate only the first N images (0: all)")
      ->check(kNonNegative)->capture_default_str();
  eval->add_option("-b,--batch", eval_opts.batch, "Images per run")->check(kPositive)->capture_default_str();
  eval->add_option("--mean", eval_opts.mean, "Input normalisation: (pixel/255 - mean) / std")
      ->check(kFinite)->capture_default_str();
  eval->add_option("--std", eval_opts.std, "Input normalisation: (pixel/255 - mean) / std")
      ->check(kStd)->capture_default_str();
  eval->add_option("--plot", eval_opts.plot, "SVG plot of per-layer active-channel density (default: <model>_density.svg; - for none)");
  eval->add_option("--json", eval_opts.json, "Also write the results as JSON to this file");
  eval->add_option("--progress", eval_opts.progress, "Progress on stderr: auto (bar on a terminal), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))->capture_default_str();
  eval_flags.add(eval);

  auto* ops = app.add_subcommand("ops", "List the supported ONNX operators.");
  bool ops_json = false;
  ops->add_flag("--json", ops_json, "Print a JSON list");

  // `sluice help` as `sluice --help`; a first word that is no subcommand is named, with the
  // nearest one (CLI11 said only "A subcommand is required").
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    if (word == "help") {  // `sluice help run`: that subcommand's help
      const CLI::App* sub = nullptr;
      if (argc > 2)
        for (const CLI::App* c : app.get_subcommands({}))
          if (c->get_name() == argv[2]) sub = c;
      std::cout << (sub ? sub->help() : app.help());
      return 0;
    }
    std::string names, nearest;
    size_t best = std::string::npos;
    for (const CLI::App* sub : app.get_subcommands({})) {
      const std::string& name = sub->get_name();
      if (name == word) {
        best = 0;
        break;
      }
      names += (names.empty() ? "" : ", ") + name;
      const size_t d = edit_distance(word, name);
      if (d < best) best = d, nearest = name;
    }
    if (const size_t d = edit_distance(word, "help"); best != 0 && d < best) best = d, nearest = "help";
    if (best != 0) {
      std::error_code ec;
      const bool model = word.size() > 5 && (word.substr(word.size() - 5) == ".onnx" || std::filesystem::is_regular_file(word, ec));
      std::cerr << "sluice: error: unknown subcommand '" << word << "'"
                << (model        ? "; to run that model: sluice run " + word + " -i INPUT.npy"
                    : best <= 2 ? "; did you mean '" + nearest + "'?"
                                 : "")
                << " (subcommands: " << names << "; see --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    // `-i a.npy b.npy`: each option takes one value; say how to give several.
    const bool extra = std::string(e.what()).find("not expected") != std::string::npos;
    std::cerr << "sluice: error: " << e.what()
              << (extra ? " (give each input its own flag: -i a.npy -i b.npy; the model is the one argument "
                          "without a flag)"
                        : "")
              << " (see --help)\n";
    return 2;
  }
  try {
    const int rc = [&]() -> int {
      if (*run) return cmd_run(model, input_specs, out_dir, stats_path, run_flags.options(), top);
      if (*bench) {
        pairing.block_given = bench->count("--block") > 0;
        pairing.block_warmup_given = bench->count("--block-warmup") > 0;
        return cmd_bench(model, input_specs, shape_specs, bench_flags.options(), runs, warmup, batch, as_json, pairing);
      }
      if (*inspect) {
        const sluice::Model m = sluice::Model::load(model);
        sluice::Session session(m, inspect_flags.options());
        auto shapes = parse_shapes(shape_specs);
        check_shape_names(m, shapes);
        const auto given = load_inputs(m, input_specs, false);
        if (batch != 1 && !shapes.empty()) throw UsageError("inspect: give the batch in --shape, not also with --batch");
        // A dynamic first dimension alone (a dynamic batch) of an input that neither --shape nor
        // --input gives becomes --batch, as in bench; other dynamic dimensions still need --shape
        // (their error says so), and so does a rank-1 input (a length, not a batch).
        bool batched = false;
        for (const sluice::ValueInfo& d : m.inputs()) {
          if (shapes.count(d.name) || given.count(d.name) || !d.rank_known || d.shape.size() < 2 || d.shape[0] >= 0)
            continue;
          if (std::all_of(d.shape.begin() + 1, d.shape.end(), [](int64_t v) { return v >= 0; })) {
            sluice::Shape s = d.shape;
            s[0] = batch;
            shapes[d.name] = s;
            batched = true;
          }
        }
        if (batch != 1 && !batched) {
          std::string ins;
          for (const sluice::ValueInfo& d : m.inputs())
            ins += (ins.empty() ? "'" : ", '") + d.name + "' " + (d.rank_known ? sluice::shape_str(d.shape) : "(no shape)");
          throw UsageError("inspect: --batch " + std::to_string(batch) + ", but no input of " + model +
                           " has a dynamic batch with its other dimensions fixed, other than those --input gives (" +
                           ins + "): give shapes with --shape NAME=DxDx...");
        }
        for (const auto& [name, t] : given)
          if (auto it = shapes.find(name); it != shapes.end() && it->second != t.shape())
            throw UsageError("input '" + name + "': --shape gives " + sluice::shape_str(it->second) + ", the --input file " +
                        sluice::shape_str(t.shape()) + "; give one of them");
        std::cout << session.inspect(as_json, shapes, given);
        return 0;
      }
      if (*eval) return sluice::cli::cmd_eval(eval_opts, eval_flags.options());
      if (*ops) {
        json names = json::array();
        for (int i = 0; i < sluice::graph::kNumOpTypes; ++i) {
          std::string n = sluice::graph::op_name(static_cast<sluice::graph::OpType>(i));
          if (n.rfind("Sluice", 0) == 0) continue;  // internal ops
          if (ops_json) names.push_back(n);
          else std::cout << n << "\n";
        }
        if (ops_json) std::cout << names.dump() << "\n";
        return 0;
      }
      return 0;
    }();
    // (`bench --json > /dev/full` said nothing and exited 0.)
    std::cout.flush();
    if (!std::cout) throw Error("cannot write to standard output (a full disk, or a closed pipe?)");
    return rc;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::cerr << "sluice: error: " << msg << "\n";
    return dynamic_cast<const UsageError*>(&e) ? 2 : 1;
  }
  return 0;
}
