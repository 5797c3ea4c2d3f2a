#include "kv/tp/tp_direct_plan.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace kvferry::tp {
namespace {

std::uint32_t kv_parts(const KvLayout& layout) { return layout.arrangement() == KvArrangement::kMla ? 1 : 2; }

bool heads_outer(const KvLayout& layout) { return layout.arrangement() == KvArrangement::kVllmHnd; }

Status check_side(const HeadSlice& side, std::uint32_t heads, std::uint64_t end_token, const char* which) {
  const KvLayout& layout = side.pool->layout();
  const std::uint32_t bt = layout.geometry().block_tokens;
  if (std::uint64_t{side.first_head} + heads > layout.geometry().kv_heads) {
    return InvalidArgument(std::string("head slice: ") + which + " heads [" + std::to_string(side.first_head) + ", " +
                           std::to_string(side.first_head + heads) + ") outside its pool's " +
                           std::to_string(layout.geometry().kv_heads) + " heads");
  }
  const std::uint64_t needed = (end_token + bt - 1) / bt;
  if (side.blocks.size() < needed) {
    return InvalidArgument(std::string("head slice: ") + which + " block table holds " +
                           std::to_string(side.blocks.size()) + " blocks; tokens up to " + std::to_string(end_token) +
                           " need " + std::to_string(needed));
  }
  for (std::uint64_t i = 0; i < needed; ++i) {
    if (side.blocks[i] >= layout.blocks()) {
      return InvalidArgument(std::string("head slice: ") + which + " block id " + std::to_string(side.blocks[i]) +
                             " outside its pool of " + std::to_string(layout.blocks()) + " blocks");
    }
  }
  return Status::Ok();
}

}  // namespace

std::uint64_t head_row_bytes(const KvLayout& layout) {
  return std::uint64_t{layout.geometry().head_dim} * dtype_bytes(layout.geometry().dtype);
}

std::uint64_t row_address(const KvPool& pool, std::uint32_t layer, std::uint32_t kv_part, std::uint32_t block,
                          std::uint32_t slot, std::uint32_t head) {
  const KvLayout& layout = pool.layout();
  const std::uint64_t rb = head_row_bytes(layout);
  const std::uint64_t h = layout.geometry().kv_heads;
  const std::uint64_t bt = layout.geometry().block_tokens;
  switch (layout.arrangement()) {
    case KvArrangement::kVllmNhd:
    case KvArrangement::kSglangTokenSlots:
      return pool.segment_address(layer * 2 + kv_part, block) + (slot * h + head) * rb;
    case KvArrangement::kVllmHnd:
      return pool.segment_address(layer * 2 + kv_part, block) + (head * bt + slot) * rb;
    case KvArrangement::kFlashInfer:
      return pool.segment_address(layer, block) + ((kv_part * bt + slot) * h + head) * rb;
    case KvArrangement::kMla:
      return pool.segment_address(layer, block) + slot * rb;
  }
  return 0;
}

void DescriptorPairs::add(std::uint64_t local, std::uint64_t remote, std::uint64_t length) {
  if (!sealed_ && local == next_local_ && remote == next_remote_) {
    local_.back().length += length;  // continues both sides: grow the last pair
    remote_.back().length += length;
  } else {
    local_.push_back(Descriptor{local, length, local_device_});
    remote_.push_back(Descriptor{remote, length, remote_device_});
  }
  next_local_ = local + length;
  next_remote_ = remote + length;
  sealed_ = false;
}

Status plan_head_slices(const HeadSlice& source, const HeadSlice& destination, std::uint32_t heads,
                        std::uint64_t first_token, std::uint64_t tokens, SlicePlan plan, DescriptorPairs& out) {
  const KvLayout& src = source.pool->layout();
  const KvLayout& dst = destination.pool->layout();
  const KvGeometry& a = src.geometry();
  const KvGeometry& b = dst.geometry();
  if (a.layers != b.layers || a.head_dim != b.head_dim || a.dtype != b.dtype || kv_parts(src) != kv_parts(dst)) {
    return InvalidArgument("head slice: pools differ in layers, head_dim, dtype or MLA (" + src.describe() + " vs " +
                           dst.describe() + ")");
  }
  if (heads == 0 || tokens == 0) return InvalidArgument("head slice: nothing to move (0 heads or 0 tokens)");
  KVF_RETURN_IF_ERROR(check_side(source, heads, first_token + tokens, "source"));
  KVF_RETURN_IF_ERROR(check_side(destination, heads, first_token + tokens, "destination"));
  const std::uint64_t rb = head_row_bytes(src);
  const std::uint32_t sbt = a.block_tokens;
  const std::uint32_t dbt = b.block_tokens;
  const bool outer = heads_outer(src);
  const bool naive = plan == SlicePlan::kNaive;
  const auto head_at = [&](std::uint32_t i) { return naive ? heads - 1 - i : i; };
  const std::uint64_t end = first_token + tokens;
  for (std::uint32_t layer = 0; layer < a.layers; ++layer) {
    for (std::uint32_t kv = 0; kv < kv_parts(src); ++kv) {
      for (std::uint64_t t = first_token; t < end;) {
        // A run of tokens inside one source block and one destination block.
        const std::uint64_t run = std::min({end - t, sbt - t % sbt, dbt - t % dbt});
        const std::uint32_t sb = source.blocks[t / sbt];
        const std::uint32_t db = destination.blocks[t / dbt];
        const auto row = [&](std::uint64_t token, std::uint32_t head) {
          out.add(row_address(*source.pool, layer, kv, sb, static_cast<std::uint32_t>(token % sbt), source.first_head + head),
                  row_address(*destination.pool, layer, kv, db, static_cast<std::uint32_t>(token % dbt),
                              destination.first_head + head),
                  rb);
        };
        if (outer) {
          for (std::uint32_t i = 0; i < heads; ++i) {
            for (std::uint64_t k = t; k < t + run; ++k) row(k, head_at(i));
            if (naive) out.seal();
          }
        } else {
          for (std::uint64_t k = t; k < t + run; ++k) {
            for (std::uint32_t i = 0; i < heads; ++i) {
              row(k, head_at(i));
              if (naive) out.seal();
            }
          }
        }
        t += run;
      }
    }
  }
  return Status::Ok();
}

std::uint64_t count_merged_slices(const KvLayout& source, const KvLayout& destination, std::uint32_t heads,
                                  std::uint64_t tokens) {
  const std::uint64_t sbt = source.geometry().block_tokens;
  const std::uint64_t dbt = destination.geometry().block_tokens;
  const std::uint64_t both = std::lcm(sbt, dbt);
  const std::uint64_t runs = (tokens + sbt - 1) / sbt + (tokens + dbt - 1) / dbt - (tokens + both - 1) / both;
  const bool src_hnd = heads_outer(source);
  const bool dst_hnd = heads_outer(destination);
  std::uint64_t per_lane = 0;
  if (src_hnd && dst_hnd) {
    per_lane = sbt == dbt ? runs : runs * heads;
  } else if (!src_hnd && !dst_hnd) {
    per_lane = tokens;
  } else {
    per_lane = tokens * heads;
  }
  return per_lane * source.geometry().layers * kv_parts(source);
}

}  // namespace kvferry::tp
