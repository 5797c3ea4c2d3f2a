// The paged-KV throughput case and its ceiling.
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/backend_traits.h"
#include "bench/bench_ceiling.h"
#include "bench/bench_cases.h"
#include "common/cli_util.h"
#include "common/latency_stats.h"
#include "common/progress_line.h"

namespace kvferry::cli {
namespace {

struct RequestBlocks {
  std::vector<std::uint32_t> local;
  std::vector<std::uint32_t> remote;
};

// All requests' block ids up front, so the timed loop measures only the library.
std::vector<RequestBlocks> plan_requests(const BenchOptions& o, int count) {
  const PoolShape shape = o.pool_shape();
  std::vector<RequestBlocks> requests;
  requests.reserve(static_cast<std::size_t>(count));
  for (int r = 0; r < count; ++r) {
    const auto request = static_cast<std::uint64_t>(r);
    requests.push_back({choose_block_ids(o.block_pattern, local_side_seed(o.seed, request), shape.blocks_per_layer,
                                         o.blocks),
                        choose_block_ids(o.block_pattern, remote_side_seed(o.seed, request), shape.blocks_per_layer,
                                         o.blocks)});
  }
  return requests;
}

unsigned copy_threads_of(const BenchOptions& o) {
  for (const auto* params : {&o.local_params, &o.shared_params}) {
    auto it = params->find(o.backend + ".copy_threads");
    if (it != params->end()) return static_cast<unsigned>(std::max(1L, std::strtol(it->second.c_str(), nullptr, 10)));
  }
  if (o.backend != "shm") return 1;
  // shm's default (src/backends/shm/shm_backend.cc): up to 4 threads on small hosts, half
  // the cores (at most 16) on large ones. A ceiling with fewer threads than the backend
  // copies with reads above 1 on large hosts.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp(cores / 2, std::min(cores, 4u), 16u);
}

// The TCP connections the backend moves one transfer over: tcp's streams per peer
// (tcp.streams, or its default of 4, src/backends/tcp/tcp_backend.cc); one for others
// (ucx). A ceiling of one stream against four reads above 1 where streams pay.
std::uint32_t streams_of(const BenchOptions& o) {
  if (o.backend != "tcp") return 1;
  for (const auto* params : {&o.local_params, &o.shared_params}) {
    auto it = params->find("tcp.streams");
    if (it != params->end())
      return static_cast<std::uint32_t>(std::clamp(std::strtol(it->second.c_str(), nullptr, 10), 1L,
                                                   static_cast<long>(kMaxCeilingStreams)));
  }
  return 4;
}

Status measure_ceiling(InitiatorSession& session, TransferOp op, CaseResult& result) {
  const BenchOptions& o = session.options();
  const ThroughputCeiling ceiling = traits_of(o.backend).ceiling;
  result.ceiling_name = ceiling_name(ceiling);
  std::vector<double> gbps;
  if (ceiling == ThroughputCeiling::kTcpStream) {
    // One extra rep first, dropped: the control socket sat idle during the timed
    // requests, and Linux restarts an idle connection's congestion window from scratch.
    const StreamPlan plan{op, result.bytes, static_cast<std::uint32_t>(o.ceiling_reps) + 1, streams_of(o)};
    KVF_ASSIGN_OR_RETURN(gbps, measure_stream_gbps(session.channel(), session.pool(), plan));
    gbps.erase(gbps.begin());
    if (plan.streams > 1) result.ceiling_name = "tcp x" + std::to_string(plan.streams) + " streams";
  } else {
    // As many memcpy threads as the backend copies with (shm.copy_threads or its
    // default): one copy thread is compared with one memcpy thread.
    const unsigned threads = copy_threads_of(o);
    gbps = measure_memcpy_gbps(session.pool(), result.bytes, o.block_size, o.ceiling_reps, threads);
    if (threads > 1) result.ceiling_name = "memcpy x" + std::to_string(threads) + " threads";
  }
  result.ceiling_gbps = median(std::move(gbps));
  result.ratio = result.ceiling_gbps > 0 ? result.gbps / result.ceiling_gbps : 0;
  return Status::Ok();
}

}  // namespace

Result<CaseResult> run_block_transfer_case(InitiatorSession& session, TransferOp op) {
  const BenchOptions& o = session.options();
  const int total = o.warmup + o.iterations;
  const std::vector<RequestBlocks> requests = plan_requests(o, total);

  CaseResult result;
  result.backend = o.backend;
  result.op = std::string(to_string(op));
  result.pattern = to_string(o.block_pattern);
  result.block_size = o.block_size;
  result.blocks = o.blocks;
  result.layers = o.layers;
  result.bytes = std::uint64_t{o.blocks} * o.layers * o.block_size;
  result.descriptors = std::uint64_t{o.blocks} * o.layers;
  result.iterations = o.iterations;
  result.requests = o.repost ? "repost" : (o.index_form ? "fresh, index form" : "fresh");
  if (o.streams > 0) result.streams = o.streams;

  const int depth = o.inflight;
  if (depth > 1) result.requests += ", " + std::to_string(depth) + " in flight";
  // --repost: `depth` requests per case, created before timing (the first rounds' blocks),
  // posted again in turn (the one posted `depth` rounds ago has completed by then).
  std::vector<TransferRequest> reposted;
  if (o.repost) {
    for (int k = 0; k < depth; ++k) {
      const RequestBlocks& blocks = requests[static_cast<std::size_t>(k % total)];
      Result<TransferRequest> once = session.create_request(op, blocks.local, blocks.remote, session.transfer_options());
      if (!once.ok()) return once.status().with_context("create_transfer");
      reposted.push_back(std::move(once).value());
    }
  }
  std::vector<double> latency_us;
  std::vector<double> prep_us;
  std::vector<double> create_us;
  std::vector<double> post_us;
  struct Flight {
    std::optional<TransferRequest> fresh;
    TransferRequest* request = nullptr;
    Clock::time_point posted_at;
    int round = 0;
  };
  std::deque<Flight> flying;
  ProgressLine progress(result.op, total);
  int finished = 0;
  // Waits for the oldest request in flight (completion is in post order for timing's sake:
  // a later one done first is simply found done).
  auto finish_oldest = [&]() -> Status {
    Flight& f = flying.front();
    KVF_RETURN_IF_ERROR(f.request->wait(kTransferTimeout)
                            .with_context(result.op + " request " + std::to_string(f.round) + " of " +
                                          std::to_string(total)));
    if (f.round >= o.warmup) latency_us.push_back(to_micros(Clock::now() - f.posted_at));
    result.descriptors_merged = f.request->telemetry().descriptors_merged;
    flying.pop_front();
    progress.update(++finished);
    return Status::Ok();
  };
  Clock::time_point measured_start = Clock::now();
  for (int r = 0; r < total; ++r) {
    if (r == o.warmup) {
      while (!flying.empty()) KVF_RETURN_IF_ERROR(finish_oldest());
      measured_start = Clock::now();
    }
    while (static_cast<int>(flying.size()) >= depth) KVF_RETURN_IF_ERROR(finish_oldest());
    const RequestBlocks& blocks = requests[static_cast<std::size_t>(r)];
    // Preparation cost is CPU time of this thread: on a 2-core host the wall clock also
    // counts the time our own progress thread preempts us after post() wakes it.
    const double created_cpu = thread_cpu_micros();
    Flight f;
    f.round = r;
    if (reposted.empty()) {
      Result<TransferRequest> made = session.create_request(op, blocks.local, blocks.remote, session.transfer_options());
      if (!made.ok()) return made.status().with_context("create_transfer");
      f.fresh.emplace(std::move(made).value());
    }
    const double posted_cpu = thread_cpu_micros();
    f.posted_at = Clock::now();
    flying.push_back(std::move(f));
    Flight& flight = flying.back();
    flight.request = flight.fresh ? &*flight.fresh : &reposted[static_cast<std::size_t>(r % depth)];
    KVF_RETURN_IF_ERROR(flight.request->post().with_context("post"));
    const double post_returned_cpu = thread_cpu_micros();
    if (r >= o.warmup) {
      prep_us.push_back(post_returned_cpu - created_cpu);
      create_us.push_back(posted_cpu - created_cpu);
      post_us.push_back(post_returned_cpu - posted_cpu);
    }
  }
  while (!flying.empty()) KVF_RETURN_IF_ERROR(finish_oldest());
  const double measured_seconds = to_seconds(Clock::now() - measured_start);
  result.gbps = gigabytes_per_second(result.bytes * static_cast<std::uint64_t>(o.iterations),
                                     measured_seconds);
  const Percentiles latency = percentiles(std::move(latency_us));
  result.p50_us = latency.p50;
  result.p99_us = latency.p99;
  result.prep_us = median(std::move(prep_us));
  result.create_us = median(std::move(create_us));
  result.post_us = median(std::move(post_us));

  KVF_RETURN_IF_ERROR(measure_ceiling(session, op, result).with_context("ceiling"));

  if (o.verify) {
    KVF_ASSIGN_OR_RETURN(VerifyOutcome outcome,
                         verify_block_transfer(session, op, static_cast<std::uint64_t>(total)));
    result.verified = outcome.ok ? VerifyState::kPassed : VerifyState::kFailed;
    result.verify_message = outcome.message;
  }
  return result;
}

}  // namespace kvferry::cli
