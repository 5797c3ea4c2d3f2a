// What offload and onboard share: a pool view's block shape, the memory and file
// descriptor lists of a set of blocks, checksums, and the staging path for GPU pools.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kv/offload_index.h"
#include "kvferry/kv/offload.h"

namespace kvferry::detail {

// The segment lengths of one block (block 0's); every block must match.
Result<std::vector<std::uint64_t>> block_shape(const KvPoolView& pool);

// Memory segments of `blocks` in order, and the file descriptors of store entries
// `entries` (entry k at offset k * block_bytes), pairwise of equal length.
struct BlockLists {
  DescriptorList memory;
  DescriptorList file;
  std::vector<std::size_t> first;  // index in memory/file of each block's first segment
};
Result<BlockLists> block_lists(const KvPoolView& pool, const std::vector<std::uint64_t>& shape,
                               std::span<const std::uint32_t> blocks, std::span<const std::uint32_t> entries,
                               std::uint32_t file_id);

// XXH3-64 of one block's segments (host memory), in order.
std::uint64_t block_checksum(const DescriptorList& memory, std::size_t first, std::size_t count);

// GPU pools through pinned host memory and the file backend. `file_id` is the store's
// registered data file. Offload: `checksums` (when not null) receives one XXH3-64 per
// block. Onboard: `expected` (when not null) holds one per block, in the order of the
// lists, and every block is checked against it.
struct StagingJob {
  Agent* agent = nullptr;
  const KvPoolView* pool = nullptr;
  const BlockLists* lists = nullptr;
  std::size_t segments_per_block = 0;
  std::uint32_t file_id = 0;
  std::uint64_t staging_bytes = 0;
  std::chrono::milliseconds timeout{0};
};
Status staged_offload(const StagingJob& job, std::vector<std::uint64_t>* checksums);
Status staged_onboard(const StagingJob& job, const std::vector<std::uint64_t>* expected);
// Empty when the staging path can run here (a CUDA driver and a device), else why not.
std::string staging_unavailable_reason();

}  // namespace kvferry::detail
