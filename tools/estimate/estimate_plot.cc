// The SVG chart of `kvferry estimate`: hand-written, no dependency; it only has to be
// readable in a browser and in a document.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "estimate/estimate_model.h"

namespace kvferry::cli {
namespace {

constexpr double kWidth = 760, kHeight = 440;
constexpr double kLeft = 70, kRight = 190, kTop = 50, kBottom = 60;  // margins; the legend sits right
constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                   "#ff7f0e", "#8c564b", "#17becf"};

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", v);
  return text;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

std::string tokens_label(std::uint64_t tokens) {
  return tokens >= 1024 && tokens % 1024 == 0 ? std::to_string(tokens / 1024) + "K" : std::to_string(tokens);
}

}  // namespace

std::string render_share_plot_svg(const std::string& title, const std::vector<EstimateRow>& rows,
                                  const std::vector<PathBandwidth>& paths) {
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const double x_min = rows.empty() ? 0 : std::log2(static_cast<double>(rows.front().tokens));
  const double x_max = rows.empty() ? 1 : std::log2(static_cast<double>(rows.back().tokens));
  double y_max = 0;
  for (const EstimateRow& row : rows)
    for (const PathCost& cost : row.paths) y_max = std::max(y_max, cost.share * 100);
  y_max = y_max <= 0 ? 10 : std::min(100.0, std::ceil(y_max / 10) * 10);
  auto x_of = [&](std::uint64_t t) {
    const double span = x_max > x_min ? x_max - x_min : 1;
    return kLeft + (std::log2(static_cast<double>(t)) - x_min) / span * plot_w;
  };
  auto y_of = [&](double percent) { return kTop + plot_h - percent / y_max * plot_h; };

  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + number(kWidth) + "\" height=\"" +
                    number(kHeight) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + number(kLeft) + "\" y=\"24\" font-size=\"14\">" + escape(title) + "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // horizontal grid and y labels
    const double percent = y_max * i / 5, y = y_of(percent);
    svg += "<line x1=\"" + number(kLeft) + "\" y1=\"" + number(y) + "\" x2=\"" + number(kLeft + plot_w) +
           "\" y2=\"" + number(y) + "\" stroke=\"#ddd\"/>\n";
    svg += "<text x=\"" + number(kLeft - 8) + "\" y=\"" + number(y + 4) + "\" text-anchor=\"end\">" +
           number(percent) + "%</text>\n";
  }
  for (const EstimateRow& row : rows) {  // x labels
    svg += "<text x=\"" + number(x_of(row.tokens)) + "\" y=\"" + number(kTop + plot_h + 18) +
           "\" text-anchor=\"middle\">" + tokens_label(row.tokens) + "</text>\n";
  }
  svg += "<text x=\"" + number(kLeft + plot_w / 2) + "\" y=\"" + number(kHeight - 16) +
         "\" text-anchor=\"middle\">prompt length (tokens, log scale)</text>\n";
  svg += "<text transform=\"translate(18," + number(kTop + plot_h / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">KV transfer share of TTFT</text>\n";
  svg += "<rect x=\"" + number(kLeft) + "\" y=\"" + number(kTop) + "\" width=\"" + number(plot_w) +
         "\" height=\"" + number(plot_h) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (std::size_t p = 0; p < paths.size(); ++p) {
    const char* color = kColors[p % std::size(kColors)];
    std::string points;
    for (const EstimateRow& row : rows) {
      const double x = x_of(row.tokens), y = y_of(row.paths[p].share * 100);
      points += number(x) + "," + number(y) + " ";
      svg += "<circle cx=\"" + number(x) + "\" cy=\"" + number(y) + "\" r=\"3\" fill=\"" + color + "\"/>\n";
    }
    svg +=
        "<polyline points=\"" + points + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    const double legend_y = kTop + 10 + 20 * static_cast<double>(p);
    svg += "<line x1=\"" + number(kWidth - kRight + 15) + "\" y1=\"" + number(legend_y) + "\" x2=\"" +
           number(kWidth - kRight + 35) + "\" y2=\"" + number(legend_y) + "\" stroke=\"" + color +
           "\" stroke-width=\"2\"/>\n";
    svg += "<text x=\"" + number(kWidth - kRight + 40) + "\" y=\"" + number(legend_y + 4) + "\">" +
           escape(paths[p].name) + " " + number(paths[p].gbps) + " GB/s</text>\n";
  }
  return svg + "</svg>\n";
}

}  // namespace kvferry::cli
