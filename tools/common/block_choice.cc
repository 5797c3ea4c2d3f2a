#include "common/block_choice.h"

#include <numeric>
#include <utility>

#include "common/block_pattern.h"

namespace kvferry::cli {

const char* to_string(BlockPattern pattern) {
  return pattern == BlockPattern::kContiguous ? "contiguous" : "scattered";
}

std::vector<std::uint32_t> choose_block_ids(BlockPattern pattern, std::uint64_t seed,
                                            std::uint32_t pool_blocks, std::uint32_t count) {
  std::vector<std::uint32_t> all(pool_blocks);
  std::iota(all.begin(), all.end(), 0u);
  if (pattern == BlockPattern::kContiguous) {
    all.resize(count);
    return all;
  }
  // Partial Fisher-Yates: the first `count` slots become a uniform random selection.
  std::uint64_t state = seed;
  for (std::uint32_t i = 0; i < count; ++i) {
    state = mix64(state);
    const std::uint32_t pick = i + static_cast<std::uint32_t>(state % (pool_blocks - i));
    std::swap(all[i], all[pick]);
  }
  all.resize(count);
  return all;
}

std::vector<std::uint32_t> indices_in_every_layer(const std::vector<std::uint32_t>& block_ids,
                                                  std::uint32_t layers, std::uint32_t pool_blocks) {
  std::vector<std::uint32_t> indices;
  indices.reserve(block_ids.size() * layers);
  for (std::uint32_t layer = 0; layer < layers; ++layer) {
    for (std::uint32_t id : block_ids) indices.push_back(layer * pool_blocks + id);
  }
  return indices;
}

std::uint64_t local_side_seed(std::uint64_t run_seed, std::uint64_t request) {
  return mix64(run_seed ^ mix64(2 * request));
}

std::uint64_t remote_side_seed(std::uint64_t run_seed, std::uint64_t request) {
  return mix64(run_seed ^ mix64(2 * request + 1));
}

}  // namespace kvferry::cli
