// block_choice.h — which blocks a request moves, reproducibly from a seed.
//
// An engine's paged KV cache hands a request arbitrary free blocks, the same block ids
// in every layer. "Scattered" imitates that: distinct random ids (in drawn order, as a
// block table would list them). "Contiguous" is blocks 0..count-1, the best case for
// merging. The generator is our own (splitmix64 + Fisher-Yates), not <random>'s
// distributions, so two builds on two hosts derive the same ids from the same seed.
#pragma once

#include <cstdint>
#include <vector>

namespace kvferry::cli {

enum class BlockPattern { kContiguous, kScattered };

const char* to_string(BlockPattern pattern);

// `count` distinct block ids out of [0, pool_blocks). Requires count <= pool_blocks.
std::vector<std::uint32_t> choose_block_ids(BlockPattern pattern, std::uint64_t seed,
                                            std::uint32_t pool_blocks, std::uint32_t count);

// Descriptor indices of `block_ids` in every layer, layer-major, for a pool laid out as
// in host_pool.h: index = layer * pool_blocks + block.
std::vector<std::uint32_t> indices_in_every_layer(const std::vector<std::uint32_t>& block_ids,
                                                  std::uint32_t layers, std::uint32_t pool_blocks);

// The seeds of one request's two sides, derived from the run seed and request number.
std::uint64_t local_side_seed(std::uint64_t run_seed, std::uint64_t request);
std::uint64_t remote_side_seed(std::uint64_t run_seed, std::uint64_t request);

}  // namespace kvferry::cli
