// The pieces of the TP transfer that need no second process: its wire messages (round
// trips, and garbage refused), the per-sender completion accounting, and the direct
// path's head-slice descriptors checked element by element against the naive reference.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "kv/kv_test_reference.h"
#include "kv/tp/tp_direct_plan.h"
#include "kv/tp/tp_receiver_state.h"
#include "kv/tp/tp_wire.h"

namespace kvferry::tp {
namespace {

TpAsk sample_ask() {
  TpAsk a;
  a.request = "req-7";
  a.path = TpPath::kDirect;
  a.decode_rank = 1;
  a.receiver_instance = 0x1234;
  a.groups = {8, 4, 2, false};
  a.tokens = 100;
  a.share = {3, 1, {6, 2}, 0, 2};
  a.decode_heads = 4;
  a.block_runs = {{5, 3}, {40, 1}};
  return a;
}

TEST(TpWire, MessagesRoundTrip) {
  const TpAsk a = sample_ask();
  auto m = decode_message(as_string(encode(a)));
  ASSERT_TRUE(m && m->ok());
  EXPECT_EQ((*m)->kind, TpMessage::Kind::kAsk);
  EXPECT_EQ((*m)->ask.request, "req-7");
  EXPECT_EQ((*m)->ask.share, a.share);
  EXPECT_EQ((*m)->ask.block_runs, a.block_runs);
  EXPECT_EQ((*m)->ask.receiver_instance, 0x1234u);

  const TpLanded l{"req-7", 3, 99, 16, 32, {6, 2}};
  m = decode_message(as_string(encode(l)));
  ASSERT_TRUE(m && m->ok());
  EXPECT_EQ((*m)->landed.first_token, 16u);
  EXPECT_EQ((*m)->landed.heads, (HeadRange{6, 2}));

  EndpointInfo e{Role::kDecode, {8, 4, 2, false}, 1, 77, 0};
  Result<EndpointInfo> back = decode_endpoint(encode(e));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->instance, 77u);
  EXPECT_EQ(back->rank, 1u);
}

TEST(TpWire, ForeignAndMalformedBytes) {
  EXPECT_FALSE(decode_message("done"));          // not ours: the caller's
  EXPECT_FALSE(decode_message("KVTZ\x01 other"));  // not ours either
  std::string bytes = as_string(encode(sample_ask()));
  for (std::size_t cut = 5; cut < bytes.size(); ++cut) {  // every truncation is refused
    auto m = decode_message(bytes.substr(0, cut));
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->ok()) << cut;
  }
  TpAsk bad = sample_ask();
  bad.decode_rank = 2;  // of decode TP 2
  auto m = decode_message(as_string(encode(bad)));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status().code(), StatusCode::kCorrupt);
  EndpointInfo e{Role::kPrefill, {8, 4, 2, false}, 4, 1, 0};  // rank 4 of TP 4
  EXPECT_EQ(decode_endpoint(encode(e)).status().code(), StatusCode::kCorrupt);
}

TEST(TpWire, BlockRuns) {
  const std::vector<std::uint32_t> blocks{4, 5, 6, 9, 2, 3};
  const auto runs = to_runs(blocks);
  EXPECT_EQ(runs.size(), 3u);
  EXPECT_EQ(from_runs(runs), blocks);
}

// Two prefill ranks that an engine would give the same pipeline rank are two senders.
TEST(TpReceiveProgress, CountsSendersByAgentNotRank) {
  ReceiveProgress p;
  p.add_source("prefill-a", 11, {0, 0, {0, 2}, 0, 0});
  p.add_source("prefill-b", 22, {1, 0, {2, 2}, 0, 2});
  Result<LandedShare> s = p.land("prefill-a", {"r", 0, 11, 0, 64, {0, 2}}, 64);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(p.complete(64));
  EXPECT_NE(p.describe_missing(64).find("'prefill-b' (prefill rank 1, heads [2, 4)): 0 of 64"), std::string::npos)
      << p.describe_missing(64);
  s = p.land("prefill-b", {"r", 1, 22, 32, 32, {2, 2}}, 64);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->destination_head_offset, 2u);
  EXPECT_FALSE(p.complete(64));
  ASSERT_TRUE(p.land("prefill-b", {"r", 1, 22, 0, 32, {2, 2}}, 64).ok());  // chunks in any order
  EXPECT_TRUE(p.complete(64));
}

