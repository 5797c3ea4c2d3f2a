#include "kvferry/kv/block_plan.h"

#include <string>

#include "kvferry/kv/kv_handshake.h"

namespace kvferry {
namespace {

// Checks every id against the pool size; returns the first bad position, or -1.
std::int64_t first_out_of_range(std::span<const std::uint32_t> ids, std::uint32_t blocks) {
  std::uint32_t max_id = 0;
  for (std::uint32_t id : ids) max_id = id > max_id ? id : max_id;  // branch-free scan
  if (max_id < blocks) return -1;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= blocks) return static_cast<std::int64_t>(i);
  return -1;
}

Status check_ids(std::span<const std::uint32_t> ids, std::uint32_t blocks, const char* side) {
  const std::int64_t bad = first_out_of_range(ids, blocks);
  if (bad < 0) return Status::Ok();
  return InvalidArgument(std::string("block plan: ") + side + " block id " +
                         std::to_string(ids[static_cast<std::size_t>(bad)]) + " at position " +
                         std::to_string(bad) + " is outside that pool's " + std::to_string(blocks) +
                         " blocks");
}

// Pairs that continue the previous pair on both sides extend its run.
void find_runs(std::span<const std::uint32_t> local, std::span<const std::uint32_t> remote,
               std::vector<BlockRun>& runs) {
  runs.clear();
  for (std::size_t i = 0; i < local.size(); ++i) {
    if (!runs.empty()) {
      BlockRun& last = runs.back();
      if (local[i] == last.local_first + last.count && remote[i] == last.remote_first + last.count) {
        ++last.count;
        continue;
      }
    }
    runs.push_back(BlockRun{local[i], remote[i], 1});
  }
}

}  // namespace

Result<BlockPlanner> BlockPlanner::create(const KvLayout& local, const KvLayout& remote) {
  KVF_RETURN_IF_ERROR(check_kv_compatible(local, remote));
  return BlockPlanner(local, remote);
}

Status BlockPlanner::plan(TransferOp op, const BlockSelection& selection, BlockPlan& out) const {
  Status status = fill(op, selection, out);
  if (!status.ok()) {
    out.local_blocks_.clear();
    out.remote_blocks_.clear();
    out.local_.clear();
    out.remote_.clear();
    out.expanded_ = true;
    out.runs_.clear();
    out.bytes_ = 0;
    out.first_lane_ = out.end_lane_ = 0;
  }
  return status;
}

Status BlockPlanner::fill(TransferOp op, const BlockSelection& selection, BlockPlan& out) const {
  const bool pull = op == TransferOp::kRead;
  const std::span<const std::uint32_t> local_ids =
      pull ? selection.destination_blocks : selection.source_blocks;
  const std::span<const std::uint32_t> remote_ids =
      pull ? selection.source_blocks : selection.destination_blocks;
  if (local_ids.size() != remote_ids.size()) {
    return InvalidArgument("block plan: " + std::to_string(selection.source_blocks.size()) +
                           " source blocks but " + std::to_string(selection.destination_blocks.size()) +
                           " destination blocks");
  }
  const std::uint32_t layers = local_.geometry().layers;
  const LayerRange range = selection.layers;
  if (range.first >= layers || range.count == 0) {
    return InvalidArgument("block plan: layer range starting at " + std::to_string(range.first) + " (count " +
                           std::to_string(range.count) + ") selects none of the " + std::to_string(layers) +
                           " layers");
  }
  if (range.count != LayerRange::kToLastLayer && range.count > layers - range.first) {
    return InvalidArgument("block plan: layers " + std::to_string(range.first) + ".." +
                           std::to_string(std::uint64_t{range.first} + range.count - 1) +
                           " exceed the model's " + std::to_string(layers) + " layers");
  }
  KVF_RETURN_IF_ERROR(check_ids(local_ids, local_.blocks(), pull ? "destination (local)" : "source (local)"));
  KVF_RETURN_IF_ERROR(
      check_ids(remote_ids, remote_.blocks(), pull ? "source (remote)" : "destination (remote)"));

  const std::uint32_t layer_count =
      range.count == LayerRange::kToLastLayer ? layers - range.first : range.count;
  const std::uint32_t lanes_per_layer = local_.lanes_per_layer();
  const std::uint32_t first_lane = range.first * lanes_per_layer;
  const std::uint32_t end_lane = first_lane + layer_count * lanes_per_layer;
  const std::size_t pairs = local_ids.size() * (end_lane - first_lane);
  out.local_blocks_.assign(local_ids.begin(), local_ids.end());
  out.remote_blocks_.assign(remote_ids.begin(), remote_ids.end());
  out.local_pool_blocks_ = local_.blocks();
  out.remote_pool_blocks_ = remote_.blocks();
  out.expanded_ = false;
  find_runs(local_ids, remote_ids, out.runs_);
  out.op_ = op;
  out.bytes_ = std::uint64_t{pairs} * local_.segment_bytes();
  out.first_lane_ = first_lane;
  out.end_lane_ = end_lane;
  return Status::Ok();
}

// The vectors are resized, never cleared first: a plan of the same size as the last
// one is rewritten in place, with no allocation and no zero-filling pass.
void BlockPlan::expand() const {
  if (expanded_) return;
  expanded_ = true;
  const std::size_t n = local_blocks_.size();
  local_.resize(pairs());
  remote_.resize(pairs());
  std::uint32_t* local_out = local_.data();
  std::uint32_t* remote_out = remote_.data();
  const std::uint32_t* local_in = local_blocks_.data();
  const std::uint32_t* remote_in = remote_blocks_.data();
  for (std::uint32_t lane = first_lane_; lane < end_lane_; ++lane) {
    const std::uint32_t local_base = lane * local_pool_blocks_;
    const std::uint32_t remote_base = lane * remote_pool_blocks_;
    for (std::size_t i = 0; i < n; ++i) {
      local_out[i] = local_base + local_in[i];
      remote_out[i] = remote_base + remote_in[i];
    }
    local_out += n;
    remote_out += n;
  }
}

Result<BlockPlan> BlockPlanner::plan(TransferOp op, const BlockSelection& selection) const {
  BlockPlan out;
  KVF_RETURN_IF_ERROR(plan(op, selection, out));
  return out;
}

}  // namespace kvferry
