// The direct path's lanes x units form (tp_head_lanes.h).
#include "kv/tp/tp_head_lanes.h"

#include <algorithm>
#include <limits>

#include "kv/tp/tp_direct_plan.h"

namespace kvferry::tp {
namespace {

bool token_rows(KvArrangement a) {
  return a == KvArrangement::kVllmNhd || a == KvArrangement::kSglangTokenSlots;
}

bool slots_fit(const KvLayout& layout) {
  return std::uint64_t{layout.blocks()} * layout.geometry().block_tokens <= std::numeric_limits<std::uint32_t>::max();
}

}  // namespace

LaneUnit head_lane_unit(const KvLayout& source, const KvLayout& destination) {
  const KvArrangement s = source.arrangement();
  const KvArrangement d = destination.arrangement();
  if (s == KvArrangement::kVllmHnd && d == KvArrangement::kVllmHnd &&
      source.geometry().block_tokens == destination.geometry().block_tokens) {
    return LaneUnit::kBlock;
  }
  const bool both_rows = token_rows(s) && token_rows(d);
  const bool both_mla = s == KvArrangement::kMla && d == KvArrangement::kMla;
  if ((both_rows || both_mla) && slots_fit(source) && slots_fit(destination)) return LaneUnit::kToken;
  return LaneUnit::kNone;
}

LaneUnit head_lane_unit(const KvPool& source, const KvPool& destination) {
  if (source.kind() != MemoryKind::kDram || destination.kind() != MemoryKind::kDram) return LaneUnit::kNone;
  return head_lane_unit(source.layout(), destination.layout());
}

std::uint32_t unit_tokens(LaneUnit unit, const KvLayout& layout) {
  return unit == LaneUnit::kBlock ? layout.geometry().block_tokens : 1;
}

BlockLanes head_lanes(const KvPool& pool, LaneUnit unit, std::uint32_t first_head, std::uint32_t heads) {
  const KvLayout& layout = pool.layout();
  const std::uint64_t rb = head_row_bytes(layout);
  const std::uint64_t bt = layout.geometry().block_tokens;
  BlockLanes lanes;
  lanes.kind = pool.kind();
  lanes.device = pool.device();
  // Block b of a lane at segment_address(lane, b); kBlock keeps that stride and starts at
  // the share's first head; kToken walks slots, each a row of all the pool's heads.
  const std::uint64_t head_offset = unit == LaneUnit::kBlock ? first_head * bt * rb : first_head * rb;
  lanes.lane_addresses.reserve(layout.lane_count());
  for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
    lanes.lane_addresses.push_back(pool.segment_address(lane, 0) + head_offset);
  }
  if (unit == LaneUnit::kBlock) {
    lanes.block_stride = layout.block_stride();
    lanes.block_bytes = heads * bt * rb;
    lanes.blocks = layout.blocks();
  } else {
    lanes.block_stride = std::uint64_t{layout.geometry().kv_heads} * rb;
    lanes.block_bytes = heads * rb;
    lanes.blocks = static_cast<std::uint32_t>(std::uint64_t{layout.blocks()} * bt);
  }
  return lanes;
}

bool lanes_cover(LaneUnit unit, const KvLayout& layout, std::uint64_t first, std::uint64_t tokens) {
  if (unit == LaneUnit::kToken) return true;
  if (unit != LaneUnit::kBlock) return false;
  const std::uint64_t bt = layout.geometry().block_tokens;
  return first % bt == 0 && (first + tokens) % bt == 0;
}

void unit_ids(LaneUnit unit, const KvLayout& layout, std::span<const std::uint32_t> blocks, std::uint64_t first,
              std::uint64_t tokens, std::vector<std::uint32_t>& out) {
  out.clear();
  const std::uint64_t bt = layout.geometry().block_tokens;
  if (unit == LaneUnit::kBlock) {
    out.assign(blocks.begin() + static_cast<std::ptrdiff_t>(first / bt),
               blocks.begin() + static_cast<std::ptrdiff_t>((first + tokens) / bt));
    return;
  }
  out.reserve(tokens);
  for (std::uint64_t t = first; t < first + tokens;) {
    const std::uint64_t in_block = t % bt;
    const std::uint64_t run = std::min(bt - in_block, first + tokens - t);
    const std::uint32_t base = static_cast<std::uint32_t>(blocks[t / bt] * bt + in_block);
    for (std::uint64_t k = 0; k < run; ++k) out.push_back(base + static_cast<std::uint32_t>(k));
    t += run;
  }
}

void sort_by_local(std::vector<std::uint32_t>& local, std::vector<std::uint32_t>& remote) {
  if (std::is_sorted(local.begin(), local.end())) return;
  std::vector<std::uint64_t> keyed(local.size());
  for (std::size_t i = 0; i < local.size(); ++i) keyed[i] = std::uint64_t{local[i]} << 32 | remote[i];
  std::sort(keyed.begin(), keyed.end());
  for (std::size_t i = 0; i < keyed.size(); ++i) {
    local[i] = static_cast<std::uint32_t>(keyed[i] >> 32);
    remote[i] = static_cast<std::uint32_t>(keyed[i]);
  }
}

}  // namespace kvferry::tp
