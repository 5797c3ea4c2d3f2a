// The lanes x units form of the direct path moves exactly the bytes of the explicit
// head-slice plan, for every arrangement pair that has one, and no other pair gets one.
#include "kv/tp/tp_head_lanes.h"

#include <gtest/gtest.h>

#include <map>

#include "kv/tp/tp_direct_plan.h"

namespace kvferry::tp {
namespace {

constexpr std::uint64_t kRow = 8 * 2;  // head_dim 8, bf16

KvPool pool(KvArrangement arrangement, std::uint32_t heads, std::uint32_t block_tokens, std::uint64_t base) {
  KvGeometry g{3, heads, 8, block_tokens, KvDtype::kBf16};
  if (arrangement == KvArrangement::kMla) g.kv_heads = 1;
  return *KvPool::create_contiguous(*KvLayout::create(g, arrangement, 256), MemoryKind::kDram, base);
}

// Destination row address -> source row address, one entry per head_dim row.
using RowMap = std::map<std::uint64_t, std::uint64_t>;

void add_rows(RowMap& rows, std::uint64_t local, std::uint64_t remote, std::uint64_t length) {
  ASSERT_EQ(length % kRow, 0u);
  for (std::uint64_t o = 0; o < length; o += kRow) {
    ASSERT_TRUE(rows.emplace(remote + o, local + o).second) << "a destination row written twice";
  }
}

RowMap explicit_rows(const KvPool& src, std::span<const std::uint32_t> sblocks, std::uint32_t shead,
                     const KvPool& dst, std::span<const std::uint32_t> dblocks, std::uint32_t dhead,
                     std::uint32_t heads, std::uint64_t first, std::uint64_t tokens) {
  DescriptorPairs pairs(MemoryKind::kDram, 0, MemoryKind::kDram, 0);
  EXPECT_TRUE(plan_head_slices({&src, sblocks, shead}, {&dst, dblocks, dhead}, heads, first, tokens, SlicePlan::kMerged,
                               pairs)
                  .ok());
  RowMap rows;
  const DescriptorList local = pairs.local();
  const DescriptorList remote = pairs.remote();
  for (std::size_t i = 0; i < local.size(); ++i) add_rows(rows, local[i].address, remote[i].address, local[i].length);
  return rows;
}

RowMap lane_rows(LaneUnit unit, const KvPool& src, std::span<const std::uint32_t> sblocks, std::uint32_t shead,
                 const KvPool& dst, std::span<const std::uint32_t> dblocks, std::uint32_t dhead, std::uint32_t heads,
                 std::uint64_t first, std::uint64_t tokens) {
  const BlockLanes l = head_lanes(src, unit, shead, heads);
  const BlockLanes r = head_lanes(dst, unit, dhead, heads);
  EXPECT_EQ(l.block_bytes, r.block_bytes);
  EXPECT_EQ(l.lane_addresses.size(), r.lane_addresses.size());
  std::vector<std::uint32_t> lu, ru;
  unit_ids(unit, src.layout(), sblocks, first, tokens, lu);
  unit_ids(unit, dst.layout(), dblocks, first, tokens, ru);
  EXPECT_EQ(lu.size(), ru.size());
  RowMap rows;
  for (std::size_t lane = 0; lane < l.lane_addresses.size(); ++lane) {
    for (std::size_t i = 0; i < lu.size(); ++i) {
      EXPECT_LT(lu[i], l.blocks);
      EXPECT_LT(ru[i], r.blocks);
      add_rows(rows, l.lane_addresses[lane] + lu[i] * l.block_stride, r.lane_addresses[lane] + ru[i] * r.block_stride,
               l.block_bytes);
    }
  }
  return rows;
}

struct Pair {
  KvArrangement src, dst;
  std::uint32_t src_bt, dst_bt;
  LaneUnit unit;
};

TEST(TpHeadLanes, SameBytesAsTheExplicitPlan) {
  const Pair pairs[] = {
      {KvArrangement::kVllmHnd, KvArrangement::kVllmHnd, 16, 16, LaneUnit::kBlock},
      {KvArrangement::kVllmNhd, KvArrangement::kVllmNhd, 16, 16, LaneUnit::kToken},
      {KvArrangement::kVllmNhd, KvArrangement::kVllmNhd, 16, 32, LaneUnit::kToken},
      {KvArrangement::kVllmNhd, KvArrangement::kSglangTokenSlots, 16, 1, LaneUnit::kToken},
      {KvArrangement::kSglangTokenSlots, KvArrangement::kVllmNhd, 4, 16, LaneUnit::kToken},
      {KvArrangement::kMla, KvArrangement::kMla, 16, 8, LaneUnit::kToken},
  };
  // Scattered block tables of distinct ids, long enough for 128 tokens of 1-token blocks.
  std::vector<std::uint32_t> sblocks, dblocks;
  for (std::uint32_t i = 0; i < 200; ++i) {
    sblocks.push_back((i * 7 + 3) % 251);
    dblocks.push_back((i * 11 + 5) % 251);
  }
  for (const Pair& p : pairs) {
    const bool mla = p.src == KvArrangement::kMla;
    // Prefill rank of 4 heads, decode rank of 8: heads [1, 3) of the source land at
    // [5, 7) of the destination (mla: the one latent).
    const KvPool src = pool(p.src, 4, p.src_bt, 1ull << 32);
    const KvPool dst = pool(p.dst, 8, p.dst_bt, 1ull << 40);
    const std::uint32_t shead = mla ? 0 : 1, dhead = mla ? 0 : 5, heads = mla ? 1 : 2;
    ASSERT_EQ(head_lane_unit(src, dst), p.unit) << to_string(p.src) << " -> " << to_string(p.dst);
    const std::uint32_t bt = unit_tokens(p.unit, src.layout());
    for (const auto& [first, tokens] : {std::pair<std::uint64_t, std::uint64_t>{0, 64}, {32, 96}, {16, 16}, {5, 27}}) {
      if (!lanes_cover(p.unit, src.layout(), first, tokens)) {
        EXPECT_TRUE(bt > 1 && (first % bt != 0 || (first + tokens) % bt != 0));
        continue;
      }
      const RowMap want = explicit_rows(src, sblocks, shead, dst, dblocks, dhead, heads, first, tokens);
      const RowMap got = lane_rows(p.unit, src, sblocks, shead, dst, dblocks, dhead, heads, first, tokens);
      EXPECT_EQ(got.size(), want.size());
      EXPECT_TRUE(got == want) << to_string(p.src) << " -> " << to_string(p.dst) << " tokens [" << first << ", +"
                               << tokens << ")";
    }
  }
}

TEST(TpHeadLanes, PairsWithoutAStridedFormKeepTheExplicitPlan) {
  EXPECT_EQ(head_lane_unit(pool(KvArrangement::kVllmHnd, 4, 16, 0).layout(), pool(KvArrangement::kVllmHnd, 8, 32, 0).layout()),
            LaneUnit::kNone);
  EXPECT_EQ(head_lane_unit(pool(KvArrangement::kVllmHnd, 4, 16, 0).layout(), pool(KvArrangement::kVllmNhd, 8, 16, 0).layout()),
            LaneUnit::kNone);
  EXPECT_EQ(head_lane_unit(pool(KvArrangement::kFlashInfer, 4, 16, 0).layout(),
                           pool(KvArrangement::kFlashInfer, 8, 16, 0).layout()),
            LaneUnit::kNone);
  // GPU pools keep their copy-engine plan.
  const KvLayout layout = pool(KvArrangement::kVllmHnd, 4, 16, 0).layout();
  const KvPool vram = *KvPool::create_contiguous(layout, MemoryKind::kVram, 1u << 20);
  EXPECT_EQ(head_lane_unit(vram, pool(KvArrangement::kVllmHnd, 4, 16, 1ull << 32)), LaneUnit::kNone);
  // Block units cover whole blocks only; token units any range.
  EXPECT_TRUE(lanes_cover(LaneUnit::kBlock, layout, 32, 48));
  EXPECT_FALSE(lanes_cover(LaneUnit::kBlock, layout, 32, 40));
  EXPECT_FALSE(lanes_cover(LaneUnit::kBlock, layout, 8, 8));
  EXPECT_TRUE(lanes_cover(LaneUnit::kToken, layout, 5, 3));
}

TEST(TpHeadLanes, SortByLocalKeepsEveryPairAndAscends) {
  // A piece of scattered blocks: local ids in the block table's order, remote ids another.
  std::vector<std::uint32_t> local{90, 17, 18, 3, 250, 4, 91};
  std::vector<std::uint32_t> remote{7, 0, 1, 200, 9, 201, 8};
  std::map<std::uint32_t, std::uint32_t> pairs;
  for (std::size_t i = 0; i < local.size(); ++i) pairs[local[i]] = remote[i];
  sort_by_local(local, remote);
  EXPECT_EQ(local, (std::vector<std::uint32_t>{3, 4, 17, 18, 90, 91, 250}));
  ASSERT_EQ(remote.size(), local.size());
  for (std::size_t i = 0; i < local.size(); ++i) EXPECT_EQ(remote[i], pairs.at(local[i])) << local[i];
  // Already ascending (token units of one block, a table in order): left as it is.
  std::vector<std::uint32_t> in_order{5, 6, 7}, theirs{9, 3, 1};
  sort_by_local(in_order, theirs);
  EXPECT_EQ(theirs, (std::vector<std::uint32_t>{9, 3, 1}));
  std::vector<std::uint32_t> none, none_remote;
  sort_by_local(none, none_remote);
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace kvferry::tp
