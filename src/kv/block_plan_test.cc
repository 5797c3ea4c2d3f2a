// BlockPlanner: every plan moves exactly the bytes the naive element-by-element
// reference says, for every arrangement, direction, layer range and pool-size pair.
#include "kvferry/kv/block_plan.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <numeric>

#include "kv/kv_test_reference.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry {
namespace {

KvPool pool_of(KvArrangement a, std::uint32_t blocks, std::uint64_t base) {
  Result<KvLayout> layout = KvLayout::create(kv_testing::small_geometry(a), a, blocks);
  EXPECT_TRUE(layout.ok());
  Result<KvPool> pool = KvPool::create_contiguous(*layout, MemoryKind::kDram, base);
  EXPECT_TRUE(pool.ok());
  return *pool;
}

using ByteMap = std::map<std::uint64_t, std::uint64_t>;  // destination byte -> source byte

// What the plan moves, expanded byte by byte from the pools' block descriptors.
ByteMap plan_bytes(const BlockPlan& plan, const KvPool& local, const KvPool& remote) {
  const DescriptorList l = local.block_descriptors();
  const DescriptorList r = remote.block_descriptors();
  ByteMap moved;
  for (std::size_t k = 0; k < plan.pairs(); ++k) {
    const Descriptor& ld = l[plan.local_indices()[k]];
    const Descriptor& rd = r[plan.remote_indices()[k]];
    EXPECT_EQ(ld.length, rd.length);
    for (std::uint64_t i = 0; i < ld.length; ++i) {
      const bool pull = plan.op() == TransferOp::kRead;
      EXPECT_TRUE(
          moved.emplace(pull ? ld.address + i : rd.address + i, pull ? rd.address + i : ld.address + i)
              .second)
          << "a destination byte written twice";
    }
  }
  return moved;
}

ByteMap naive_bytes(TransferOp op, const BlockSelection& s, const KvPool& local, const KvPool& remote) {
  const KvPool& source = op == TransferOp::kRead ? remote : local;
  const KvPool& destination = op == TransferOp::kRead ? local : remote;
  const std::uint32_t layers = source.layout().geometry().layers;
  const std::uint32_t last =
      s.layers.count == LayerRange::kToLastLayer ? layers : s.layers.first + s.layers.count;
  ByteMap moved;
  for (std::uint32_t layer = s.layers.first; layer < last; ++layer) {
    for (std::size_t i = 0; i < s.source_blocks.size(); ++i) {
      const auto from = kv_testing::naive_block_addresses(source, layer, s.source_blocks[i]);
      const auto to = kv_testing::naive_block_addresses(destination, layer, s.destination_blocks[i]);
      for (std::size_t j = 0; j < from.size(); ++j) moved.emplace(to[j], from[j]);
    }
  }
  return moved;
}

class KvBlockPlanArrangement : public ::testing::TestWithParam<KvArrangement> {};

TEST_P(KvBlockPlanArrangement, MovesWhatTheNaiveReferenceMoves) {
  const KvPool local = pool_of(GetParam(), 9, 0x1000000);
  const KvPool remote = pool_of(GetParam(), 6, 0x9000000);
  Result<BlockPlanner> planner = BlockPlanner::create(local.layout(), remote.layout());
  ASSERT_TRUE(planner.ok());
  const std::vector<std::uint32_t> remote_ids = {5, 0, 1, 2, 4};
  const std::vector<std::uint32_t> local_ids = {8, 2, 3, 4, 0};
  const LayerRange ranges[] = {{}, {1, 1}, {1, LayerRange::kToLastLayer}, {0, 2}};
  for (TransferOp op : {TransferOp::kRead, TransferOp::kWrite}) {
    for (const LayerRange& range : ranges) {
      BlockSelection s;
      s.source_blocks = op == TransferOp::kRead ? std::span<const std::uint32_t>(remote_ids) : local_ids;
      s.destination_blocks = op == TransferOp::kRead ? std::span<const std::uint32_t>(local_ids) : remote_ids;
      s.layers = range;
      Result<BlockPlan> plan = planner->plan(op, s);
      ASSERT_TRUE(plan.ok()) << plan.status().to_string();
      EXPECT_EQ(plan->op(), op);
      const ByteMap expected = naive_bytes(op, s, local, remote);
      EXPECT_EQ(plan->bytes(), expected.size());
      ASSERT_EQ(plan_bytes(*plan, local, remote), expected)
          << to_string(op) << " layers " << range.first << "+" << range.count;
      // Ids 0,1,2 <-> 2,3,4 are one run; 5<->8 and 4<->0 stand alone: 3 runs per lane.
      const std::vector<BlockRun> runs(plan->runs().begin(), plan->runs().end());
      ASSERT_EQ(runs.size(), 3u);
      EXPECT_EQ(runs[0].local_first, 8u);  // local blocks are ours in both directions
      EXPECT_EQ(runs[1].count, 3u);
      EXPECT_EQ(runs[1].local_first, 2u);
      EXPECT_EQ(runs[1].remote_first, 0u);
      const std::uint32_t layer_count =
          range.count == LayerRange::kToLastLayer ? 3 - range.first : range.count;
      EXPECT_EQ(plan->merged_descriptors(), 3u * layer_count * local.layout().lanes_per_layer());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KvEveryArrangement, KvBlockPlanArrangement,
                         ::testing::ValuesIn(kv_testing::kAllArrangements));

TEST(KvBlockPlan, RefusesIncompatibleLayouts) {
  const KvPool a = pool_of(KvArrangement::kVllmNhd, 4, 0x1000);
  const KvPool b = pool_of(KvArrangement::kFlashInfer, 4, 0x1000);
  Result<BlockPlanner> planner = BlockPlanner::create(a.layout(), b.layout());
  ASSERT_FALSE(planner.ok());
  EXPECT_NE(planner.status().message().find("layout vllm-nhd vs flashinfer"), std::string::npos);
}

TEST(KvBlockPlan, BadSelectionsNameTheValue) {
  const KvPool local = pool_of(KvArrangement::kVllmNhd, 4, 0x1000000);
  const KvPool remote = pool_of(KvArrangement::kVllmNhd, 8, 0x9000000);
  Result<BlockPlanner> planner = BlockPlanner::create(local.layout(), remote.layout());
  ASSERT_TRUE(planner.ok());
  const std::vector<std::uint32_t> two = {0, 1}, three = {0, 1, 2}, bad_local = {0, 4};
  BlockPlan plan;
  EXPECT_FALSE(planner->plan(TransferOp::kRead, {two, three, {}}, plan).ok());
  Status status = planner->plan(TransferOp::kRead, {two, bad_local, {}}, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("block id 4 at position 1"), std::string::npos) << status.message();
  EXPECT_EQ(plan.pairs(), 0u);  // a failed plan is empty, never half-filled
  EXPECT_TRUE(planner->plan(TransferOp::kRead, {std::vector<std::uint32_t>{7, 6}, two, {}}, plan).ok());
  status = planner->plan(TransferOp::kRead, {two, two, {2, 2}}, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("exceed the model's 3 layers"), std::string::npos) << status.message();
  EXPECT_FALSE(planner->plan(TransferOp::kRead, {two, two, {3, 1}}, plan).ok());
}

TEST(KvBlockPlan, ReplanningAllocatesNothing) {
  const KvPool local = pool_of(KvArrangement::kVllmNhd, 64, 0x1000000);
  const KvPool remote = pool_of(KvArrangement::kVllmNhd, 64, 0x9000000);
  Result<BlockPlanner> planner = BlockPlanner::create(local.layout(), remote.layout());
  ASSERT_TRUE(planner.ok());
  std::vector<std::uint32_t> ids(32);
  std::iota(ids.begin(), ids.end(), 0u);
  BlockPlan plan;
  plan.reserve(32 * local.layout().lane_count());
  const std::uint32_t* data = plan.local_indices().data();
  ASSERT_TRUE(planner->plan(TransferOp::kRead, {ids, ids, {}}, plan).ok());
  const std::uint32_t* first = plan.local_indices().data();
  EXPECT_TRUE(data == nullptr || data == first);
  ASSERT_TRUE(
      planner->plan(TransferOp::kWrite, {std::span(ids).first(10), std::span(ids).last(10), {}}, plan).ok());
  EXPECT_EQ(plan.local_indices().data(), first);
  EXPECT_EQ(plan.pairs(), 10u * local.layout().lane_count());
  EXPECT_EQ(plan.merged_descriptors(), local.layout().lane_count());  // one run per lane
}

// Acceptance: planning a 32,768-token pull (2,048 blocks x 40 layers x K and V =
// 163,840 pairs) costs at most 1 ms. Median of repeated plans into a reused BlockPlan.
TEST(KvBlockPlan, PlansA32kTokenPullWithinOneMillisecond) {
  const KvGeometry mistral{40, 8, 128, 16, KvDtype::kBf16};
  Result<KvLayout> layout = KvLayout::create(mistral, KvArrangement::kVllmNhd, 4096);
  ASSERT_TRUE(layout.ok());
  Result<BlockPlanner> planner = BlockPlanner::create(*layout, *layout);
  ASSERT_TRUE(planner.ok());
  const std::uint32_t blocks = layout->blocks_for_tokens(32768);
  ASSERT_EQ(blocks, 2048u);
  std::vector<std::uint32_t> source(blocks), destination(blocks);
  for (std::uint32_t i = 0; i < blocks; ++i) {  // scattered ids, as a busy engine's
    source[i] = (i * 2654435761u) % 4096;
    destination[i] = (i * 40503u + 17) % 4096;
  }
  BlockPlan plan;
  std::vector<double> micros;
  for (int round = 0; round < 31; ++round) {
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(planner->plan(TransferOp::kRead, {source, destination, {}}, plan).ok());
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  EXPECT_EQ(plan.pairs(), 163840u);
  std::sort(micros.begin(), micros.end());
  const double median = micros[micros.size() / 2];
  std::printf("[ plan cost ] 32,768 tokens, 163,840 pairs: median %.1f us, min %.1f us, max %.1f us\n",
              median, micros.front(), micros.back());
#ifdef NDEBUG
  EXPECT_LT(median, 1000.0);
#endif
}

}  // namespace
}  // namespace kvferry
