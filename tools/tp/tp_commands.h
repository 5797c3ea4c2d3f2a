// tp_commands.h — `kvferry tp-demo` (heterogeneous tensor parallelism: P prefill and D
// decode processes, one prompt, every element verified), its hidden per-rank command,
// and the run both it and `kvferry bench --tp` use.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tp/tp_spec.h"

namespace kvferry::cli {

struct TpDemoOptions {
  TpRunSpec spec;
  bool json = false;
};

struct TpRankOptions {
  std::string role;
  std::uint32_t rank = 0;
  std::string spec;  // TpRunSpec as JSON
  int device = 0;
  std::vector<std::uint16_t> prefill_ports;
  int report_fd = -1;
};

CLI::App* add_tp_demo_command(CLI::App& app, TpDemoOptions& options);
int run_tp_demo_command(TpDemoOptions& options);

CLI::App* add_tp_rank_command(CLI::App& app, TpRankOptions& options);
int run_tp_rank_command(const TpRankOptions& options);

// Spawns the P prefill and D decode ranks of `spec` (finalized) on this host (GPU pools
// round robin over the GPUs present), starts the decode ranks at once and collects one
// result per decode rank (failed ones carry their message). An error only when the run
// could not be set up. Every child is reaped on every path.
Result<std::vector<TpRankResult>> run_tp_ranks(const TpRunSpec& spec);

// The decode ranks start every prompt at one signal. A prompt's time is the whole
// prompt's: from the first decode rank's expect() to the last one's completion, the TP
// counterpart of a plain write's post-to-completion. Prompts after the first `skip`;
// empty when a rank failed.
std::vector<double> tp_prompt_spans_ms(const std::vector<TpRankResult>& ranks, std::size_t skip = 0);
// The median of `values` (0 when empty): what the plain bench reports of its writes too.
double tp_median(std::vector<double> values);
// One prompt's bytes (all decode ranks) over the median prompt time, GB/s.
double tp_aggregate_gbps(const std::vector<TpRankResult>& ranks, std::size_t skip = 0);

}  // namespace kvferry::cli
