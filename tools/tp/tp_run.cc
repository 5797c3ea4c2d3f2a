// run_tp_ranks: the parent of a heterogeneous-TP run.
#include <signal.h>

#include <algorithm>
#include <optional>
#include <thread>

#include "common/child_process.h"
#include "common/cli_util.h"
#include "tp/tp_commands.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

constexpr std::chrono::seconds kStartLimit{120};  // a rank fills its pool before reporting

std::vector<std::string> rank_args(const TpRunSpec& spec, const char* role, std::uint32_t rank, int device) {
  return {"tp-rank", "--role", role, "--rank", std::to_string(rank), "--spec", spec.to_json().dump(),
          "--device", std::to_string(device)};
}

}  // namespace

Result<std::vector<TpRankResult>> run_tp_ranks(const TpRunSpec& spec) {
  const int gpus = spec.kind == MemoryKind::kVram ? std::max(1, cuda_gpu_count()) : 1;
  std::vector<ChildProcess> prefills;
  std::vector<std::string> ports;
  for (std::uint32_t p = 0; p < spec.prefill_tp; ++p) {
    KVF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::spawn_self(rank_args(spec, "prefill", p, static_cast<int>(p) % gpus)));
    prefills.push_back(std::move(child));
  }
  for (std::uint32_t p = 0; p < spec.prefill_tp; ++p) {
    const Result<ControlMessage> report = prefills[p].read_report(kStartLimit);
    const Result<std::uint16_t> port = report.ok() ? listening_port(*report) : Result<std::uint16_t>(report.status());
    if (!port.ok()) return port.status().with_context("prefill rank " + std::to_string(p));
    ports.push_back(std::to_string(*port));
  }
  std::string port_list;
  for (const std::string& port : ports) port_list += (port_list.empty() ? "" : ",") + port;
  std::vector<ChildProcess> decodes;
  for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
    std::vector<std::string> args =
        rank_args(spec, "decode", d, static_cast<int>(spec.prefill_tp + d) % gpus);
    args.insert(args.end(), {"--prefill-ports", port_list});
    KVF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::spawn_self(std::move(args)));
    decodes.push_back(std::move(child));
  }
  std::vector<std::optional<TpRankResult>> early(spec.decode_tp);
  for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
    Result<ControlMessage> report = decodes[d].read_report(kStartLimit);
    if (report.ok() && report->type == ControlType::kReady) continue;
    // It failed while setting up: its result says why (or it died).
    TpRankResult failed;
    failed.decode_rank = d;
    failed.failed = true;
    if (report.ok() && report->type == ControlType::kResult) {
      failed = TpRankResult::from_json(report->body);
    } else {
      failed.message = report.ok() ? "reported " + control_type_name(static_cast<std::uint32_t>(report->type))
                                   : report.status().to_string();
    }
    early[d] = failed;
  }
  for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
    if (!early[d]) ::kill(decodes[d].pid(), SIGUSR1);
  }
  if (spec.kill_rank >= 0 && static_cast<std::uint32_t>(spec.kill_rank) < spec.prefill_tp) {
    // Fault injection: that rank sent its first chunk and waits for the rest; kill it
    // while the decode ranks wait on it.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(prefills[static_cast<std::size_t>(spec.kill_rank)].pid(), SIGKILL);
  }
  std::vector<TpRankResult> results;
  const auto limit = std::chrono::seconds(spec.timeout_s + 30);
  for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
    if (early[d]) {
      results.push_back(*early[d]);
      continue;
    }
    Result<ControlMessage> report = decodes[d].read_report(limit);
    TpRankResult result;
    result.decode_rank = d;
    result.failed = true;
    if (!report.ok()) {
      result.message = report.status().to_string();
    } else if (report->type != ControlType::kResult) {
      result.message = "reported " + control_type_name(static_cast<std::uint32_t>(report->type));
    } else {
      result = TpRankResult::from_json(report->body);
    }
    results.push_back(std::move(result));
  }
  for (ChildProcess& d : decodes) (void)d.wait_for_exit(std::chrono::seconds(10));
  for (ChildProcess& p : prefills) p.terminate();  // SIGTERM: they leave their wait at once
  return results;
}

double tp_aggregate_gbps(const std::vector<TpRankResult>& ranks, std::size_t skip) {
  // Time counts while at least one decode rank has a prompt in flight (the union of the
  // ranks' expect-to-complete intervals): what a rank does between its prompts (the
  // poisoning before the verified one) is not transfer time, and the plain write's
  // figure it is compared with holds no such gaps either.
  std::vector<std::pair<std::int64_t, std::int64_t>> spans;
  std::uint64_t bytes = 0;
  for (const TpRankResult& r : ranks) {
    if (r.failed || r.start_ns.size() <= skip || r.end_ns.size() != r.start_ns.size()) return 0;
    for (std::size_t i = skip; i < r.start_ns.size(); ++i) spans.emplace_back(r.start_ns[i], r.end_ns[i]);
    bytes += r.bytes * (r.start_ns.size() - skip);
  }
  std::sort(spans.begin(), spans.end());
  std::int64_t busy = 0, open = INT64_MIN, close = INT64_MIN;
  for (const auto& [start, end] : spans) {
    if (start > close) {
      if (close > open) busy += close - open;
      open = start;
      close = end;
    } else {
      close = std::max(close, end);
    }
  }
  if (close > open) busy += close - open;
  return busy > 0 ? static_cast<double>(bytes) / static_cast<double>(busy) : 0;
}

}  // namespace kvferry::cli
