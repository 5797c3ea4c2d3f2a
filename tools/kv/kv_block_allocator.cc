#include "kv/kv_block_allocator.h"

#include <algorithm>

namespace kvferry::cli {

KvBlockAllocator::KvBlockAllocator(std::uint32_t blocks, BlockPattern pattern, std::uint64_t seed)
    : queue_released_(pattern == BlockPattern::kScattered) {
  free_ = choose_block_ids(pattern, seed, blocks, blocks);  // all ids, shuffled when scattered
  std::reverse(free_.begin(), free_.end());                 // pops then yield them in order
}

std::optional<std::vector<std::uint32_t>> KvBlockAllocator::allocate(std::uint32_t count) {
  if (count > free_.size()) return std::nullopt;
  std::vector<std::uint32_t> ids(free_.rbegin(), free_.rbegin() + count);
  free_.resize(free_.size() - count);
  return ids;
}

void KvBlockAllocator::release(std::span<const std::uint32_t> ids) {
  free_.insert(queue_released_ ? free_.begin() : free_.end(), ids.rbegin(), ids.rend());
}

}  // namespace kvferry::cli
