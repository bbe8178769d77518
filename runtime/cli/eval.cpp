#include "runtime/cli/eval.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/cli/datasets.h"
#include "runtime/cli/svg_plot.h"

namespace sluice::cli {

namespace {

using nlohmann::json;

struct Accum {  // running min / mean / max
  double sum = 0, min = INFINITY, max = -INFINITY;
  int64_t n = 0;
  void add(double v) {
    sum += v;
    min = std::min(min, v);
    max = std::max(max, v);
    ++n;
  }
  Range range() const { return n ? Range{sum / static_cast<double>(n), min, max} : Range{}; }
};

struct LayerAccum {
  std::string name;
  bool gated = false;
  int64_t in_channels = 0, out_channels = 0;
  Accum in, out, macs;
};

// Progress on stderr: a redrawn bar on a terminal, else a line every 10%.
class Progress {
 public:
  Progress(int64_t total, bool tty, bool enabled) : total_(total), tty_(tty), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  void update(int64_t done, double accuracy) {
    if (!enabled_) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = done > 0 ? secs * static_cast<double>(total_ - done) / static_cast<double>(done) : 0;
    if (tty_) {
      const int width = 30, filled = static_cast<int>(width * done / std::max<int64_t>(total_, 1));
      std::fprintf(stderr, "\r[%s%s] %lld/%lld  accuracy %.2f%%  %.0f img/s  ETA %.0fs ",
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_), 100 * accuracy,
                   secs > 0 ? done / secs : 0.0, eta);
      if (done == total_) std::fprintf(stderr, "\n");
    } else if (done * 10 / std::max<int64_t>(total_, 1) > last_decile_ || done == total_) {
      last_decile_ = done * 10 / std::max<int64_t>(total_, 1);
      std::fprintf(stderr, "%lld/%lld images, accuracy so far %.2f%%\n", static_cast<long long>(done),
                   static_cast<long long>(total_), 100 * accuracy);
    }
  }

 private:
  int64_t total_;
  bool tty_, enabled_;
  int64_t last_decile_ = 0;
  std::chrono::steady_clock::time_point start_;
};

std::string mmacs(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f M", v / 1e6);
  return buf;
}

}  // namespace

void check_writable(const std::string& path, const std::string& what) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(path, ec);
  errno = 0;
  {
    std::ofstream f(path, std::ios::app);  // (append: an existing file keeps its contents until written)
    if (!f)
      throw Error(path + ": cannot write " + what + ": " + (errno ? std::strerror(errno) : "unknown reason") +
                  " (check that its directory exists and the name is not too long)");
  }
  if (!existed) std::filesystem::remove(path, ec);  // no empty file left behind if the work then fails
}

void write_file(const std::string& path, const std::string& text, const std::string& what) {
  errno = 0;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    throw Error(path + ": cannot write " + what + ": " + (errno ? std::strerror(errno) : "unknown reason") +
                " (check that its directory exists)");
  f << text;
  f.close();
  if (!f) throw Error(path + ": cannot write " + what + ": write error (disk full?)");
}

