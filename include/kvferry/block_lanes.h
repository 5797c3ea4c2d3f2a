// kvferry/block_lanes.h — transfers described as lanes x block ids, not expanded pairs.
//
// A KV pool is a set of lanes (kv/kv_layout.h: "the K half of layer 3"), each an
// arithmetic progression of equal blocks: block b of lane l starts at
// lane_addresses[l] + b * block_stride and is block_bytes long. An engine's request is
// "blocks 17, 18, 90, ... of these lanes go to blocks 3, 4, 5, ... of the peer's lanes":
// lanes x block ids, never a list of (lane, block) pairs. The Agent validates such a
// request per lane (once, at prepare) and per block id range (per request), merges runs
// of consecutive block ids once for all lanes, and hands the backends the strided form.
// A request therefore costs O(lanes + blocks) on the caller's thread, not O(pairs).
//
//   auto local = agent->prepare_local_lanes(pool.block_lanes());              // once
//   auto remote = agent->prepare_remote_lanes(peer, peer_pool.block_lanes());  // once
//   LaneTransfer t{.local_blocks = ours, .remote_blocks = theirs};            // per request
//   auto request = agent->create_transfer(TransferOp::kRead, *local, *remote, t, options);
//
// Contract
// - `PreparedLanes` is immutable and cheap to copy (shared); safe from any thread. Like a
//   PreparedList it stays bound to what it was validated against: a transfer that uses
//   it fails with a clear error if that memory was deregistered or the peer reloaded.
// - Local lane i pairs with remote lane i. Both sides' block_bytes must be equal.
// - Errors name the lane, block id and position that were wrong.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvferry/memory.h"

namespace kvferry {

struct BlockLanes {
  MemoryKind kind = MemoryKind::kDram;
  std::uint32_t device = 0;
  std::vector<std::uint64_t> lane_addresses;  // block 0 of each lane
  std::uint64_t block_stride = 0;             // bytes from block b to block b + 1 of a lane
  std::uint64_t block_bytes = 0;              // bytes of a block (at most block_stride)
  std::uint32_t blocks = 0;                   // block ids [0, blocks) exist in every lane
};

// What one request moves: local block local_blocks[i] pairs with remote block
// remote_blocks[i], in every lane of [first_lane, first_lane + lane_count). Spans must
// outlive the create_transfer call only.
struct LaneTransfer {
  static constexpr std::uint32_t kToLastLane = std::numeric_limits<std::uint32_t>::max();
  std::span<const std::uint32_t> local_blocks;
  std::span<const std::uint32_t> remote_blocks;
  std::uint32_t first_lane = 0;
  std::uint32_t lane_count = kToLastLane;  // clipped to the last lane
};

namespace detail {
struct PreparedLanesData;
}

class PreparedLanes {
 public:
  PreparedLanes() = default;  // empty, invalid
  bool valid() const { return data_ != nullptr; }
  std::size_t lanes() const;
  std::uint32_t blocks() const;
  MemoryKind kind() const;
  bool is_local() const;
  // The peer it was prepared against; empty for local lanes.
  const std::string& peer() const;

 private:
  friend class Agent;
  explicit PreparedLanes(std::shared_ptr<const detail::PreparedLanesData> data) : data_(std::move(data)) {}
  std::shared_ptr<const detail::PreparedLanesData> data_;
};

}  // namespace kvferry
