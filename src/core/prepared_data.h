// What a PreparedList holds, and the merge of index pairs into transfer pieces.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/instance_id.h"
#include "core/backend.h"
#include "core/transfer_job.h"
#include "kvferry/block_lanes.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry::detail {

struct PreparedData {
  InstanceId owner;  // the agent instance that validated it (an id, never a pointer)
  bool local = true;
  std::string peer;                   // empty when local
  std::uint64_t peer_generation = 0;  // the peer entry it was validated against
  MemoryKind kind = MemoryKind::kDram;
  std::vector<Descriptor> descriptors;
  // Per descriptor, an index into region_ids; merging never crosses regions.
  std::vector<std::uint32_t> region_of;
  std::vector<std::uint64_t> region_ids;  // distinct
};

// What a PreparedLanes holds: the lanes, each validated whole against one region.
struct PreparedLanesData {
  InstanceId owner;  // the agent instance that validated it (an id, never a pointer)
  bool local = true;
  std::string peer;
  std::uint64_t peer_generation = 0;
  BlockLanes lanes;
  std::vector<std::uint32_t> region_of_lane;  // index into region_ids
  std::vector<std::uint64_t> region_ids;      // distinct
};

// The region of a sorted (kind, device, address) vector that holds all of d; null if none.
const RegionInfo* find_region_in_sorted(const std::vector<RegionInfo>& sorted, MemoryKind kind, const Descriptor& d);

struct MergeResult {
  std::vector<TransferPiece> pieces;
  std::vector<std::uint64_t> local_region_ids;  // distinct regions the pieces touch
  std::uint64_t total_bytes = 0;
};

// Pairs local[local_idx[i]] with remote[remote_idx[i]], checks indices and lengths, and
// merges pairs that continue the previous one on both sides within the same regions.
Result<MergeResult> merge_index_pairs(const PreparedData& local, std::span<const std::uint32_t> local_idx,
                                      const PreparedData& remote, std::span<const std::uint32_t> remote_idx);

}  // namespace kvferry::detail