TEST(TpReceiveProgress, RefusesWhatItDidNotAskFor) {
  ReceiveProgress p;
  p.add_source("prefill-a", 11, {0, 0, {0, 2}, 0, 0});
  EXPECT_EQ(p.land("stranger", {"r", 0, 11, 0, 8, {0, 2}}, 64).status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(p.land("prefill-a", {"r", 0, 99, 0, 8, {0, 2}}, 64).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.land("prefill-a", {"r", 0, 11, 0, 8, {1, 2}}, 64).status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(p.land("prefill-a", {"r", 0, 11, 60, 8, {0, 2}}, 64).status().code(), StatusCode::kCorrupt);
  ASSERT_TRUE(p.land("prefill-a", {"r", 0, 11, 8, 8, {0, 2}}, 64).ok());
  EXPECT_EQ(p.land("prefill-a", {"r", 0, 11, 4, 8, {0, 2}}, 64).status().code(), StatusCode::kCorrupt);   // overlaps
  EXPECT_EQ(p.land("prefill-a", {"r", 0, 11, 15, 2, {0, 2}}, 64).status().code(), StatusCode::kCorrupt);  // overlaps
}

// A host pool filled so that every element's bytes name (layer, kv, token, model head).
struct TestPool {
  TestPool(KvArrangement arrangement, std::uint32_t heads, std::uint32_t block_tokens, std::uint32_t blocks) {
    layout = *KvLayout::create({3, heads, 4, block_tokens, KvDtype::kFp32}, arrangement, blocks);
    memory.assign(layout.pool_bytes(), 0);
    pool = *KvPool::create_contiguous(layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(memory.data()));
  }
  float* element(std::uint32_t layer, std::uint32_t kv, std::uint32_t block, std::uint32_t slot, std::uint32_t head,
                 std::uint32_t dim) {
    const kv_testing::Place p = kv_testing::naive_place(layout, layer, kv, block, slot, head, dim);
    return reinterpret_cast<float*>(memory.data() + p.tensor * layout.tensor_bytes() + p.offset);
  }
  KvLayout layout = *KvLayout::create({1, 1, 1, 1, KvDtype::kFp32}, KvArrangement::kVllmNhd, 1);
  std::vector<std::uint8_t> memory;
  KvPool pool = *KvPool::create_contiguous(layout, MemoryKind::kDram, 0);
};

float value(std::uint32_t layer, std::uint32_t kv, std::uint64_t token, std::uint32_t head, std::uint32_t dim) {
  return static_cast<float>(((layer * 2 + kv) * 1000 + token) * 100 + head * 10 + dim);
}

void check_slices(KvArrangement src_arrangement, std::uint32_t src_bt, KvArrangement dst_arrangement,
                  std::uint32_t dst_bt, SlicePlan plan) {
  // Prefill rank holds model heads [2, 4); the decode rank holds [0, 4): it lands at offset 2.
  constexpr std::uint64_t kTokens = 37;
  TestPool src(src_arrangement, 2, src_bt, 16);
  TestPool dst(dst_arrangement, 4, dst_bt, 16);
  std::vector<std::uint32_t> src_blocks(src.layout.blocks_for_tokens(kTokens)), dst_blocks(dst.layout.blocks_for_tokens(kTokens));
  std::iota(src_blocks.rbegin(), src_blocks.rend(), 3u);  // scattered: descending
  std::iota(dst_blocks.begin(), dst_blocks.end(), 1u);
  for (std::uint32_t l = 0; l < 3; ++l)
    for (std::uint32_t kv = 0; kv < 2; ++kv)
      for (std::uint64_t t = 0; t < kTokens; ++t)
        for (std::uint32_t h = 0; h < 2; ++h)
          for (std::uint32_t d = 0; d < 4; ++d)
            *src.element(l, kv, src_blocks[t / src_bt], t % src_bt, h, d) = value(l, kv, t, 2 + h, d);
  DescriptorPairs pairs(MemoryKind::kDram, 0, MemoryKind::kDram, 0);
  // Chunked: two pieces at their token offsets.
  for (auto [first, n] : {std::pair<std::uint64_t, std::uint64_t>{0, 20}, {20, kTokens - 20}}) {
    ASSERT_TRUE(plan_head_slices({&src.pool, src_blocks, 0}, {&dst.pool, dst_blocks, 2}, 2, first, n, plan, pairs).ok());
  }
  const DescriptorList local = pairs.local(), remote = pairs.remote();
  for (std::size_t i = 0; i < local.size(); ++i) {
    std::memcpy(reinterpret_cast<void*>(remote[i].address), reinterpret_cast<const void*>(local[i].address), local[i].length);
  }
  std::uint64_t checked = 0;
  for (std::uint32_t l = 0; l < 3; ++l)
    for (std::uint32_t kv = 0; kv < 2; ++kv)
      for (std::uint64_t t = 0; t < kTokens; ++t)
        for (std::uint32_t h = 0; h < 4; ++h)
          for (std::uint32_t d = 0; d < 4; ++d) {
            const float want = h >= 2 ? value(l, kv, t, h, d) : 0.0f;
            ASSERT_EQ(*dst.element(l, kv, dst_blocks[t / dst_bt], t % dst_bt, h, d), want)
                << "layer " << l << " kv " << kv << " token " << t << " head " << h << " dim " << d;
            ++checked;
          }
  EXPECT_EQ(checked, 3u * 2 * kTokens * 4 * 4);
  if (plan == SlicePlan::kNaive) {  // no two neighbours continue each other on both sides
    for (std::size_t i = 1; i < local.size(); ++i) {
      EXPECT_FALSE(local[i - 1].end() == local[i].address && remote[i - 1].end() == remote[i].address) << i;
    }
  }
}

TEST(TpHeadSlices, EveryArrangementPairAndBlockSizeLandsEveryElement) {
  const KvArrangement all[] = {KvArrangement::kVllmNhd, KvArrangement::kVllmHnd, KvArrangement::kFlashInfer,
                               KvArrangement::kSglangTokenSlots};
  for (KvArrangement a : all) {
    for (KvArrangement b : all) {
      for (auto [sbt, dbt] : {std::pair<std::uint32_t, std::uint32_t>{16, 16}, {16, 8}, {4, 16}}) {
        SCOPED_TRACE(std::string(to_string(a)) + " -> " + std::string(to_string(b)) + ", block tokens " +
                     std::to_string(sbt) + " -> " + std::to_string(dbt));
        check_slices(a, sbt, b, dbt, SlicePlan::kMerged);
        check_slices(a, sbt, b, dbt, SlicePlan::kNaive);
      }
    }
  }
}

TEST(TpHeadSlices, HndSameBlockSizeIsOneDescriptorPerBlockAndLane) {
  TestPool src(KvArrangement::kVllmHnd, 2, 16, 8);
  TestPool dst(KvArrangement::kVllmHnd, 4, 16, 8);
  const std::vector<std::uint32_t> sb{5, 1, 3, 0}, db{2, 7, 4, 6};
  DescriptorPairs pairs(MemoryKind::kDram, 0, MemoryKind::kDram, 0);
  ASSERT_TRUE(plan_head_slices({&src.pool, sb, 0}, {&dst.pool, db, 2}, 2, 0, 64, SlicePlan::kMerged, pairs).ok());
  EXPECT_EQ(pairs.size(), 4u * 3 * 2);  // blocks x layers x K/V: both heads of a block in one
  EXPECT_EQ(count_merged_slices(src.layout, dst.layout, 2, 64), pairs.size());
}

TEST(TpHeadSlices, RefusesShortTablesAndForeignHeads) {
  TestPool src(KvArrangement::kVllmNhd, 2, 16, 8);
  TestPool dst(KvArrangement::kVllmNhd, 4, 16, 8);
  const std::vector<std::uint32_t> one{0}, two{0, 1};
  DescriptorPairs pairs(MemoryKind::kDram, 0, MemoryKind::kDram, 0);
  EXPECT_EQ(plan_head_slices({&src.pool, one, 0}, {&dst.pool, two, 0}, 2, 0, 20, SlicePlan::kMerged, pairs).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(plan_head_slices({&src.pool, two, 1}, {&dst.pool, two, 0}, 2, 0, 20, SlicePlan::kMerged, pairs).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvferry::tp
