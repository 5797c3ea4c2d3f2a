// kvferry/kv/block_plan.h — from "these blocks of those layers" to index transfers.
//
// Contract
// - A `BlockPlanner` is an immutable value made for one pair of compatible layouts
//   (ours and the peer's). `plan()` is const and thread-safe; it writes only into the
//   caller's `BlockPlan`.
// - A `BlockPlan` is the caller's reusable output buffer (not synchronised, not even
//   its const accessors: local_indices() fills a cache). Planning into a plan that has
//   held one as large allocates nothing: keep one per worker thread on the hot path.
//   It holds the selection as lanes x block ids (what KvLink hands the Agent); its
//   index vectors, selecting from the two pools' `KvPool::block_descriptors()` lists,
//   are built only if asked for.
// - Cost: one pass over the block ids (validation, copy and run counting), never a
//   store per (lane, block) pair: a 32,768-token pull of a 40-layer vLLM pool (163,840
//   pairs) plans in microseconds (docs/benchmarks.md, "KV layer").
// - Merging: pairs are emitted lane-major, blocks in the caller's order, so block ids
//   consecutive on both sides are consecutive descriptors of one lane, which the
//   Agent merges into one descriptor per run and lane (vLLM NHD: one per run, layer
//   and K/V; FlashInfer and MLA: one per run and layer). The plan also lists the runs,
//   so KvLink can hand long runs to the Agent already merged.
// - Errors: an out-of-range block id, unequal source and destination counts or a
//   layer range outside the model are InvalidArgument naming the value.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "kvferry/kv/kv_layout.h"
#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry {

// Layers [first, first + count); the default is every layer.
struct LayerRange {
  static constexpr std::uint32_t kToLastLayer = std::numeric_limits<std::uint32_t>::max();
  std::uint32_t first = 0;
  std::uint32_t count = kToLastLayer;  // clipped to the last layer
};

// What one transfer moves: source block i lands in destination block i, in every lane
// (K and V) of the selected layers. Spans must outlive the plan() call only.
struct BlockSelection {
  std::span<const std::uint32_t> source_blocks;
  std::span<const std::uint32_t> destination_blocks;
  LayerRange layers;
};

// Blocks `count` long that are consecutive on both sides: local blocks
// [local_first, +count) pair with remote blocks [remote_first, +count).
struct BlockRun {
  std::uint32_t local_first = 0;
  std::uint32_t remote_first = 0;
  std::uint32_t count = 0;
};

class BlockPlan {
 public:
  // The selection as block ids of each side (local block i pairs with remote block i in
  // every lane of [first_lane(), end_lane())): the strided form KvLink hands the Agent.
  std::span<const std::uint32_t> local_blocks() const { return local_blocks_; }
  std::span<const std::uint32_t> remote_blocks() const { return remote_blocks_; }
  // Indices into the local and the remote pool's block_descriptors(), pairwise. Built
  // on the first call after plan() (one store per pair), for callers that want the
  // index form; the strided path never needs them.
  std::span<const std::uint32_t> local_indices() const {
    expand();
    return local_;
  }
  std::span<const std::uint32_t> remote_indices() const {
    expand();
    return remote_;
  }
  std::size_t pairs() const { return local_blocks_.size() * (end_lane_ - first_lane_); }
  std::uint64_t bytes() const { return bytes_; }
  // The same selection as runs of blocks, in order, and the lanes it covers: one merged
  // descriptor per (lane, run). KvLink hands these to the Agent directly when merging
  // shrinks the transfer a lot (a fresh engine's contiguous blocks).
  std::span<const BlockRun> runs() const { return runs_; }
  std::uint32_t first_lane() const { return first_lane_; }
  std::uint32_t end_lane() const { return end_lane_; }
  // runs() x lanes: the descriptors after merging runs contiguous on both sides (an
  // upper bound: runs that also continue across lanes merge further; a request's
  // telemetry().descriptors_merged says what was merged).
  std::uint64_t merged_descriptors() const { return std::uint64_t{runs_.size()} * (end_lane_ - first_lane_); }
  // The direction it was planned for.
  TransferOp op() const { return op_; }
  void reserve(std::size_t pairs) {
    local_.reserve(pairs);
    remote_.reserve(pairs);
  }

 private:
  friend class BlockPlanner;
  void expand() const;
  std::vector<std::uint32_t> local_blocks_;
  std::vector<std::uint32_t> remote_blocks_;
  std::uint32_t local_pool_blocks_ = 0;  // descriptor_index(lane, b) = lane * blocks + b
  std::uint32_t remote_pool_blocks_ = 0;
  mutable bool expanded_ = false;
  mutable std::vector<std::uint32_t> local_;
  mutable std::vector<std::uint32_t> remote_;
  std::vector<BlockRun> runs_;
  std::uint64_t bytes_ = 0;
  std::uint32_t first_lane_ = 0;
  std::uint32_t end_lane_ = 0;
  TransferOp op_ = TransferOp::kRead;
};

class BlockPlanner {
 public:
  // Fails with check_kv_compatible()'s message when the layouts cannot exchange blocks.
  static Result<BlockPlanner> create(const KvLayout& local, const KvLayout& remote);

  // kRead pulls: source blocks are the remote pool's, destination blocks ours.
  // kWrite pushes: source blocks are ours, destination blocks the remote pool's.
  Status plan(TransferOp op, const BlockSelection& selection, BlockPlan& out) const;
  Result<BlockPlan> plan(TransferOp op, const BlockSelection& selection) const;

  const KvLayout& local_layout() const { return local_; }
  const KvLayout& remote_layout() const { return remote_; }

 private:
  BlockPlanner(const KvLayout& local, const KvLayout& remote) : local_(local), remote_(remote) {}
  Status fill(TransferOp op, const BlockSelection& selection, BlockPlan& out) const;

  KvLayout local_;
  KvLayout remote_;
};

}  // namespace kvferry
