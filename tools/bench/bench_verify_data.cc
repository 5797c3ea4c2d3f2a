#include "bench/bench_verify_data.h"

#include <cstring>
#include <string>

#include "common/block_pattern.h"

namespace kvferry::cli {

void fill_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                         std::uint64_t data_seed) {
  const PoolShape& shape = pool.shape();
  for (std::uint32_t layer = 0; layer < shape.layers; ++layer) {
    for (std::size_t slot = 0; slot < block_ids.size(); ++slot) {
      fill_pattern(pool.block(layer, block_ids[slot]), shape.block_size,
                   pattern_key(data_seed, layer, slot));
    }
  }
}

void poison_pool(const HostPool& pool) { std::memset(pool.base(), kPoisonByte, pool.bytes()); }

VerifyOutcome check_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                                   std::uint64_t data_seed) {
  const PoolShape& shape = pool.shape();
  std::vector<std::int64_t> slot_of_block(shape.blocks_per_layer, -1);
  for (std::size_t slot = 0; slot < block_ids.size(); ++slot) {
    slot_of_block[block_ids[slot]] = static_cast<std::int64_t>(slot);
  }
  VerifyOutcome outcome;
  for (std::uint32_t layer = 0; layer < shape.layers; ++layer) {
    for (std::uint32_t b = 0; b < shape.blocks_per_layer; ++b) {
      const std::int64_t slot = slot_of_block[b];
      const std::uint8_t* block = pool.block(layer, b);
      const auto bad = slot >= 0
                           ? find_pattern_mismatch(block, shape.block_size,
                                                   pattern_key(data_seed, layer, static_cast<std::uint64_t>(slot)))
                           : find_byte_mismatch(block, shape.block_size, kPoisonByte);
      if (bad) {
        outcome.message = (slot >= 0 ? "destination" : "untouched") + std::string(" block ") +
                          std::to_string(b) + " of layer " + std::to_string(layer) +
                          " differs at byte " + std::to_string(*bad) +
                          (slot >= 0 ? " (slot " + std::to_string(slot) + ")" : " (poison overwritten)");
        return outcome;
      }
      if (slot >= 0) outcome.checked_bytes += shape.block_size;
    }
  }
  outcome.ok = true;
  return outcome;
}

}  // namespace kvferry::cli
