// The bench-equivalent step of `kvferry pull --baseline` (pull_session.h).
#include <vector>

#include "common/cli_util.h"
#include "kv/pull_session.h"

namespace kvferry::cli {

Result<PullStep> PullSession::run_baseline_step(int index) {
  if (!baseline_remote_.valid()) {
    KVF_ASSIGN_OR_RETURN(baseline_remote_,
                         agent_->prepare_remote(server_, link_->remote_pool().block_descriptors()));
  }
  const std::vector<std::uint32_t> source_table = server_blocks(index, /*for_baseline=*/true);
  auto allocated = allocator_.allocate(blocks_);
  if (!allocated) return Internal("the client's block allocator ran dry");
  const std::vector<std::uint32_t> source(source_table.begin() + cached_blocks_, source_table.end());
  const std::vector<std::uint32_t> destination(allocated->begin() + cached_blocks_, allocated->end());
  // As bench_block_case.cc: every index computed before the clock starts.
  const KvLayout& remote = link_->remote_pool().layout();
  std::vector<std::uint32_t> local_indices, remote_indices;
  local_indices.reserve(std::size_t{source.size()} * layout_.lane_count());
  remote_indices.reserve(local_indices.capacity());
  for (std::uint32_t lane = 0; lane < layout_.lane_count(); ++lane) {
    for (std::size_t i = 0; i < source.size(); ++i) {
      local_indices.push_back(layout_.descriptor_index(lane, destination[i]));
      remote_indices.push_back(remote.descriptor_index(lane, source[i]));
    }
  }
  KVF_RETURN_IF_ERROR(pool_->poison(destination));

  PullStep step;
  step.index = index;
  step.warmup = index < options_.warmup;
  TransferOptions transfer;
  transfer.backend = options_.backend;
  const auto start = Clock::now();
  Result<TransferRequest> request = agent_->create_transfer(
      TransferOp::kRead, local_->blocks(), local_indices, baseline_remote_, remote_indices, transfer);
  if (!request.ok()) return request.status().with_context("baseline: create_transfer");
  step.create_us = to_micros(Clock::now() - start);
  KVF_RETURN_IF_ERROR(request->post().with_context("baseline: post"));
  KVF_RETURN_IF_ERROR(
      request->wait(std::chrono::seconds(options_.timeout_s)).with_context("baseline transfer"));
  const double seconds = to_seconds(Clock::now() - start);
  step.pairs = local_indices.size();
  step.merged = request->telemetry().descriptors_merged;
  step.bytes = request->telemetry().bytes;
  step.ms = seconds * 1e3;
  step.gbps = gigabytes_per_second(step.bytes, seconds);
  KVF_RETURN_IF_ERROR(verify(source, destination, step));
  allocator_.release(*allocated);
  return step;
}

}  // namespace kvferry::cli
