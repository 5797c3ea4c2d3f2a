#include "kvferry/kv/tp_mapping.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

namespace kvferry {
namespace {

// Checks every property of the contract on one mapping, independent of how it was built:
// ownership by the formula, each decode head covered exactly once from a rank holding it,
// offsets relative to each rank's own first head, merged shares, the prefill view equal to
// the decode view, and replicas loaded evenly.
void check_mapping(const TpMapping& m) {
  SCOPED_TRACE(m.describe());
  const std::uint32_t H = m.kv_heads(), P = m.prefill_tp(), D = m.decode_tp();
  auto owner_heads = [&](std::uint32_t tp, std::uint32_t r) {
    return H >= tp ? HeadRange{r * (H / tp), H / tp} : HeadRange{r * H / tp, 1};
  };
  std::vector<TpShare> all;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> reads;  // (head, prefill rank) -> readers
  for (std::uint32_t d = 0; d < D; ++d) {
    const HeadRange mine = m.decode_heads(d);
    EXPECT_EQ(mine, owner_heads(D, d));
    std::uint32_t next = mine.first;
    const TpShare* previous = nullptr;
    for (const TpShare& s : m.decode_shares(d)) {
      EXPECT_EQ(s.decode_rank, d);
      ASSERT_LT(s.prefill_rank, P);
      ASSERT_GT(s.heads.count, 0u);
      EXPECT_EQ(s.heads.first, next) << "a head missing or read twice";
      next = s.heads.end();
      const HeadRange theirs = m.prefill_heads(s.prefill_rank);
      EXPECT_EQ(theirs, owner_heads(P, s.prefill_rank));
      EXPECT_GE(s.heads.first, theirs.first);
      EXPECT_LE(s.heads.end(), theirs.end());
      EXPECT_EQ(s.source_head_offset, s.heads.first - theirs.first);
      EXPECT_EQ(s.destination_head_offset, s.heads.first - mine.first);
      if (previous) {
        EXPECT_FALSE(previous->prefill_rank == s.prefill_rank) << "adjacent shares not merged";
      }
      previous = &s;
      for (std::uint32_t h = s.heads.first; h < s.heads.end(); ++h) ++reads[{h, s.prefill_rank}];
      all.push_back(s);
    }
    EXPECT_EQ(next, mine.end()) << "decode rank " << d << " misses heads";
    auto sources = m.sources_of(d);
    EXPECT_TRUE(std::is_sorted(sources.begin(), sources.end()));
    EXPECT_EQ(std::adjacent_find(sources.begin(), sources.end()), sources.end());
  }
  EXPECT_EQ(std::vector<TpShare>(m.shares().begin(), m.shares().end()), all);
  std::vector<TpShare> by_prefill;
  for (std::uint32_t p = 0; p < P; ++p)
    for (const TpShare& s : m.prefill_shares(p)) {
      EXPECT_EQ(s.prefill_rank, p);
      by_prefill.push_back(s);
    }
  auto order = [](const TpShare& a, const TpShare& b) {
    return std::tie(a.prefill_rank, a.decode_rank, a.heads.first) <
           std::tie(b.prefill_rank, b.decode_rank, b.heads.first);
  };
  EXPECT_TRUE(std::is_sorted(by_prefill.begin(), by_prefill.end(), order));
  std::sort(all.begin(), all.end(), order);
  EXPECT_EQ(by_prefill, all);
  // Replicas of a head: the readers of h spread over its replicas within one of each other.
  for (std::uint32_t h = 0; h < H; ++h) {
    std::vector<std::uint32_t> load;
    for (std::uint32_t p = 0; p < P; ++p)
      if (m.prefill_heads(p).first <= h && h < m.prefill_heads(p).end()) load.push_back(reads[{h, p}]);
    const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
    EXPECT_LE(*hi - *lo, 1u) << "head " << h << " replicas unevenly read";
  }
}

TEST(TpMapping, EveryPowerOfTwoPairWithEightHeads) {
  for (std::uint32_t p : {1u, 2u, 4u, 8u})
    for (std::uint32_t d : {1u, 2u, 4u, 8u}) {
      auto m = TpMapping::create(8, p, d);
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      check_mapping(*m);
      for (std::uint32_t r = 0; r < d; ++r) EXPECT_EQ(m->decode_shares(r).size(), p > d ? p / d : 1u);
    }
}

TEST(TpMapping, FourToTwoOffsetsAreRelativeToTheDecodeBucket) {
  auto m = TpMapping::create(8, 4, 2);
  ASSERT_TRUE(m.ok());
  const std::vector<TpShare> d1(m->decode_shares(1).begin(), m->decode_shares(1).end());
  // Decode rank 1 holds heads [4, 8): prefill 2 -> local heads 0-1, prefill 3 -> 2-3.
  EXPECT_EQ(d1, (std::vector<TpShare>{{2, 1, {4, 2}, 0, 0}, {3, 1, {6, 2}, 0, 2}}));
  EXPECT_EQ(m->sources_of(1), (std::vector<std::uint32_t>{2, 3}));
}

TEST(TpMapping, TwoToFourReadsTheRightHalfOfEachPrefillRank) {
  auto m = TpMapping::create(8, 2, 4);
  ASSERT_TRUE(m.ok());
  // Decode rank 3 holds heads [6, 8): the upper half of prefill rank 1's [4, 8).
  EXPECT_EQ(std::vector<TpShare>(m->decode_shares(3).begin(), m->decode_shares(3).end()),
            (std::vector<TpShare>{{1, 3, {6, 2}, 2, 0}}));
  const auto p1 = m->prefill_shares(1);
  ASSERT_EQ(p1.size(), 2u);
  EXPECT_EQ(p1[0].decode_rank, 2u);
  EXPECT_EQ(p1[1].decode_rank, 3u);
}

TEST(TpMapping, TwoHeadsReplicatedUpToTpEight) {
  for (std::uint32_t p : {1u, 2u, 4u, 8u})
    for (std::uint32_t d : {1u, 2u, 4u, 8u}) {
      auto m = TpMapping::create(2, p, d);
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      check_mapping(*m);
    }
  // 2 -> 8: prefill rank 0 holds head 0 for decode ranks 0-3; 8 -> 4: decode rank 1
  // (second reader of head 0) reads replica 1, prefill rank 1.
  auto up = TpMapping::create(2, 2, 8);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->prefill_shares(0).size(), 4u);
  EXPECT_EQ(up->decode_heads(5), (HeadRange{1, 1}));
  auto down = TpMapping::create(2, 8, 4);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->decode_shares(1)[0].prefill_rank, 1u);
  EXPECT_EQ(down->decode_shares(2)[0].prefill_rank, 4u);
  EXPECT_EQ(down->decode_shares(3)[0].prefill_rank, 5u);
  EXPECT_TRUE(down->prefill_shares(2).empty());  // replicas 2, 3 of head 0 are not needed
  // 8 -> 8 with 2 heads: each decode rank reads its own replica index.
  auto same = TpMapping::create(2, 8, 8);
  ASSERT_TRUE(same.ok());
  for (std::uint32_t d = 0; d < 8; ++d) EXPECT_EQ(same->decode_shares(d)[0].prefill_rank, d);
}

