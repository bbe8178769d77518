#include "runtime/cli/svg_plot.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace sluice::cli {

namespace {

std::string xml_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '&': r += "&amp;"; break;
      case '"': r += "&quot;"; break;
      default: r += c;
    }
  }
  return r;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string density_plot_svg(const std::vector<LayerDensity>& layers, const std::string& title,
                             const std::string& subtitle) {
  const double left = 70, top = 84, plot_h = 260, bottom_labels = 150;
  const double n = static_cast<double>(std::max<size_t>(layers.size(), 1));
  const double plot_w = std::max(640.0, 44 * n), slot = std::min(80.0, plot_w / n);
  const double width = left + plot_w + 30, height = top + plot_h + bottom_labels;
  const char* in_color = "#9ecae1";
  const char* out_color = "#2171b5";
  const char* dense_color = "#bdbdbd";
  auto y_of = [&](double v) { return top + plot_h * (1.0 - std::clamp(v, 0.0, 1.0)); };

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << left << "\" y=\"24\" font-size=\"16\" font-weight=\"bold\">" << xml_escape(title) << "</text>\n";
  s << "<text x=\"" << left << "\" y=\"44\" fill=\"#444\" font-size=\"11\">" << xml_escape(subtitle) << "</text>\n";
  // axes and grid
  for (int i = 0; i <= 4; ++i) {
    const double v = i / 4.0, y = y_of(v);
    s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_w << "\" y2=\"" << y
      << "\" stroke=\"" << (i == 0 ? "#000" : "#ddd") << "\"/>\n";
    s << "<text x=\"" << left - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << fmt("%.2f", v) << "</text>\n";
  }
  s << "<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\"" << top + plot_h
    << "\" stroke=\"#000\"/>\n";
  s << "<text transform=\"translate(18," << top + plot_h / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << "active fraction</text>\n";
  // legend
  const double lx = left;
  const std::pair<const char*, const char*> legend[] = {
      {in_color, "input channels read"}, {out_color, "output channels computed"}, {dense_color, "ungated: MACs run"}};
  for (int i = 0; i < 3; ++i) {
    s << "<rect x=\"" << lx + 170 * i << "\" y=\"56\" width=\"10\" height=\"10\" fill=\"" << legend[i].first << "\"/>";
    s << "<text x=\"" << lx + 170 * i + 14 << "\" y=\"65\" font-size=\"11\">" << legend[i].second << "</text>\n";
  }
  auto bar = [&](double x, double w, const Range& r, const char* color, const std::string& tip) {
    const double y = y_of(r.mean);
    s << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << top + plot_h - y
      << "\" fill=\"" << color << "\"><title>" << xml_escape(tip) << "</title></rect>\n";
    if (r.max > r.min) {  // min-max whisker over the images
      const double cx = x + w / 2;
      s << "<line x1=\"" << cx << "\" y1=\"" << y_of(r.min) << "\" x2=\"" << cx << "\" y2=\"" << y_of(r.max)
        << "\" stroke=\"#000\"/>";
      for (double v : {r.min, r.max})
        s << "<line x1=\"" << cx - 3 << "\" y1=\"" << y_of(v) << "\" x2=\"" << cx + 3 << "\" y2=\"" << y_of(v)
          << "\" stroke=\"#000\"/>";
      s << "\n";
    }
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerDensity& l = layers[i];
    const double x0 = left + slot * static_cast<double>(i) + 6, w = (slot - 12) / 2;
    auto tip = [&](const char* what, const Range& r) {
      return l.name + ": " + what + " mean " + fmt("%.3f", r.mean) + ", min " + fmt("%.3f", r.min) + ", max " +
             fmt("%.3f", r.max);
    };
    if (l.gated) {
      bar(x0, w, l.in, in_color, tip("input density", l.in));
      bar(x0 + w, w, l.out, out_color, tip("output density", l.out));
    } else {
      bar(x0, 2 * w, l.macs, dense_color, tip("executed/dense MACs", l.macs));
    }
    const double lx0 = x0 + w, ly = top + plot_h + 12;
    std::string label = l.name.size() > 28 ? "…" + l.name.substr(l.name.size() - 27) : l.name;
    s << "<text transform=\"translate(" << lx0 << "," << ly << ") rotate(-50)\" text-anchor=\"end\" font-size=\"10\">"
      << xml_escape(label) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace sluice::cli
