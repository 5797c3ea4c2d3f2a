// kv_block_allocator.h — the pull client's own block allocator, as an engine's block
// manager: a free list handing out block ids and taking them back.
//
// `contiguous` hands out the lowest ids first (0, 1, 2, ...: a just-started engine, runs
// merge); `scattered` starts from a seeded shuffle of all ids (an engine that has been
// serving for a while) and queues released ids, so consecutive requests get
// arbitrary, different blocks.
// Not thread-safe: one owner.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/block_choice.h"

namespace kvferry::cli {

class KvBlockAllocator {
 public:
  KvBlockAllocator(std::uint32_t blocks, BlockPattern pattern, std::uint64_t seed);

  // `count` free block ids, or nullopt (nothing taken) when fewer are free.
  std::optional<std::vector<std::uint32_t>> allocate(std::uint32_t count);
  // Gives ids back. A contiguous allocator hands them out again next (lowest first); a
  // scattered one queues them behind every other free block.
  void release(std::span<const std::uint32_t> ids);
  std::uint32_t free_blocks() const { return static_cast<std::uint32_t>(free_.size()); }

 private:
  std::vector<std::uint32_t> free_;  // allocate pops from the back
  bool queue_released_;              // scattered: released ids go to the front
};

}  // namespace kvferry::cli
