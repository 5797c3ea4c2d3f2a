#include "bench/bench_verify_data.h"

#include <cstring>
#include <string>

#include "common/block_pattern.h"

namespace kvferry::cli {

// The bench's layout has one lane per layer (host_pool.h), so lane l is layer l and a
// segment is a whole block.
void fill_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                         std::uint64_t data_seed) {
  const KvLayout& layout = pool.layout();
  for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
    for (std::size_t slot = 0; slot < block_ids.size(); ++slot) {
      fill_pattern(pool.segment(lane, block_ids[slot]), layout.segment_bytes(),
                   pattern_key(data_seed, lane, slot));
    }
  }
}

void poison_pool(const HostPool& pool) { std::memset(pool.base(), kPoisonByte, pool.bytes()); }

VerifyOutcome check_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                                   std::uint64_t data_seed) {
  const KvLayout& layout = pool.layout();
  const std::uint64_t bytes = layout.segment_bytes();
  std::vector<std::int64_t> slot_of_block(layout.blocks(), -1);
  for (std::size_t slot = 0; slot < block_ids.size(); ++slot) {
    slot_of_block[block_ids[slot]] = static_cast<std::int64_t>(slot);
  }
  VerifyOutcome outcome;
  for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
      const std::int64_t slot = slot_of_block[b];
      const std::uint8_t* block = pool.segment(lane, b);
      const auto bad = slot >= 0 ? find_pattern_mismatch(block, bytes,
                                                         pattern_key(data_seed, lane, static_cast<std::uint64_t>(slot)))
                                 : find_byte_mismatch(block, bytes, kPoisonByte);
      if (bad) {
        outcome.message = (slot >= 0 ? "destination" : "untouched") + std::string(" block ") +
                          std::to_string(b) + " of layer " + std::to_string(layout.layer_of_lane(lane)) +
                          " differs at byte " + std::to_string(*bad) +
                          (slot >= 0 ? " (slot " + std::to_string(slot) + ")" : " (poison overwritten)");
        return outcome;
      }
      if (slot >= 0) outcome.checked_bytes += bytes;
    }
  }
  outcome.ok = true;
  return outcome;
}

}  // namespace kvferry::cli
