// `kvferry stats HOST:PORT`: reads an agent's Prometheus endpoint
// (AgentOptions::metrics_address; `serve`/`pull --metrics`) and prints it as a table:
// one row per series, histograms folded into count / mean / p50 / p99 estimates.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cluster/cluster_commands.h"
#include "kvferry/metrics.h"

namespace kvferry::cli {
namespace {

std::string label_text(const std::map<std::string, std::string>& labels, const char* skip = "le") {
  std::string out;
  for (const auto& [k, v] : labels) {
    if (k == "agent" || k == skip) continue;
    out += (out.empty() ? "" : " ") + k + "=" + v;
  }
  return out.empty() ? "-" : out;
}

// A quantile from cumulative histogram buckets (upper bound of the bucket it falls in).
std::string quantile(const std::vector<std::pair<double, double>>& buckets, double q) {
  if (buckets.empty() || buckets.back().second <= 0) return "-";
  const double want = q * buckets.back().second;
  for (const auto& [le, cumulative] : buckets) {
    if (cumulative >= want) {
      if (std::isinf(le)) return "> " + std::to_string(buckets[buckets.size() - 2].first * 1e3) + " ms";
      char buf[32];
      std::snprintf(buf, sizeof buf, "<= %.3g ms", le * 1e3);
      return buf;
    }
  }
  return "-";
}

}  // namespace

CLI::App* add_stats_command(CLI::App& app, StatsOptions& o) {
  CLI::App* command = app.add_subcommand("stats", "Print an agent's metrics (its --metrics endpoint) as a table");
  command->add_option("address", o.address, "The endpoint, HOST:PORT")->required();
  command->add_flag("--json", o.json, "The samples as one JSON array");
  command->add_flag("--all", o.all, "Also rows whose value is zero");
  return command;
}

int run_stats_command(const StatsOptions& o) {
  auto text = scrape_metrics(o.address, std::chrono::seconds(5));
  if (!text.ok()) {
    std::fprintf(stderr, "kvferry stats: %s\n", text.status().to_string().c_str());
    return 1;
  }
  auto samples = parse_metrics_text(*text);
  if (!samples.ok()) {
    std::fprintf(stderr, "kvferry stats: %s\n", samples.status().to_string().c_str());
    return 1;
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : *samples) out.push_back({{"name", s.name}, {"labels", s.labels}, {"value", s.value}});
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::string agent;
  for (const auto& s : *samples)
    if (auto it = s.labels.find("agent"); it != s.labels.end()) agent = it->second;
  std::printf("agent %s at %s\n", agent.empty() ? "?" : agent.c_str(), o.address.c_str());
  std::printf("%-42s %-52s %16s\n", "metric", "labels", "value");
  // Histograms: one row per series with count and quantile estimates.
  std::map<std::string, std::vector<std::pair<double, double>>> hist;
  for (const auto& s : *samples) {
    const bool bucket = s.name.size() > 7 && s.name.compare(s.name.size() - 7, 7, "_bucket") == 0;
    if (bucket) {
      const std::string key = s.name.substr(0, s.name.size() - 7) + " " + label_text(s.labels);
      const std::string& le = s.labels.count("le") ? s.labels.at("le") : std::string("+Inf");
      hist[key].push_back({le == "+Inf" ? HUGE_VAL : std::atof(le.c_str()), s.value});
      continue;
    }
    const bool tail = s.name.find("_seconds_sum") != std::string::npos ||
                      s.name.find("_seconds_count") != std::string::npos;
    if (tail || (!o.all && s.value == 0)) continue;
    char value[32];
    std::snprintf(value, sizeof value, "%.0f", s.value);
    std::printf("%-42s %-52s %16s\n", s.name.c_str(), label_text(s.labels).c_str(), value);
  }
  for (auto& [key, buckets] : hist) {
    std::sort(buckets.begin(), buckets.end());
    if (!o.all && (buckets.empty() || buckets.back().second == 0)) continue;
    const auto space = key.find(' ');
    const std::string summary = "n=" + std::to_string(static_cast<long long>(buckets.back().second)) + " p50 " +
                                quantile(buckets, 0.5) + " p99 " + quantile(buckets, 0.99);
    std::printf("%-42s %-52s %s\n", key.substr(0, space).c_str(), key.substr(space + 1).c_str(), summary.c_str());
  }
  return 0;
}

}  // namespace kvferry::cli