int cmd_eval(const EvalOptions& ev, const SessionOptions& options) {
  if (ev.data != "fashion-mnist") throw Error("--data " + ev.data + ": the only dataset is fashion-mnist");
  if (ev.batch < 1) throw Error("--batch must be at least 1");
  if (ev.limit < 0) throw Error("--limit must be at least 0 (0: the whole split)");
  const std::string plot_path =
      ev.plot.empty() ? std::filesystem::path(ev.model).stem().string() + "_density.svg" : ev.plot;
  if (ev.plot != "-") check_writable(plot_path, "the plot (use --plot FILE.svg, or --plot - for none)");
  if (!ev.json.empty()) check_writable(ev.json, "the JSON results");
  Model model = Model::load(ev.model);
  auto inputs = model.inputs();
  auto outputs = model.outputs();
  if (inputs.size() != 1 || inputs[0].dtype != DType::Float32 || inputs[0].shape.size() != 4)
    throw Error(ev.model + ": eval needs a classifier with one float32 image input N x C x H x W; the model has " +
                std::to_string(inputs.size()) + " input(s), the first " +
                (inputs.empty() ? std::string("-") : std::string(dtype_name(inputs[0].dtype)) + " " + shape_str(inputs[0].shape)));
  Dataset data = load_fashion_mnist(ev.data_dir, ev.split, ev.mean, ev.std);
  const ValueInfo& in = inputs[0];
  const Shape want = {-1, data.channels, data.height, data.width};
  for (size_t i = 1; i < 4; ++i)
    if (in.shape[i] >= 0 && in.shape[i] != want[i])
      throw Error(ev.model + ": input '" + in.name + "' has shape " + shape_str(in.shape) + " but " + data.name +
                  " images are " + shape_str({data.channels, data.height, data.width}));
  if (data.count == 0)
    throw Error(ev.data_dir + ": " + data.name + " holds no images: nothing to evaluate (check --data-dir and --split)");
  const int64_t total = ev.limit > 0 ? std::min(ev.limit, data.count) : data.count;
  if (ev.limit > data.count)
    std::fprintf(stderr, "note: --limit %lld, but the %s split has %lld images: evaluating all of them\n",
                 static_cast<long long>(ev.limit), ev.split.c_str(), static_cast<long long>(data.count));
  const int64_t batch = in.shape[0] > 0 ? in.shape[0] : std::min(ev.batch, total);  // a fixed batch wins
  const int64_t image_size = data.channels * data.height * data.width;

  Session session(model, options);
  const bool tty = ev.progress == "on" || (ev.progress == "auto" && isatty(STDERR_FILENO));
  Progress progress(total, tty, ev.progress != "off");
  std::fprintf(stderr, "evaluating %s on %s: %lld images, batch %lld\n", ev.model.c_str(), data.name.c_str(),
               static_cast<long long>(total), static_cast<long long>(batch));

  int64_t correct = 0, done = 0, dense_per_image = 0, gate_per_image = 0;
  Accum executed;
  std::vector<LayerAccum> layers;
  std::vector<int64_t> confusion(data.classes.size() * data.classes.size(), 0);
  RunStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  while (done < total) {
    // A fixed-batch model gets its last batch padded; padding rows are not counted.
    const int64_t n = std::min(batch, total - done);
    Tensor x(DType::Float32, {batch == n || in.shape[0] > 0 ? batch : n, data.channels, data.height, data.width});
    std::copy_n(data.images.data() + done * image_size, n * image_size, x.data<float>());
    auto out = session.run({{in.name, x}}, &stats);
    const Tensor& logits = out.at(outputs[0].name);
    if (logits.dtype() != DType::Float32 || logits.shape().size() != 2 || logits.shape()[0] != x.shape()[0] ||
        logits.shape()[1] < 2)
      throw Error(ev.model + ": eval needs the first output to be float32 logits N x classes; '" + outputs[0].name +
                  "' is " + dtype_name(logits.dtype()) + " " + shape_str(logits.shape()));
    const int64_t classes = logits.shape()[1];
    for (int64_t b = 0; b < n; ++b) {
      const float* row = logits.data<float>() + b * classes;
      const int64_t pred = std::max_element(row, row + classes) - row;
      const int64_t label = data.labels[static_cast<size_t>(done + b)];
      correct += pred == label;
      if (pred < static_cast<int64_t>(data.classes.size()))
        ++confusion[static_cast<size_t>(label) * data.classes.size() + static_cast<size_t>(pred)];
      executed.add(static_cast<double>(stats.samples[static_cast<size_t>(b)].executed_macs));
    }
    dense_per_image = stats.samples.empty() ? 0 : stats.samples[0].dense_macs;
    gate_per_image = stats.samples.empty() ? 0 : stats.samples[0].gate_macs;
    if (layers.empty()) {
      for (const auto& l : stats.layers)
        if (l.dense_macs > 0) layers.push_back({l.name, l.gated, l.in_channels, l.out_channels, {}, {}, {}});
    }
    size_t li = 0;
    for (const auto& l : stats.layers) {
      if (l.dense_macs <= 0) continue;
      if (li >= layers.size() || layers[li].name != l.name)
        throw Error("internal: the layer list changed between batches at '" + l.name + "'");
      LayerAccum& a = layers[li++];
      for (int64_t b = 0; b < n && b < static_cast<int64_t>(l.samples.size()); ++b) {
        const LayerSample& s = l.samples[static_cast<size_t>(b)];
        if (s.dense_macs > 0) a.macs.add(static_cast<double>(s.executed_macs) / static_cast<double>(s.dense_macs));
        if (l.gated) {
          a.in.add(static_cast<double>(s.active_in_channels) / static_cast<double>(std::max<int64_t>(l.in_channels, 1)));
          a.out.add(static_cast<double>(s.active_out_channels) / static_cast<double>(std::max<int64_t>(l.out_channels, 1)));
        }
      }
    }
    done += n;
    progress.update(done, static_cast<double>(correct) / static_cast<double>(done));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double accuracy = static_cast<double>(correct) / static_cast<double>(total);
  const Range mac = executed.range();

  // --- report -----------------------------------------------------------------------
  std::printf("accuracy: %.2f%% (%lld / %lld)\n", 100 * accuracy, static_cast<long long>(correct),
              static_cast<long long>(total));
  std::printf("executed MACs per image: mean %s, min %s, max %s (dense %s: %.2fx fewer on average)\n",
              mmacs(mac.mean).c_str(), mmacs(mac.min).c_str(), mmacs(mac.max).c_str(),
              mmacs(static_cast<double>(dense_per_image)).c_str(),
              mac.mean > 0 ? static_cast<double>(dense_per_image) / mac.mean : 0.0);
  if (gate_per_image > 0) std::printf("gate MACs per image: %lld (predictors, not included above)\n",
                                      static_cast<long long>(gate_per_image));
  std::printf("time: %.2f s (%.0f images/s)\n", secs, static_cast<double>(total) / secs);
  bool any_gated = false;
  for (const auto& l : layers) any_gated |= l.gated;
  if (any_gated) {
    std::printf("%-32s %9s %9s %9s %9s\n", "gated layer", "in", "active in", "out", "active out");
    for (const auto& l : layers)
      if (l.gated)
        std::printf("%-32.32s %9lld %9.2f %9lld %9.2f\n", l.name.c_str(), static_cast<long long>(l.in_channels),
                    l.in.range().mean * static_cast<double>(l.in_channels), static_cast<long long>(l.out_channels),
                    l.out.range().mean * static_cast<double>(l.out_channels));
  }

  std::vector<LayerDensity> densities;
  for (const auto& l : layers) densities.push_back({l.name, l.gated, l.in.range(), l.out.range(), l.macs.range()});
  if (ev.plot != "-") {
    const std::string& path = plot_path;
    char sub[256];
    std::snprintf(sub, sizeof sub, "%s, %lld images: accuracy %.2f%%, %.2fx fewer MACs than dense%s%s", data.name.c_str(),
                  static_cast<long long>(total), 100 * accuracy,
                  mac.mean > 0 ? static_cast<double>(dense_per_image) / mac.mean : 0.0,
                  options.density > 0 ? (", --density " + std::to_string(options.density).substr(0, 4)).c_str() : "",
                  options.gating ? "" : ", --gating off");
    write_file(path, density_plot_svg(densities, "Active channels per layer: " + std::filesystem::path(ev.model).filename().string(), sub),
               "the plot (use --plot FILE.svg, or --plot - for none)");
    std::printf("plot: %s\n", path.c_str());
  }
  if (!ev.json.empty()) {
    json jl = json::array();
    for (const auto& l : layers) {
      json j = {{"name", l.name}, {"gated", l.gated}, {"mac_fraction", {{"mean", l.macs.range().mean}, {"min", l.macs.range().min}, {"max", l.macs.range().max}}}};
      if (l.gated) {
        j["in_channels"] = l.in_channels;
        j["out_channels"] = l.out_channels;
        j["in_density"] = {{"mean", l.in.range().mean}, {"min", l.in.range().min}, {"max", l.in.range().max}};
        j["out_density"] = {{"mean", l.out.range().mean}, {"min", l.out.range().min}, {"max", l.out.range().max}};
      }
      jl.push_back(j);
    }
    json j = {{"model", ev.model}, {"data", data.name}, {"images", total}, {"correct", correct}, {"accuracy", accuracy},
              {"gating", options.gating}, {"density", options.density}, {"dense_macs_per_image", dense_per_image},
              {"executed_macs_per_image", {{"mean", mac.mean}, {"min", mac.min}, {"max", mac.max}}},
              {"gate_macs_per_image", gate_per_image}, {"seconds", secs}, {"confusion", confusion},
              {"classes", data.classes}, {"layers", jl}};
    write_file(ev.json, j.dump(2, ' ', false, json::error_handler_t::replace) + "\n", "the JSON results");
  }
  return 0;
}

}  // namespace sluice::cli
