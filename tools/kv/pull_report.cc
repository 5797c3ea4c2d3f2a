#include "kv/pull_report.h"

#include <cstdio>

#include "common/cli_util.h"
#include "common/latency_stats.h"

namespace kvferry::cli {
namespace {

// The server's pool as its "kv.pool" entry says: "host memory", "GPU 0 memory".
std::string describe_pool_memory(const KvPool& pool) {
  return describe_kv_memory({std::string(to_string(pool.kind())), static_cast<int>(pool.device())});
}

}  // namespace

PullSummary summarize(const std::vector<PullStep>& steps) {
  PullSummary s;
  std::vector<double> ms, plan, create;
  double seconds = 0;
  std::uint64_t bytes = 0;
  for (const PullStep& step : steps) {
    s.all_verified = s.all_verified && step.verified;
    s.bytes_per_step = step.bytes;
    if (step.warmup) continue;
    ++s.measured_steps;
    seconds += step.ms / 1e3;
    bytes += step.bytes;
    ms.push_back(step.ms);
    plan.push_back(step.plan_us);
    create.push_back(step.create_us);
  }
  s.gbps = gigabytes_per_second(bytes, seconds);
  s.median_ms = median(ms);
  s.median_plan_us = median(plan);
  s.median_create_us = median(create);
  return s;
}

void add_baseline(const std::vector<PullStep>& baseline_steps, PullSummary& summary) {
  const PullSummary baseline = summarize(baseline_steps);
  summary.baseline_gbps = baseline.gbps;
  summary.baseline_median_ms = baseline.median_ms;
  summary.all_verified = summary.all_verified && baseline.all_verified;
}

void print_pull_preamble(const PullOptions& o, const PullSession& session) {
  const KvLayout& layout = session.layout();
  std::printf("kvferry pull: %s from server '%s' (%s) over %s into %s\n", layout.describe().c_str(),
              session.server().c_str(), describe_pool_memory(session.server_pool()).c_str(), o.backend.c_str(),
              describe_kv_memory(o.memory).c_str());
  std::printf(
      "%llu-token prompt = %u blocks per layer (%u pulled%s), %s per block, %u transfer(s) per step, "
      "%s block ids\n",
      static_cast<unsigned long long>(o.tokens), session.blocks_per_step(), session.blocks_moved_per_step(),
      o.cached_tokens > 0 ? ", the rest a prefix-cache hit" : "", format_bytes(layout.block_bytes()).c_str(),
      o.transfers, o.pattern.c_str());
  std::printf("%-6s %-10s %9s %7s %9s %10s %17s  %s\n", "step", "bytes", "time ms", "GB/s", "plan us",
              "create us", "pairs->merged", "verified");
  std::fflush(stdout);
}

void print_pull_step(const PullStep& s) {
  const std::string merged = std::to_string(s.pairs) + "->" + std::to_string(s.merged);
  std::printf("%-6d %-10s %9.1f %7.2f %9.1f %10.1f %17s  %s%s\n", s.index + 1, format_bytes(s.bytes).c_str(),
              s.ms, s.gbps, s.plan_us, s.create_us, merged.c_str(), s.verified ? "yes" : "FAILED",
              s.warmup ? " (warm-up)" : "");
  if (!s.verified) std::printf("  verification: %s\n", s.verify_message.c_str());
  std::fflush(stdout);
}

void print_pull_summary(const PullSummary& s) {
  std::printf(
      "pull: %d measured steps of %s: %.2f GB/s, median %.1f ms, median plan %.1f us, create %.1f us, %s\n",
      s.measured_steps, format_bytes(s.bytes_per_step).c_str(), s.gbps, s.median_ms, s.median_plan_us,
      s.median_create_us, s.all_verified ? "every byte verified" : "VERIFICATION FAILED");
  if (s.bench) {
    std::printf(
        "bench (same run, same backend, bytes, descriptors and pattern): %.2f GB/s (ceiling %.2f GB/s %s)\n",
        s.bench->gbps, s.bench->ceiling_gbps, s.bench->ceiling_name.c_str());
    std::printf("pull / bench = %.2f (GB/s over all steps), %.2f (median step vs bench p50 %.1f ms)\n",
                s.ratio, s.median_ratio, s.bench->p50_ms);
    std::printf("  bench command: %s\n", s.bench->command.c_str());
    const bool alike =
        s.client_pool_blocks == s.bench->pool_blocks && s.server_pool_blocks == s.bench->pool_blocks;
    const std::string note = alike ? ""
                                   : " (not alike: give both sides --pool-blocks " +
                                         std::to_string(s.bench->pool_blocks) + " to compare like with like)";
    std::printf("  pools, blocks per layer: bench %u on both sides; this pull: client %u, server %u%s\n",
                s.bench->pool_blocks, s.client_pool_blocks, s.server_pool_blocks, note.c_str());
  }
  if (s.baseline_gbps) {
    std::printf(
        "bench-equivalent steps, interleaved (raw index transfers, no KV layer): %.2f GB/s, median %.1f "
        "ms\npull / bench-equivalent = %.2f (GB/s), %.2f (median step)\n",
        *s.baseline_gbps, s.baseline_median_ms, *s.baseline_gbps > 0 ? s.gbps / *s.baseline_gbps : 0,
        s.median_ms > 0 ? s.baseline_median_ms / s.median_ms : 0);
  }
  std::fflush(stdout);
}

nlohmann::json pull_json(const PullOptions& o, const PullSession& session, const std::vector<PullStep>& steps,
                         const PullSummary& s) {
  nlohmann::json step_list = nlohmann::json::array();
  for (const PullStep& step : steps) {
    nlohmann::json j{{"step", step.index + 1},      {"warmup", step.warmup},
                     {"bytes", step.bytes},         {"ms", step.ms},
                     {"gbps", step.gbps},           {"plan_us", step.plan_us},
                     {"create_us", step.create_us}, {"post_us", step.post_us},
                     {"pairs", step.pairs},         {"merged_planned", step.merged_planned},
                     {"merged", step.merged},       {"verified", step.verified}};
    if (!step.verified) j["verify_error"] = step.verify_message;
    step_list.push_back(std::move(j));
  }
  const KvLayout& layout = session.layout();
  nlohmann::json j{{"backend", o.backend},
                   {"server", session.server()},
                   {"mem", o.memory.mem},
                   {"device", o.memory.mem == "vram" ? o.memory.device : -1},
                   {"server_mem", std::string(to_string(session.server_pool().kind()))},
                   {"layout", layout.describe()},
                   {"block_bytes", layout.block_bytes()},
                   {"tokens", o.tokens},
                   {"cached_tokens", o.cached_tokens},
                   {"blocks", session.blocks_per_step()},
                   {"blocks_pulled", session.blocks_moved_per_step()},
                   {"layers", layout.geometry().layers},
                   {"pattern", o.pattern},
                   {"transfers", o.transfers},
                   {"bytes", s.bytes_per_step},
                   {"gbps", s.gbps},
                   {"median_ms", s.median_ms},
                   {"median_plan_us", s.median_plan_us},
                   {"median_create_us", s.median_create_us},
                   {"verified", s.all_verified},
                   {"client_pool_blocks", s.client_pool_blocks},
                   {"server_pool_blocks", s.server_pool_blocks},
                   {"steps", std::move(step_list)}};
  if (s.bench) {
    j["bench"] = {{"gbps", s.bench->gbps},
                  {"p50_ms", s.bench->p50_ms},
                  {"ceiling_gbps", s.bench->ceiling_gbps},
                  {"ceiling_name", s.bench->ceiling_name},
                  {"command", s.bench->command},
                  {"pool_blocks", s.bench->pool_blocks}};
    j["ratio_to_bench"] = s.ratio;
    j["median_ratio_to_bench"] = s.median_ratio;
  }
  if (s.baseline_gbps) {
    j["baseline"] = {{"gbps", *s.baseline_gbps}, {"median_ms", s.baseline_median_ms}};
    j["ratio_to_baseline"] = *s.baseline_gbps > 0 ? s.gbps / *s.baseline_gbps : 0;
    j["median_ratio_to_baseline"] = s.median_ms > 0 ? s.baseline_median_ms / s.median_ms : 0;
  }
  return j;
}

}  // namespace kvferry::cli
