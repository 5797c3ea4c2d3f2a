// The small-message case: 8-byte write + notification, post() to wait() done.
#include <string>
#include <vector>

#include "bench/bench_ceiling.h"
#include "bench/bench_cases.h"
#include "common/cli_util.h"
#include "common/latency_stats.h"
#include "common/progress_line.h"

namespace kvferry::cli {
namespace {

constexpr std::uint64_t kMessageBytes = 8;
constexpr int kWarmupRoundTrips = 50;

}  // namespace

Result<CaseResult> run_write_notify_latency_case(InitiatorSession& session) {
  const BenchOptions& o = session.options();
  const int total = kWarmupRoundTrips + o.small_round_trips;

  DescriptorList local(MemoryKind::kDram);
  local.add(make_descriptor(session.pool().base(), kMessageBytes));
  DescriptorList remote(MemoryKind::kDram);
  remote.add(session.remote_pool_address(), kMessageBytes);
  // One request, posted again after each completion: the engine's steady state.
  KVF_ASSIGN_OR_RETURN(TransferRequest request,
                       session.agent().create_transfer(TransferOp::kWrite, local, session.peer(), remote,
                                                       session.transfer_options("kvferry-bench-ping")));
  std::vector<double> latency_us;
  std::vector<double> post_us;
  ProgressLine progress("write+notify", total);
  Clock::time_point measured_start = Clock::now();
  for (int i = 0; i < total; ++i) {
    if (i == kWarmupRoundTrips) measured_start = Clock::now();
    const auto posted_at = Clock::now();
    KVF_RETURN_IF_ERROR(request.post().with_context("write+notify: post"));
    const auto post_returned_at = Clock::now();
    KVF_RETURN_IF_ERROR(request.wait(kTransferTimeout).with_context("write+notify: wait"));
    const auto done_at = Clock::now();
    if (i >= kWarmupRoundTrips) {
      latency_us.push_back(to_micros(done_at - posted_at));
      post_us.push_back(to_micros(post_returned_at - posted_at));
    }
    if (i % 100 == 0) progress.update(i);
  }
  const double measured_seconds = to_seconds(Clock::now() - measured_start);

  CaseResult result;
  result.backend = o.backend;
  result.op = "write+notify";
  result.pattern = "single";
  result.block_size = kMessageBytes;
  result.blocks = 1;
  result.layers = 1;
  result.bytes = kMessageBytes;
  result.descriptors = 1;
  result.descriptors_merged = request.telemetry().descriptors_merged;
  result.iterations = o.small_round_trips;
  if (o.streams > 0) result.streams = o.streams;
  result.gbps = gigabytes_per_second(kMessageBytes * static_cast<std::uint64_t>(o.small_round_trips),
                                     measured_seconds);
  const Percentiles latency = percentiles(latency_us);
  result.p50_us = latency.p50;
  result.p99_us = latency.p99;
  result.post_us = median(post_us);
  result.prep_us = median(std::move(post_us));  // created once: preparation is the post

  // Same two processes, same count, warm-up dropped like ours.
  KVF_ASSIGN_OR_RETURN(std::vector<double> round_trips,
                       measure_ping_pong_us(session.channel(), static_cast<std::uint32_t>(total)));
  round_trips.erase(round_trips.begin(), round_trips.begin() + kWarmupRoundTrips);
  const Percentiles ceiling = percentiles(std::move(round_trips));
  result.ceiling_name = "tcp ping-pong";
  result.ceiling_p50_us = ceiling.p50;
  result.ceiling_gbps = ceiling.p50 > 0 ? kMessageBytes / (ceiling.p50 * 1e3) : 0;
  result.ratio = result.p50_us > 0 ? ceiling.p50 / result.p50_us : 0;
  return result;
}

}  // namespace kvferry::cli
