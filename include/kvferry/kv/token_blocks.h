// kvferry/kv/token_blocks.h — from an engine's tokens and slots to the block ids a
// block plan takes.
//
// Contract: pure functions of their arguments; thread-safe; they allocate only into
// the caller's output vector.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvferry/kv/kv_layout.h"
#include "kvferry/status.h"

namespace kvferry {

// A prefix-cache hit: the peer already holds the first `cached_tokens` tokens of the
// prompt, so only the tail of `block_table` moves. Whole blocks only: a partly cached
// block is sent again (its missing tokens are new). Returns the tail of `block_table`;
// empty when everything is cached.
std::span<const std::uint32_t> blocks_after_prefix_hit(std::span<const std::uint32_t> block_table,
                                                       std::uint64_t cached_tokens,
                                                       std::uint32_t block_tokens);

// SGLang-style token slots: a request's tokens sit in runs of slots of a token-slot pool
// (k[layer] / v[layer]: [slots, heads, dim]); a run need not follow the previous one.
struct SlotRun {
  std::uint64_t first_slot = 0;
  std::uint64_t count = 0;
};

// Appends the block ids that hold `runs` (block = slot / block_tokens) to `out`. A run
// must start on a block boundary (slot % block_tokens == 0); its last block may be
// partly used (it moves whole). Pools that hand out single slots use block_tokens 1.
// InvalidArgument names the offending run; `out` is then unchanged.
Status append_blocks_of_slot_runs(const KvLayout& layout, std::span<const SlotRun> runs,
                                  std::vector<std::uint32_t>& out);

}  // namespace kvferry
