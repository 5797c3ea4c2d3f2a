// pull_report.h — what `kvferry pull` prints: a line per step, then a summary (or, with
// --json, one JSON object with every step and the summary).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "kv/kv_bench_baseline.h"
#include "kv/kv_commands.h"
#include "kv/pull_session.h"

namespace kvferry::cli {

struct PullSummary {
  std::uint64_t bytes_per_step = 0;
  int measured_steps = 0;
  double gbps = 0;  // bytes of the measured steps / their summed time (as bench computes it)
  double median_ms = 0;
  double median_plan_us = 0;
  double median_create_us = 0;
  bool all_verified = true;
  std::optional<BenchBaseline> bench;
  double ratio = 0;         // gbps / bench.gbps
  double median_ratio = 0;  // bench p50 / our median step time
  // --baseline: the interleaved bench-equivalent steps, summarized the same way.
  std::optional<double> baseline_gbps;
  double baseline_median_ms = 0;
  std::uint32_t client_pool_blocks = 0;
  std::uint32_t server_pool_blocks = 0;
};

PullSummary summarize(const std::vector<PullStep>& steps);
// Adds the interleaved baseline steps' figures to `summary`.
void add_baseline(const std::vector<PullStep>& baseline_steps, PullSummary& summary);

void print_pull_preamble(const PullOptions& o, const PullSession& session);
void print_pull_step(const PullStep& step);
void print_pull_summary(const PullSummary& summary);
nlohmann::json pull_json(const PullOptions& o, const PullSession& session, const std::vector<PullStep>& steps,
                         const PullSummary& summary);

}  // namespace kvferry::cli
