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
      Result<TpRankResult> parsed = TpRankResult::from_json(report->body);
      if (parsed.ok()) {
        failed = std::move(parsed).value();
      } else {
        failed.message = parsed.status().to_string();
      }
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
  const auto limit = std::chrono::seconds(spec.timeout_s + 30);
  // Prompts after the first: each decode rank reports ready again when it is ready for
  // one, and they all start it at the same signal. A rank that reports anything else has
  // ended (that report is its result) and takes no part in the later prompts.
  std::vector<std::optional<Result<ControlMessage>>> ended(spec.decode_tp);
  for (int r = 1; r < spec.requests; ++r) {
    std::vector<std::uint32_t> ready;
    for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
      if (early[d] || ended[d]) continue;
      Result<ControlMessage> report = decodes[d].read_report(limit);
      if (report.ok() && report->type == ControlType::kReady) {
        ready.push_back(d);
      } else {
        ended[d] = std::move(report);
      }
    }
    for (std::uint32_t d : ready) ::kill(decodes[d].pid(), SIGUSR1);
  }
  std::vector<TpRankResult> results;
  for (std::uint32_t d = 0; d < spec.decode_tp; ++d) {
    if (early[d]) {
      results.push_back(*early[d]);
      continue;
    }
    Result<ControlMessage> report = ended[d] ? std::move(*ended[d]) : decodes[d].read_report(limit);
    TpRankResult result;
    result.decode_rank = d;
    result.failed = true;
    if (!report.ok()) {
      result.message = report.status().to_string();
    } else if (report->type != ControlType::kResult) {
      result.message = "reported " + control_type_name(static_cast<std::uint32_t>(report->type));
    } else if (Result<TpRankResult> parsed = TpRankResult::from_json(report->body); parsed.ok()) {
      result = std::move(parsed).value();
    } else {
      result.message = parsed.status().to_string();
    }
    results.push_back(std::move(result));
  }
  for (ChildProcess& d : decodes) (void)d.wait_for_exit(std::chrono::seconds(10));
  for (ChildProcess& p : prefills) p.terminate();  // SIGTERM: they leave their wait at once
  return results;
}

double tp_aggregate_gbps(const std::vector<TpRankResult>& ranks, std::size_t skip) {
  const std::vector<double> spans = tp_prompt_spans_ms(ranks, skip);
  std::uint64_t bytes = 0;
  for (const TpRankResult& r : ranks) bytes += r.bytes;
  const double ms = tp_median(spans);
  return ms > 0 ? static_cast<double>(bytes) / (ms * 1e6) : 0;
}

std::vector<double> tp_prompt_spans_ms(const std::vector<TpRankResult>& ranks, std::size_t skip) {
  // A prompt is moved when every decode rank has its share: from the first rank's
  // expect() to the last rank's completion (the ranks start each prompt at one signal).
  std::vector<double> spans;
  if (ranks.empty()) return spans;
  for (const TpRankResult& r : ranks) {
    if (r.failed || r.start_ns.size() <= skip || r.end_ns.size() != r.start_ns.size() ||
        r.start_ns.size() != ranks.front().start_ns.size()) {
      return {};
    }
  }
  for (std::size_t i = skip; i < ranks.front().start_ns.size(); ++i) {
    std::int64_t first = INT64_MAX, last = INT64_MIN;
    for (const TpRankResult& r : ranks) {
      first = std::min(first, r.start_ns[i]);
      last = std::max(last, r.end_ns[i]);
    }
    spans.push_back(static_cast<double>(last - first) / 1e6);
  }
  return spans;
}

double tp_median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace kvferry::cli
