// KvPool: descriptors against the naive reference, and the "kv.pool" encoding as
// untrusted input (round trip, every truncation, bit flips, foreign versions).
#include "kvferry/kv/kv_pool.h"

#include <gtest/gtest.h>

#include <random>

#include "kv/kv_test_reference.h"

namespace kvferry {
namespace {

KvPool make_pool(KvArrangement a, std::uint32_t blocks = 6, std::uint64_t base = 0x10000000) {
  Result<KvLayout> layout = KvLayout::create(kv_testing::small_geometry(a), a, blocks);
  EXPECT_TRUE(layout.ok());
  // Tensors spread out (and not in address order) so a wrong tensor index shows.
  std::vector<std::uint64_t> addresses;
  for (std::uint32_t t = 0; t < layout->tensor_count(); ++t)
    addresses.push_back(base + (layout->tensor_count() - t) * 0x100000ull);
  Result<KvPool> pool = KvPool::create(*layout, MemoryKind::kDram, addresses, 3);
  EXPECT_TRUE(pool.ok()) << pool.status().to_string();
  return *pool;
}

class KvPoolArrangement : public ::testing::TestWithParam<KvArrangement> {};

TEST_P(KvPoolArrangement, BlockDescriptorsCoverTheNaiveAddresses) {
  const KvPool pool = make_pool(GetParam());
  const KvLayout& layout = pool.layout();
  const DescriptorList list = pool.block_descriptors();
  ASSERT_EQ(list.size(), layout.descriptor_count());
  for (std::uint32_t layer = 0; layer < layout.geometry().layers; ++layer) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
      std::vector<std::uint64_t> covered;
      for (std::uint32_t part = 0; part < layout.lanes_per_layer(); ++part) {
        const Descriptor& d = list[layout.descriptor_index(layer * layout.lanes_per_layer() + part, b)];
        EXPECT_EQ(d.device, 3u);
        for (std::uint64_t i = 0; i < d.length; ++i) covered.push_back(d.address + i);
      }
      auto expected = kv_testing::naive_block_addresses(pool, layer, b);
      std::sort(expected.begin(), expected.end());
      std::sort(covered.begin(), covered.end());
      ASSERT_EQ(covered, expected) << "layer " << layer << " block " << b;
    }
  }
}

TEST_P(KvPoolArrangement, EncodingRoundTrips) {
  const KvPool pool = make_pool(GetParam());
  Result<KvPool> back = KvPool::decode(pool.encode());
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->layout().geometry(), pool.layout().geometry());
  EXPECT_EQ(back->layout().arrangement(), pool.layout().arrangement());
  EXPECT_EQ(back->layout().blocks(), pool.layout().blocks());
  EXPECT_EQ(back->tensor_addresses(), pool.tensor_addresses());
  EXPECT_EQ(back->device(), 3u);
  EXPECT_EQ(back->kind(), MemoryKind::kDram);
}

INSTANTIATE_TEST_SUITE_P(KvEveryArrangement, KvPoolArrangement,
                         ::testing::ValuesIn(kv_testing::kAllArrangements));

TEST(KvPool, TensorRegionsAreOnePerTensor) {
  const KvPool pool = make_pool(KvArrangement::kSglangTokenSlots);
  const DescriptorList regions = pool.tensor_regions();
  ASSERT_EQ(regions.size(), pool.layout().tensor_count());
  for (std::size_t t = 0; t < regions.size(); ++t) {
    EXPECT_EQ(regions[t].address, pool.tensor_addresses()[t]);
    EXPECT_EQ(regions[t].length, pool.layout().tensor_bytes());
  }
}

TEST(KvPool, RejectsWrongCountAndOverlap) {
  Result<KvLayout> layout =
      KvLayout::create(kv_testing::small_geometry(KvArrangement::kVllmNhd), KvArrangement::kVllmNhd, 6);
  ASSERT_TRUE(layout.ok());
  EXPECT_FALSE(KvPool::create(*layout, MemoryKind::kDram, {0x1000, 0x900000}).ok());
  const std::uint64_t bytes = layout->tensor_bytes();
  auto overlap = KvPool::create(*layout, MemoryKind::kDram, {0x100000, 0x100000 + bytes - 1, 0x900000});
  ASSERT_FALSE(overlap.ok());
  EXPECT_NE(overlap.status().message().find("overlap"), std::string::npos);
  EXPECT_TRUE(KvPool::create(*layout, MemoryKind::kDram, {0x100000, 0x100000 + bytes, 0x900000}).ok());
  EXPECT_FALSE(KvPool::create(*layout, MemoryKind::kDram, {0x100000, ~0ull - 10, 0x900000}).ok());
  auto contiguous = KvPool::create_contiguous(*layout, MemoryKind::kDram, 0x4000);
  ASSERT_TRUE(contiguous.ok());
  EXPECT_EQ(contiguous->tensor_addresses()[2], 0x4000 + 2 * bytes);
}

TEST(KvPool, EveryTruncationIsAnErrorNotACrash) {
  const std::vector<std::uint8_t> bytes = make_pool(KvArrangement::kVllmNhd).encode();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    Result<KvPool> pool = KvPool::decode(std::span(bytes.data(), n));
    ASSERT_FALSE(pool.ok()) << "length " << n;
    EXPECT_EQ(pool.status().code(), StatusCode::kCorrupt);
  }
  std::vector<std::uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(KvPool::decode(longer).ok());
}

TEST(KvPool, BitFlipsNeverCrash) {
  const std::vector<std::uint8_t> bytes = make_pool(KvArrangement::kFlashInfer).encode();
  std::mt19937_64 rng(7);
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::uint8_t> mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      mutated[rng() % mutated.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    Result<KvPool> pool = KvPool::decode(mutated);
    if (pool.ok()) {
      ++accepted;  // a flip inside a value can be valid; it must then be self-consistent
      EXPECT_EQ(pool->tensor_addresses().size(), pool->layout().tensor_count());
    }
  }
  EXPECT_LT(accepted, 20000);
}

TEST(KvPool, ForeignVersionSaysSo) {
  std::vector<std::uint8_t> bytes = make_pool(KvArrangement::kMla).encode();
  bytes[4] = 2;
  Result<KvPool> pool = KvPool::decode(bytes);
  ASSERT_FALSE(pool.ok());
  EXPECT_NE(pool.status().message().find("version 2"), std::string::npos) << pool.status().to_string();
  const std::vector<std::uint8_t> garbage(64, 0x5A);
  EXPECT_NE(KvPool::decode(garbage).status().message().find("magic"), std::string::npos);
}

}  // namespace
}  // namespace kvferry
