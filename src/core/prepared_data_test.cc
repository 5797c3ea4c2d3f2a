#include "core/prepared_data.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>

namespace kvferry::detail {
namespace {

// One region per "layer" of `blocks` blocks of `block` bytes starting at `base`.
PreparedData pool(std::uint64_t base, int layers, int blocks, std::uint64_t block, bool local) {
  PreparedData d;
  d.local = local;
  for (int l = 0; l < layers; ++l) {
    d.region_ids.push_back(static_cast<std::uint64_t>(l + 1));
    for (int b = 0; b < blocks; ++b) {
      d.descriptors.push_back(Descriptor{base + (static_cast<std::uint64_t>(l) * blocks + b) * block, block, 0});
      d.region_of.push_back(static_cast<std::uint32_t>(l));
    }
  }
  return d;
}

// Naive reference: expand pieces back to bytes pairs and compare with the pairs asked.
void expect_same_bytes(const MergeResult& m, const PreparedData& l, const std::vector<std::uint32_t>& li,
                       const PreparedData& r, const std::vector<std::uint32_t>& ri) {
  std::size_t k = 0;
  std::uint64_t offset = 0;
  for (const auto& p : m.pieces) {
    for (std::uint64_t off = 0; off < p.length;) {
      ASSERT_LT(k, li.size());
      const auto& ld = l.descriptors[li[k]];
      const auto& rd = r.descriptors[ri[k]];
      ASSERT_EQ(p.local + off, ld.address);
      ASSERT_EQ(p.remote + off, rd.address);
      off += ld.length;
      offset += ld.length;
      ++k;
    }
  }
  EXPECT_EQ(k, li.size());
  EXPECT_EQ(offset, m.total_bytes);
}

TEST(MergeIndexPairs, ContiguousRunsMergeButNeverAcrossRegions) {
  auto l = pool(0x100000, 2, 8, 4096, true);
  auto r = pool(0x900000, 2, 8, 4096, false);
  // Blocks 0..15 on both sides: two layers, contiguous in memory, but two regions.
  std::vector<std::uint32_t> idx(16);
  for (std::uint32_t i = 0; i < 16; ++i) idx[i] = i;
  auto m = merge_index_pairs(l, idx, r, idx);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->pieces.size(), 2u);
  EXPECT_EQ(m->local_region_ids, (std::vector<std::uint64_t>{1, 2}));
  expect_same_bytes(*m, l, idx, r, idx);
}

TEST(MergeIndexPairs, ScatteredMatchesNaiveReference) {
  auto l = pool(0x100000, 4, 64, 4096, true);
  auto r = pool(0x9000000, 4, 64, 4096, false);
  std::mt19937 rng(3);
  for (int iter = 0; iter < 200; ++iter) {
    std::vector<std::uint32_t> li, ri;
    std::uint32_t a = rng() % 200, b = rng() % 200;
    for (int i = 0; i < 50; ++i) {
      if (rng() % 3 == 0) a = rng() % 256, b = rng() % 256;  // jump
      li.push_back(a++ % 256);
      ri.push_back(b++ % 256);
    }
    auto m = merge_index_pairs(l, li, r, ri);
    ASSERT_TRUE(m.ok());
    expect_same_bytes(*m, l, li, r, ri);
  }
}

TEST(MergeIndexPairs, ErrorsNameTheProblem) {
  auto l = pool(0x100000, 1, 4, 4096, true);
  auto r = pool(0x900000, 1, 4, 8192, false);
  std::vector<std::uint32_t> one{0}, two{0, 1}, bad{9};
  EXPECT_EQ(merge_index_pairs(l, one, r, two).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(merge_index_pairs(l, bad, r, one).status().code(), StatusCode::kOutOfRange);
  auto s = merge_index_pairs(l, one, r, one).status();
  EXPECT_NE(s.message().find("local length 4096 but remote length 8192"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvferry::detail
