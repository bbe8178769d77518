// A small SVG bar chart of per-layer active-channel density, for `sluice eval --plot`.
#pragma once

#include <string>
#include <vector>

namespace sluice::cli {

struct Range {
  double mean = 0, min = 0, max = 0;
};

struct LayerDensity {
  std::string name;
  bool gated = false;
  Range in, out;        // active / total channels over the images (gated layers)
  Range macs;           // executed / dense MACs over the images (every layer with MACs)
};

// Bars: input and output channel density of each gated layer (mean, with a min-max whisker);
// layers without a gate show their executed/dense MAC fraction in grey.
std::string density_plot_svg(const std::vector<LayerDensity>& layers, const std::string& title,
                             const std::string& subtitle);

}  // namespace sluice::cli
