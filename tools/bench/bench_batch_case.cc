// The batch case: many small requests posted as one batch and drained from a completion
// queue, against one request of the same bytes in the same run.
#include <poll.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <string>
#include <vector>

#include "bench/bench_cases.h"
#include "bench/bench_verify_data.h"
#include "common/block_pattern.h"
#include "common/cli_util.h"
#include "common/latency_stats.h"
#include "common/progress_line.h"

namespace kvferry::cli {
namespace {

struct BatchBlocks {
  std::vector<std::uint32_t> local;   // batch x blocks ids, request i at [i * blocks, +blocks)
  std::vector<std::uint32_t> remote;
};

BatchBlocks choose_batch(const BenchOptions& o, std::uint32_t pool_blocks, std::uint64_t round) {
  const std::uint32_t all = static_cast<std::uint32_t>(o.batch) * o.blocks;
  return {choose_block_ids(o.block_pattern, local_side_seed(o.seed, round), pool_blocks, all),
          choose_block_ids(o.block_pattern, remote_side_seed(o.seed, round), pool_blocks, all)};
}

// Creates the batch's requests (each tagged with its number), posts them with one
// post_batch, and drains the queue, sleeping on its fd, until every one completed.
// `last_note`: a notification on the last request (a verified write: the target checks
// once it has arrived and we have seen every completion).
Status run_batch_once(InitiatorSession& session, TransferOp op, const BatchBlocks& b, CompletionQueue& queue,
                      std::optional<std::string> last_note = std::nullopt) {
  const BenchOptions& o = session.options();
  const std::size_t n = static_cast<std::size_t>(o.batch);
  std::vector<TransferRequest> requests;
  requests.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::span<const std::uint32_t> local(b.local.data() + i * o.blocks, o.blocks);
    const std::span<const std::uint32_t> remote(b.remote.data() + i * o.blocks, o.blocks);
    TransferOptions t = session.transfer_options(i + 1 == n ? last_note : std::nullopt);
    t.tag = i;
    KVF_ASSIGN_OR_RETURN(TransferRequest r, session.create_request(op, local, remote, std::move(t)));
    requests.push_back(std::move(r));
  }
  post_batch(requests, queue);
  std::vector<bool> seen(n, false);
  std::size_t completed = 0;
  const auto deadline = Clock::now() + kTransferTimeout;
  while (completed < n) {
    pollfd p{queue.fd(), POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return IoErrorFromErrno("poll on the completion queue", errno);
    for (const Completion& c : queue.drain()) {
      if (c.tag >= n || seen[c.tag]) return Internal("completion with unexpected tag " + std::to_string(c.tag));
      KVF_RETURN_IF_ERROR(c.status.with_context("batch request " + std::to_string(c.tag)));
      seen[c.tag] = true;
      ++completed;
    }
    if (Clock::now() > deadline) return Timeout("batch: " + std::to_string(n - completed) + " requests unfinished");
  }
  return Status::Ok();
}

Status run_single_once(InitiatorSession& session, TransferOp op, const BatchBlocks& b) {
  KVF_ASSIGN_OR_RETURN(TransferRequest r, session.create_request(op, b.local, b.remote, session.transfer_options()));
  KVF_RETURN_IF_ERROR(r.post());
  return r.wait(kTransferTimeout);
}

// Verifies one batch: fresh data on the source blocks, a poisoned destination, every
// byte of the batch's blocks compared by the side that owns the destination.
Result<VerifyOutcome> verify_batch(InitiatorSession& session, TransferOp op, CompletionQueue& queue) {
  const BenchOptions& o = session.options();
  const std::uint32_t pool_blocks = session.pool().layout().blocks();
  const std::uint64_t round = 0x5EED0000u + static_cast<std::uint64_t>(o.iterations);
  const BatchBlocks b = choose_batch(o, pool_blocks, round);
  VerifyPlan plan{op, o.block_pattern, static_cast<std::uint32_t>(o.batch) * o.blocks,
                  remote_side_seed(o.seed, round), mix64(o.seed ^ round)};
  if (op == TransferOp::kWrite) fill_request_blocks(session.pool(), b.local, plan.data_seed);
  else poison_pool(session.pool());
  KVF_RETURN_IF_ERROR(session.channel().send(ControlType::kVerifyBegin, to_json(plan)));
  KVF_RETURN_IF_ERROR(session.channel().expect(ControlType::kVerifyReady).status());
  std::optional<std::string> note;
  if (op == TransferOp::kWrite) note = kVerifyNotification;
  KVF_RETURN_IF_ERROR(run_batch_once(session, op, b, queue, note).with_context("verified batch"));
  if (op == TransferOp::kRead) return check_request_blocks(session.pool(), b.local, plan.data_seed);
  KVF_RETURN_IF_ERROR(session.channel().send(ControlType::kVerifyCheck, nlohmann::json::object()));
  KVF_ASSIGN_OR_RETURN(nlohmann::json body, session.channel().expect(ControlType::kVerifyResult));
  return parse_verify_outcome(body);
}

}  // namespace

Result<CaseResult> run_batch_case(InitiatorSession& session, TransferOp op) {
  const BenchOptions& o = session.options();
  const std::uint32_t pool_blocks = session.pool().layout().blocks();
  KVF_ASSIGN_OR_RETURN(CompletionQueue queue, CompletionQueue::create());

  CaseResult result;
  result.backend = o.backend;
  result.op = std::string(to_string(op)) + " x" + std::to_string(o.batch);
  result.pattern = to_string(o.block_pattern);
  result.block_size = o.block_size;
  result.blocks = o.blocks;
  result.layers = o.layers;
  result.bytes = std::uint64_t{o.blocks} * static_cast<std::uint64_t>(o.batch) * o.layers * o.block_size;
  result.descriptors = std::uint64_t{o.blocks} * static_cast<std::uint64_t>(o.batch) * o.layers;
  result.iterations = o.iterations;
  result.requests = "batch of " + std::to_string(o.batch) + ", completion queue";
  result.ceiling_name = "one request, same bytes";

  // Alternate batch and single rounds so both see the same machine state; new block
  // ids every round, as fresh requests.
  std::vector<double> batch_s, single_s;
  const int total = o.warmup + o.iterations;
  ProgressLine progress(result.op, total);
  for (int r = 0; r < total; ++r) {
    const BatchBlocks b = choose_batch(o, pool_blocks, static_cast<std::uint64_t>(r));
    auto t0 = Clock::now();
    KVF_RETURN_IF_ERROR(run_batch_once(session, op, b, queue));
    const double batch_seconds = to_seconds(Clock::now() - t0);
    t0 = Clock::now();
    KVF_RETURN_IF_ERROR(run_single_once(session, op, b).with_context("single request"));
    const double single_seconds = to_seconds(Clock::now() - t0);
    if (r >= o.warmup) {
      batch_s.push_back(batch_seconds);
      single_s.push_back(single_seconds);
    }
    progress.update(r + 1);
  }
  const double batch_median = median(batch_s);
  const double single_median = median(single_s);
  result.p50_us = batch_median * 1e6;
  result.p99_us = percentiles(batch_s).p99 * 1e6;
  result.gbps = static_cast<double>(result.bytes) / batch_median / 1e9;
  result.ceiling_gbps = static_cast<double>(result.bytes) / single_median / 1e9;
  result.ratio = result.ceiling_gbps > 0 ? result.gbps / result.ceiling_gbps : 0;
  if (o.verify) {
    KVF_ASSIGN_OR_RETURN(VerifyOutcome outcome, verify_batch(session, op, queue));
    result.verified = outcome.ok ? VerifyState::kPassed : VerifyState::kFailed;
    result.verify_message = outcome.message;
  }
  return result;
}

}  // namespace kvferry::cli
