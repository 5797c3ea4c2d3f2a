// tp_head_lanes.h — the direct path as lanes x units (block_lanes.h) rather than explicit
// descriptor pairs.
//
// Why: an explicit plan builds, validates and slices one descriptor per head slice of a
// block (vllm-hnd, 8 KiB) or per token row (vllm-nhd, 512 B): for a 160 MiB share that is
// 20,480 to 327,680 descriptors, several milliseconds of CPU per 16 MiB piece on the
// sender before a byte moves. Where both pools keep a share's heads of one unit at one
// fixed stride per lane, the share is "these unit ids of every lane" instead: the Agent
// checks each lane once (at prepare) and each piece costs O(lanes + units) to create;
// the backends walk the strided form in their copy loops (shm: one memcpy per unit; tcp:
// one iovec per unit).
//
// Units:
// - kBlock: the share's heads of one block of one lane (K or V of a layer). vllm-hnd on
//   both sides with the same block_tokens: a head's tokens are adjacent, so the heads
//   [a, b) of a block are one run of (b - a) * block_tokens rows.
// - kToken: the share's heads of one token slot. vllm-nhd or sglang token slots on either
//   side (any mix, any block sizes) and mla: slot s = block * block_tokens + token of a
//   lane lies at lane base + s * (pool heads * row bytes), so a slot index is a unit id.
// Other pairs (flashinfer, hnd <-> nhd, hnd with different block sizes) have no such
// form and keep the explicit plan (tp_direct_plan.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvferry/agent.h"
#include "kvferry/block_lanes.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry::tp {

enum class LaneUnit : std::uint8_t { kNone = 0, kBlock = 1, kToken = 2 };

// The unit the pair (source, destination) can use; kNone when they have none (see above)
// or when a pool is not in host memory (GPU pools keep their copy-engine plan).
LaneUnit head_lane_unit(const KvPool& source, const KvPool& destination);
LaneUnit head_lane_unit(const KvLayout& source, const KvLayout& destination);

// `pool`'s lanes for heads [first_head, first_head + heads), lane = the pool's lane
// (layer-major, K then V), in units of `unit`. `unit` must be head_lane_unit's answer
// for a pair `pool` is part of.
BlockLanes head_lanes(const KvPool& pool, LaneUnit unit, std::uint32_t first_head, std::uint32_t heads);

// Tokens per unit in `layout`: its block_tokens for kBlock, 1 for kToken.
std::uint32_t unit_tokens(LaneUnit unit, const KvLayout& layout);

// Whether tokens [first, first + tokens) are whole units on both sides: always for
// kToken; for kBlock when both ends lie on a block boundary. Pieces that are not go
// through the explicit plan.
bool lanes_cover(LaneUnit unit, const KvLayout& layout, std::uint64_t first, std::uint64_t tokens);

// The unit ids of tokens [first, first + tokens) under block table `blocks` (which must
// cover them), replacing `out`.
void unit_ids(LaneUnit unit, const KvLayout& layout, std::span<const std::uint32_t> blocks, std::uint64_t first,
              std::uint64_t tokens, std::vector<std::uint32_t>& out);

// Reorders the pairs (local[i], remote[i]) so that the local ids ascend (pairs stay
// together). Why: the copier reads the local side, and a piece of a prompt's scattered
// blocks read in ascending address order runs ~15% faster than in the block table's
// order on the 2-core VM (docs/benchmarks.md, "TP on two cores: ascending reads").
void sort_by_local(std::vector<std::uint32_t>& local, std::vector<std::uint32_t>& remote);

// A direct share prepared once per (request, decode rank): both sides' lanes.
struct DirectLanes {
  LaneUnit unit = LaneUnit::kNone;
  PreparedLanes local;
  PreparedLanes remote;
};

}  // namespace kvferry::tp
