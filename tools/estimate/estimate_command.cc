// `kvferry estimate`: KV bytes, transfer time and transfer share of TTFT per prompt
// length and measured path, plus an SVG chart (estimate_model.h has the model).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/cli_util.h"
#include "estimate/estimate_model.h"
#include "kv/kv_commands.h"
#include "kv/kv_presets.h"

namespace kvferry::cli {
namespace {

// The layout's description without its pool size, which plays no part here.
std::string describe_geometry(const KvLayout& layout) {
  std::string text = layout.describe();
  return text.substr(0, text.rfind(", "));
}

Result<std::vector<PathBandwidth>> gather_paths(const EstimateOptions& o) {
  std::vector<PathBandwidth> paths;
  if (!o.bench_files.empty()) { KVF_ASSIGN_OR_RETURN(paths, read_measured_bandwidths(o.bench_files)); }
  KVF_ASSIGN_OR_RETURN(std::vector<PathBandwidth> assumed, parse_assumed_bandwidths(o.assumed));
  paths.insert(paths.end(), assumed.begin(), assumed.end());
  if (paths.empty()) {
    return InvalidArgument(
        "no bandwidth to estimate with: give --bench FILE (output of `kvferry bench --json`) "
        "and/or --assume NAME=GB/s");
  }
  return paths;
}

void print_table(const EstimateOptions& o, const KvLayout& layout, const std::vector<PathBandwidth>& paths,
                 const std::vector<EstimateRow>& rows) {
  const std::string geometry = describe_geometry(layout);
  std::printf("kvferry estimate: %s (%s)\n", o.geometry.model.c_str(), geometry.c_str());
  std::printf("  %s per block per layer, %s per token over all layers\n",
              format_bytes(layout.block_bytes()).c_str(),
              format_bytes(layout.block_bytes_all_layers() / layout.geometry().block_tokens).c_str());
  std::printf(
      "assumed: prefill %.0f tokens/s (linear), one decode step %.1f ms; "
      "TTFT = prefill + transfer + decode step; transfer = latency + KV bytes / bandwidth\n",
      o.prefill_tokens_per_s, o.decode_step_ms);
  for (const PathBandwidth& p : paths) {
    std::printf("  %-10s %7.2f GB/s, latency %.0f us  [%s]\n", p.name.c_str(), p.gbps, p.latency_us,
                p.source.c_str());
  }
  std::printf("\n%8s %11s %11s", "tokens", "KV MB", "prefill ms");
  for (const PathBandwidth& p : paths) std::printf(" %12s %9s", (p.name + " ms").c_str(), "% TTFT");
  std::printf("\n");
  for (const EstimateRow& row : rows) {
    std::printf("%8llu %11.1f %11.1f", static_cast<unsigned long long>(row.tokens),
                static_cast<double>(row.kv_bytes) / 1e6, row.prefill_ms);
    for (const PathCost& cost : row.paths) std::printf(" %12.1f %8.1f%%", cost.transfer_ms, cost.share * 100);
    std::printf("\n");
  }
}

nlohmann::json to_json(const EstimateOptions& o, const KvLayout& layout,
                       const std::vector<PathBandwidth>& paths, const std::vector<EstimateRow>& rows) {
  nlohmann::json path_list = nlohmann::json::array(), row_list = nlohmann::json::array();
  for (const PathBandwidth& p : paths)
    path_list.push_back(
        {{"name", p.name}, {"gbps", p.gbps}, {"latency_us", p.latency_us}, {"source", p.source}});
  for (const EstimateRow& row : rows) {
    nlohmann::json costs = nlohmann::json::array();
    for (std::size_t i = 0; i < paths.size(); ++i) {
      costs.push_back({{"path", paths[i].name},
                       {"transfer_ms", row.paths[i].transfer_ms},
                       {"ttft_ms", row.paths[i].ttft_ms},
                       {"share", row.paths[i].share}});
    }
    row_list.push_back({{"tokens", row.tokens},
                        {"kv_bytes", row.kv_bytes},
                        {"prefill_ms", row.prefill_ms},
                        {"paths", std::move(costs)}});
  }
  return {{"model", o.geometry.model},
          {"layout", describe_geometry(layout)},
          {"prefill_tokens_per_s", o.prefill_tokens_per_s},
          {"decode_step_ms", o.decode_step_ms},
          {"paths", std::move(path_list)},
          {"rows", std::move(row_list)}};
}

int estimate_command(const EstimateOptions& o) {
  auto fail = [](const Status& status) {
    std::fprintf(stderr, "kvferry estimate: %s\n", status.to_string().c_str());
    return status.code() == StatusCode::kInvalidArgument ? 2 : 1;
  };
  if (!(o.prefill_tokens_per_s > 0) || !(o.decode_step_ms >= 0)) {
    return fail(InvalidArgument("--prefill-tokens-per-s must be positive and --decode-step-ms non-negative"));
  }
  Result<KvGeometry> geometry = o.geometry.geometry();
  Result<KvArrangement> arrangement = o.geometry.arrangement();
  if (!geometry.ok()) return fail(geometry.status());
  if (!arrangement.ok()) return fail(arrangement.status());
  Result<KvLayout> layout = KvLayout::create(*geometry, *arrangement, 1);  // pool size plays no part
  if (!layout.ok()) return fail(layout.status());
  Result<std::vector<PathBandwidth>> paths = gather_paths(o);
  if (!paths.ok()) return fail(paths.status());
  std::vector<std::uint64_t> tokens = o.tokens;
  std::sort(tokens.begin(), tokens.end());
  const std::vector<EstimateRow> rows =
      estimate({*layout, o.prefill_tokens_per_s, o.decode_step_ms}, tokens, *paths);
  if (o.json) {
    std::printf("%s\n", to_json(o, *layout, *paths, rows).dump().c_str());
  } else {
    print_table(o, *layout, *paths, rows);
  }
  if (!o.plot.empty()) {
    std::ofstream out(o.plot);
    char title[200];
    std::snprintf(title, sizeof(title),
                  "%s: KV transfer share of TTFT (prefill %.0f tok/s, decode step %.0f ms)",
                  o.geometry.model.c_str(), o.prefill_tokens_per_s, o.decode_step_ms);
    out << render_share_plot_svg(title, rows, *paths);
    if (!out) return fail(IoError("--plot '" + o.plot + "': cannot write it"));
    if (!o.json) std::printf("\nplot: %s\n", o.plot.c_str());
  }
  return 0;
}

}  // namespace

CLI::App* add_estimate_command(CLI::App& app, EstimateOptions& o) {
  CLI::App* command = app.add_subcommand(
      "estimate",
      "What KV transfer costs in time-to-first-token, from measured bandwidths");
  add_kv_geometry_options(command, o.geometry);
  command->add_option("--tokens", o.tokens, "Prompt lengths")->delimiter(',')->capture_default_str();
  command->add_option("--prefill-tokens-per-s", o.prefill_tokens_per_s, "Prefill throughput of one request")
      ->capture_default_str();
  command->add_option("--decode-step-ms", o.decode_step_ms, "Time of the first decode step")
      ->capture_default_str();
  command->add_option("--bench", o.bench_files,
                      "`kvferry bench --json` (or `pull --json`) output file (repeatable)");
  command->add_option("--assume", o.assumed,
                      "NAME=GB/s: a path not measured here, e.g. rdma-400g=45 (repeatable)");
  command->add_option("--plot", o.plot, "SVG chart of transfer share against prompt length ('' for none)")
      ->capture_default_str();
  command->add_flag("--json", o.json, "One JSON object with every row");
  return command;
}

int run_estimate_command(const EstimateOptions& o) { return estimate_command(o); }

}  // namespace kvferry::cli
