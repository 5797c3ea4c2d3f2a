// The CPU head gather/scatter against the naive element-by-element reference
// (tp_test_reference.h): every arrangement, block sizes that do and do not divide each
// other, head sub-ranges, token windows (chunked prefill), random data and poisoned
// destinations; then a whole TP hand-off through TpMapping's shares; and the refusals.
#include "kvferry/kv/kv_head_copy.h"

#include <gtest/gtest.h>

#include "kv/tp/tp_test_reference.h"
#include "kvferry/kv/tp_mapping.h"

namespace kvferry {
namespace {

using tp_testing::HostPool;

constexpr std::uint8_t kPoison = 0xA5;
constexpr KvArrangement kHeadArrangements[] = {KvArrangement::kVllmNhd, KvArrangement::kVllmHnd,
                                               KvArrangement::kFlashInfer, KvArrangement::kSglangTokenSlots};

KvGeometry geometry(std::uint32_t heads, std::uint32_t block_tokens, std::uint32_t head_dim = 8,
                    KvDtype dtype = KvDtype::kFp16) {
  KvGeometry g;
  g.layers = 3;
  g.kv_heads = heads;
  g.head_dim = head_dim;
  g.block_tokens = block_tokens;
  g.dtype = dtype;
  return g;
}

// Gather `heads` of `window` from a random pool; compare with the reference, byte for byte,
// including the staging's poisoned tail (never written).
void check_gather(const HostPool& src, const KvTokenWindow& w, HeadRange heads, std::uint32_t threads) {
  const std::uint64_t bytes = KvStagingShape::of(src.pool.layout(), heads.count, w.tokens).bytes();
  std::vector<std::uint8_t> got(bytes + 64, kPoison), want(bytes + 64, kPoison);
  KvHeadCopyOptions o;
  o.threads = threads;
  ASSERT_TRUE(gather_kv_heads(src.pool, w, heads, tp_testing::host_staging(got), o).ok());
  tp_testing::naive_gather(src.pool.layout(), src.bytes.data(), w, heads, want.data());
  ASSERT_EQ(got, want) << src.pool.layout().describe() << " heads [" << heads.first << ", " << heads.end()
                       << ") tokens " << w.first_token << "+" << w.tokens;
}

TEST(KvHeadCopy, GatherMatchesTheReferenceForEveryArrangement) {
  for (KvArrangement a : kv_testing::kAllArrangements)
    for (std::uint32_t bt : {1u, 4u, 6u, 16u})
      for (std::uint32_t dim : {5u, 8u, 128u}) {
        const std::uint32_t heads = a == KvArrangement::kMla ? 1 : 4;
        HostPool src = HostPool::make(geometry(heads, bt, dim), a, 64);
        tp_testing::fill_random(src.bytes, bt * 131 + dim);
        const std::uint32_t tokens = 37;
        auto ids = tp_testing::scattered_blocks(64, (tokens + bt - 1) / bt + 1, bt);
        check_gather(src, {ids, 0, tokens}, {0, heads}, 1);
        if (heads > 1) check_gather(src, {ids, 0, tokens}, {1, 2}, 1);
        check_gather(src, {ids, bt + 1, tokens - bt - 1}, {heads - 1, 1}, 2);  // a window inside
      }
}

TEST(KvHeadCopy, ScatterTouchesExactlyTheSelectedElements) {
  for (KvArrangement a : kv_testing::kAllArrangements)
    for (std::uint32_t bt : {1u, 6u, 16u}) {
      const std::uint32_t heads = a == KvArrangement::kMla ? 1 : 4;
      HostPool dst = HostPool::make(geometry(heads, bt, 8), a, 48);
      std::fill(dst.bytes.begin(), dst.bytes.end(), kPoison);
      std::vector<std::uint8_t> want = dst.bytes;
      const HeadRange range = heads > 1 ? HeadRange{2, 2} : HeadRange{0, 1};
      const std::uint32_t tokens = 29;
      auto ids = tp_testing::scattered_blocks(48, (tokens + bt - 1) / bt, bt + 7);
      const KvTokenWindow w{ids, 0, tokens};
      std::vector<std::uint8_t> staging(KvStagingShape::of(dst.pool.layout(), range.count, tokens).bytes());
      tp_testing::fill_random(staging, bt);
      ASSERT_TRUE(scatter_kv_heads(tp_testing::host_staging(staging), dst.pool, w, range).ok());
      tp_testing::naive_scatter(dst.pool.layout(), staging.data(), w, range, want.data());
      ASSERT_EQ(dst.bytes, want) << dst.pool.layout().describe();
    }
}

// Gather from one arrangement and block size, scatter into another: every pair converts.
TEST(KvHeadCopy, EveryArrangementAndBlockSizePairConverts) {
  const std::pair<std::uint32_t, std::uint32_t> sizes[] = {{16, 32}, {32, 16}, {16, 16},
                                                           {4, 6},   {6, 4},   {1, 16}};
  for (KvArrangement from : kHeadArrangements)
    for (KvArrangement to : kHeadArrangements)
      for (auto [sbt, dbt] : sizes) {
        HostPool src = HostPool::make(geometry(4, sbt), from, 40);
        HostPool dst = HostPool::make(geometry(2, dbt), to, 40);  // a decode rank of half the heads
        tp_testing::fill_random(src.bytes, sbt * 7 + dbt);
        std::fill(dst.bytes.begin(), dst.bytes.end(), kPoison);
        const std::uint32_t tokens = 50;
        auto sids = tp_testing::scattered_blocks(40, (tokens + sbt - 1) / sbt, sbt);
        auto dids = tp_testing::scattered_blocks(40, (tokens + dbt - 1) / dbt, dbt + 1);
        std::vector<std::uint8_t> staging(KvStagingShape::of(src.pool.layout(), 2, tokens).bytes(), kPoison);
        ASSERT_TRUE(
            gather_kv_heads(src.pool, {sids, 0, tokens}, {2, 2}, tp_testing::host_staging(staging)).ok());
        ASSERT_TRUE(
            scatter_kv_heads(tp_testing::host_staging(staging), dst.pool, {dids, 0, tokens}, {0, 2}).ok());
        // Expected: the reference moves element by element from source heads 2-3 to
        // destination heads 0-1; every other destination byte keeps its poison.
        std::vector<std::uint8_t> ref(staging.size()), want(dst.bytes.size(), kPoison);
        tp_testing::naive_gather(src.pool.layout(), src.bytes.data(), {sids, 0, tokens}, {2, 2}, ref.data());
        tp_testing::naive_scatter(dst.pool.layout(), ref.data(), {dids, 0, tokens}, {0, 2}, want.data());
        ASSERT_EQ(dst.bytes, want) << to_string(from) << "/" << sbt << " -> " << to_string(to) << "/" << dbt;
      }
}

// MLA: the one latent converts between block sizes the same way (one part, not K and V).
TEST(KvHeadCopy, MlaLatentConvertsBetweenBlockSizes) {
  for (auto [sbt, dbt] : {std::pair<std::uint32_t, std::uint32_t>{16, 32}, {64, 6}, {1, 16}}) {
    HostPool src = HostPool::make(geometry(1, sbt, 576), KvArrangement::kMla, 30);
    HostPool dst = HostPool::make(geometry(1, dbt, 576), KvArrangement::kMla, 40);
    tp_testing::fill_random(src.bytes, sbt + dbt);
    std::fill(dst.bytes.begin(), dst.bytes.end(), kPoison);
    const std::uint32_t tokens = 29;
    auto sids = tp_testing::scattered_blocks(30, (tokens + sbt - 1) / sbt, 1);
    auto dids = tp_testing::scattered_blocks(40, (tokens + dbt - 1) / dbt, 2);
    const KvStagingShape shape = KvStagingShape::of(src.pool.layout(), 1, tokens);
    EXPECT_EQ(shape.kv, 1u);
    std::vector<std::uint8_t> staging(shape.bytes());
    ASSERT_TRUE(gather_kv_heads(src.pool, {sids, 0, tokens}, {0, 1}, tp_testing::host_staging(staging)).ok());
    ASSERT_TRUE(
        scatter_kv_heads(tp_testing::host_staging(staging), dst.pool, {dids, 0, tokens}, {0, 1}).ok());
    std::vector<std::uint8_t> ref(staging.size()), want(dst.bytes.size(), kPoison);
    tp_testing::naive_gather(src.pool.layout(), src.bytes.data(), {sids, 0, tokens}, {0, 1}, ref.data());
    tp_testing::naive_scatter(dst.pool.layout(), ref.data(), {dids, 0, tokens}, {0, 1}, want.data());
    ASSERT_EQ(dst.bytes, want) << "mla " << sbt << " -> " << dbt;
  }
}

TEST(KvHeadCopy, ChunksLandAtTheirTokenOffsets) {
  HostPool src = HostPool::make(geometry(2, 16), KvArrangement::kVllmNhd, 16);
  HostPool whole = HostPool::make(geometry(2, 6), KvArrangement::kSglangTokenSlots, 24);
  HostPool chunked = HostPool::make(geometry(2, 6), KvArrangement::kSglangTokenSlots, 24);
  tp_testing::fill_random(src.bytes, 3);
  std::fill(whole.bytes.begin(), whole.bytes.end(), kPoison);
  std::fill(chunked.bytes.begin(), chunked.bytes.end(), kPoison);
  const std::uint32_t tokens = 61;
  auto sids = tp_testing::scattered_blocks(16, 4, 5);
  auto dids = tp_testing::scattered_blocks(24, 11, 6);
  auto move = [&](HostPool& dst, std::uint64_t first, std::uint64_t n) {
    std::vector<std::uint8_t> staging(KvStagingShape::of(src.pool.layout(), 2, n).bytes());
    ASSERT_TRUE(gather_kv_heads(src.pool, {sids, first, n}, {0, 2}, tp_testing::host_staging(staging)).ok());
    ASSERT_TRUE(scatter_kv_heads(tp_testing::host_staging(staging), dst.pool, {dids, first, n}, {0, 2}).ok());
  };
  move(whole, 0, tokens);
  // Chunks that start and end mid-block on both sides.
  move(chunked, 0, 17);
  move(chunked, 17, 20);
  move(chunked, 37, tokens - 37);
  EXPECT_EQ(chunked.bytes, whole.bytes);
  std::vector<std::uint8_t> want(whole.bytes.size(), kPoison),
      ref(KvStagingShape::of(src.pool.layout(), 2, tokens).bytes());
  tp_testing::naive_gather(src.pool.layout(), src.bytes.data(), {sids, 0, tokens}, {0, 2}, ref.data());
  tp_testing::naive_scatter(whole.pool.layout(), ref.data(), {dids, 0, tokens}, {0, 2}, want.data());
  EXPECT_EQ(whole.bytes, want);
}

// A whole hand-off: P prefill pools (local heads) -> staging per rank -> each share's one
// contiguous byte range -> decode staging -> decode pools; each decode pool must hold
// exactly its model heads. Covers the destination offsets of every bucket.
void check_handoff(std::uint32_t kv_heads, std::uint32_t P, std::uint32_t D, KvArrangement pa,
                   KvArrangement da) {
  auto m = TpMapping::create(kv_heads, P, D);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const std::uint32_t tokens = 45, blocks = 24;
  // The model's pool (all heads, one layout) is the truth; prefill rank p holds its heads.
  HostPool model = HostPool::make(geometry(kv_heads, 8), KvArrangement::kVllmNhd, blocks);
  tp_testing::fill_random(model.bytes, kv_heads * 100 + P * 10 + D);
  auto mids = tp_testing::scattered_blocks(blocks, 6, 1);
  std::vector<std::vector<std::uint8_t>> prefill_staging(P);
  for (std::uint32_t p = 0; p < P; ++p) {
    const HeadRange held = m->prefill_heads(p);
    HostPool pool = HostPool::make(geometry(held.count, 16), pa, blocks);
    auto pids = tp_testing::scattered_blocks(blocks, 3, p + 2);
    // Fill the prefill pool with its heads of the model (via staging, checked above).
    std::vector<std::uint8_t> st(KvStagingShape::of(pool.pool.layout(), held.count, tokens).bytes());
    ASSERT_TRUE(gather_kv_heads(model.pool, {mids, 0, tokens}, held, tp_testing::host_staging(st)).ok());
    ASSERT_TRUE(
        scatter_kv_heads(tp_testing::host_staging(st), pool.pool, {pids, 0, tokens}, {0, held.count}).ok());
    prefill_staging[p].assign(st.size(), kPoison);
    ASSERT_TRUE(gather_kv_heads(pool.pool, {pids, 0, tokens}, {0, held.count},
                                tp_testing::host_staging(prefill_staging[p]))
                    .ok());
  }
  for (std::uint32_t d = 0; d < D; ++d) {
    const HeadRange mine = m->decode_heads(d);
    HostPool pool = HostPool::make(geometry(mine.count, 4), da, blocks);
    std::fill(pool.bytes.begin(), pool.bytes.end(), kPoison);
    const KvStagingShape shape = KvStagingShape::of(pool.pool.layout(), mine.count, tokens);
    std::vector<std::uint8_t> staging(shape.bytes(), kPoison);
    for (const TpShare& s : m->decode_shares(d)) {  // one contiguous range per share
      std::memcpy(staging.data() + shape.head_offset(s.destination_head_offset),
                  prefill_staging[s.prefill_rank].data() + shape.head_offset(s.source_head_offset),
                  s.heads.count * shape.head_bytes());
    }
    auto dids = tp_testing::scattered_blocks(blocks, 12, d + 9);
    ASSERT_TRUE(
        scatter_kv_heads(tp_testing::host_staging(staging), pool.pool, {dids, 0, tokens}, {0, mine.count})
            .ok());
    std::vector<std::uint8_t> ref(staging.size()), want(pool.bytes.size(), kPoison);
    tp_testing::naive_gather(model.pool.layout(), model.bytes.data(), {mids, 0, tokens}, mine, ref.data());
    tp_testing::naive_scatter(pool.pool.layout(), ref.data(), {dids, 0, tokens}, {0, mine.count},
                              want.data());
    ASSERT_EQ(pool.bytes, want) << m->describe() << " decode rank " << d;
  }
}

TEST(KvHeadCopy, TpHandoffsThroughSharesDeliverEveryDecodeRanksHeads) {
  for (std::uint32_t P : {1u, 2u, 4u, 8u})
    for (std::uint32_t D : {1u, 2u, 4u, 8u})
      check_handoff(8, P, D, KvArrangement::kVllmHnd, KvArrangement::kSglangTokenSlots);
  check_handoff(2, 8, 4, KvArrangement::kFlashInfer, KvArrangement::kVllmNhd);  // replicated both sides
  check_handoff(2, 1, 8, KvArrangement::kVllmNhd, KvArrangement::kVllmHnd);
  check_handoff(6, 2, 3, KvArrangement::kSglangTokenSlots, KvArrangement::kFlashInfer);
  check_handoff(6, 3, 1, KvArrangement::kVllmNhd, KvArrangement::kVllmNhd);
}

TEST(KvHeadCopy, MoreThreadsGiveTheSameBytes) {
  HostPool src = HostPool::make(geometry(8, 16, 128, KvDtype::kBf16), KvArrangement::kVllmNhd, 96);
  tp_testing::fill_random(src.bytes, 11);
  auto ids = tp_testing::scattered_blocks(96, 80, 12);
  for (std::uint32_t threads : {0u, 1u, 2u, 3u, 7u}) check_gather(src, {ids, 5, 1200}, {2, 4}, threads);
}

// Copies of 8 MiB and more write with streaming stores: the same bytes, for token rows
// (vllm-nhd) and a block's adjacent tokens (vllm-hnd), gathered and scattered.
TEST(KvHeadCopy, LargeCopiesStreamTheSameBytes) {
  for (KvArrangement a : {KvArrangement::kVllmNhd, KvArrangement::kVllmHnd}) {
    const KvGeometry g = geometry(8, 16, 128, KvDtype::kBf16);
    HostPool src = HostPool::make(g, a, 160);
    tp_testing::fill_random(src.bytes, 23);
    auto ids = tp_testing::scattered_blocks(160, 130, 17);
    const KvTokenWindow w{ids, 3, 2050};
    const HeadRange heads{2, 4};
    ASSERT_GE(KvStagingShape::of(src.pool.layout(), heads.count, w.tokens).bytes(), 8u << 20);
    check_gather(src, w, heads, 1);
    check_gather(src, w, heads, 2);
    HostPool dst = HostPool::make(g, a, 160);
    std::fill(dst.bytes.begin(), dst.bytes.end(), kPoison);
    std::vector<std::uint8_t> want = dst.bytes;
    std::vector<std::uint8_t> staging(KvStagingShape::of(dst.pool.layout(), heads.count, w.tokens).bytes());
    tp_testing::fill_random(staging, 29);
    ASSERT_TRUE(scatter_kv_heads(tp_testing::host_staging(staging), dst.pool, w, heads).ok());
    tp_testing::naive_scatter(dst.pool.layout(), staging.data(), w, heads, want.data());
    ASSERT_EQ(dst.bytes, want) << dst.pool.layout().describe();
  }
}

TEST(KvHeadCopy, RefusesWhatDoesNotFitNamingIt) {
  HostPool pool = HostPool::make(geometry(4, 16), KvArrangement::kVllmNhd, 8);
  std::vector<std::uint32_t> ids = {3, 1, 7};
  std::vector<std::uint8_t> staging(KvStagingShape::of(pool.pool.layout(), 4, 48).bytes());
  const KvStaging st = tp_testing::host_staging(staging);
  auto message = [](const Status& s) { return s.message(); };
  Status s = gather_kv_heads(pool.pool, {ids, 0, 48}, {2, 3}, st);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(message(s).find("heads [2, 5) lie outside the pool's 4 KV heads"), std::string::npos)
      << message(s);
  s = gather_kv_heads(pool.pool, {ids, 0, 49}, {0, 4}, st);
  EXPECT_NE(message(s).find("need 4 blocks of 16 tokens but the block table has 3"), std::string::npos)
      << message(s);
  std::vector<std::uint32_t> bad = {3, 8, 1};
  s = scatter_kv_heads(st, pool.pool, {bad, 0, 48}, {0, 4});
  EXPECT_NE(message(s).find("block id 8 (entry 1 of the block table) is outside the pool's 8 blocks"),
            std::string::npos)
      << message(s);
  KvStaging small = st;
  small.length -= 1;
  s = gather_kv_heads(pool.pool, {ids, 0, 48}, {0, 4}, small);
  EXPECT_NE(message(s).find("the staging holds"), std::string::npos) << message(s);
  EXPECT_FALSE(gather_kv_heads(pool.pool, {ids, 0, 0}, {0, 4}, st).ok());
  EXPECT_FALSE(gather_kv_heads(pool.pool, {ids, 0, 16}, {0, 0}, st).ok());
  KvStaging vram = st;
  vram.kind = MemoryKind::kVram;
  s = gather_kv_heads(pool.pool, {ids, 0, 48}, {0, 4}, vram);
  EXPECT_NE(message(s).find("staging must be dram"), std::string::npos) << message(s);
  s = enqueue_gather_kv_heads(pool.pool, {ids, 0, 48}, {0, 4}, st, nullptr);
  EXPECT_NE(message(s).find("not vram"), std::string::npos) << message(s);
  // A window past the block table's blocks, from an offset.
  s = gather_kv_heads(pool.pool, {ids, 40, 9}, {0, 1}, st);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  // Valid blocks outside the window are not checked; blocks inside it are.
  std::vector<std::uint32_t> tail_bad = {3, 1, 99};
  EXPECT_TRUE(gather_kv_heads(pool.pool, {tail_bad, 0, 32}, {0, 4}, st).ok());
}

TEST(KvHeadCopy, AVramPoolWithoutAGpuIsAClearError) {
  auto layout = KvLayout::create(geometry(4, 16), KvArrangement::kVllmNhd, 8);
  ASSERT_TRUE(layout.ok());
  auto pool = KvPool::create_contiguous(*layout, MemoryKind::kVram, 1u << 20);
  ASSERT_TRUE(pool.ok());
  std::vector<std::uint32_t> ids = {0};
  std::vector<std::uint8_t> staging(KvStagingShape::of(*layout, 4, 16).bytes());
  Status s = gather_kv_heads(*pool, {ids, 0, 16}, {0, 4}, tp_testing::host_staging(staging));
  ASSERT_FALSE(s.ok());
  KvHeadCopyOptions o;
  o.device_scratch = tp_testing::host_staging(staging);  // dram: refused before any GPU call
  s = gather_kv_heads(*pool, {ids, 0, 16}, {0, 4}, tp_testing::host_staging(staging), o);
  EXPECT_NE(s.message().find("device_scratch must be vram of the pool's GPU 0"), std::string::npos)
      << s.message();
#ifndef KVFERRY_HAVE_CUDA
  s = gather_kv_heads(*pool, {ids, 0, 16}, {0, 4}, tp_testing::host_staging(staging));
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_NE(s.message().find("built with CUDA"), std::string::npos) << s.message();
#endif
}

}  // namespace
}  // namespace kvferry