TEST(TpMapping, SixHeadsOverThreeAndTwo) {
  auto a = TpMapping::create(6, 3, 1);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  check_mapping(*a);
  EXPECT_EQ(std::vector<TpShare>(a->decode_shares(0).begin(), a->decode_shares(0).end()),
            (std::vector<TpShare>{{0, 0, {0, 2}, 0, 0}, {1, 0, {2, 2}, 0, 2}, {2, 0, {4, 2}, 0, 4}}));
  auto b = TpMapping::create(6, 2, 3);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  check_mapping(*b);
  // Decode rank 1 holds [2, 4): head 2 is prefill 0's third, head 3 is prefill 1's first.
  EXPECT_EQ(std::vector<TpShare>(b->decode_shares(1).begin(), b->decode_shares(1).end()),
            (std::vector<TpShare>{{0, 1, {2, 1}, 2, 0}, {1, 1, {3, 1}, 0, 1}}));
}

TEST(TpMapping, MlaTakesTheLatentFromOneRankSpread) {
  for (std::uint32_t p : {1u, 2u, 3u, 4u, 8u})
    for (std::uint32_t d : {1u, 2u, 3u, 4u, 8u}) {
      auto m = TpMapping::create(1, p, d, /*mla=*/true);
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      check_mapping(*m);
      for (std::uint32_t r = 0; r < d; ++r) {
        ASSERT_EQ(m->decode_shares(r).size(), 1u);
        EXPECT_EQ(m->decode_shares(r)[0].prefill_rank, r % p);
        EXPECT_EQ(m->decode_shares(r)[0].heads, (HeadRange{0, 1}));
      }
    }
}

TEST(TpMapping, RefusesWhatCannotBeSplitNamingTheNumbers) {
  auto a = TpMapping::create(6, 4, 1);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("6 KV heads cannot be split over TP 4"), std::string::npos)
      << a.status().message();
  auto b = TpMapping::create(2, 1, 3);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("decode"), std::string::npos);
  EXPECT_NE(b.status().message().find("TP 3: 3 is not a multiple of 2"), std::string::npos)
      << b.status().message();
  EXPECT_FALSE(TpMapping::create(0, 1, 1).ok());
  EXPECT_FALSE(TpMapping::create(8, 0, 1).ok());
  EXPECT_FALSE(TpMapping::create(8, 1, 0).ok());
  auto mla = TpMapping::create(8, 2, 2, /*mla=*/true);
  ASSERT_FALSE(mla.ok());
  EXPECT_NE(mla.status().message().find("kv_heads must be 1 (got 8)"), std::string::npos);
  EXPECT_FALSE(tp_rank_heads(8, 4, 4).ok());
  EXPECT_EQ(tp_rank_heads(8, 4, 3).value(), (HeadRange{6, 2}));
  EXPECT_EQ(tp_rank_heads(2, 8, 5).value(), (HeadRange{1, 1}));
}

TEST(TpMapping, OutOfRangeRanksGiveEmptyAnswers) {
  auto m = TpMapping::create(8, 2, 4);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->decode_shares(4).empty());
  EXPECT_TRUE(m->prefill_shares(2).empty());
  EXPECT_TRUE(m->prefill_heads(2).empty());
  EXPECT_TRUE(m->decode_heads(9).empty());
  EXPECT_TRUE(m->sources_of(4).empty());
}

}  // namespace
}  // namespace kvferry
