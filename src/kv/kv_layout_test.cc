// KvLayout: segment arithmetic of every arrangement against the naive element-by-element
// reference (kv_test_reference.h), sizes of real models, and validation.
#include "kvferry/kv/kv_layout.h"

#include <gtest/gtest.h>

#include <set>

#include "kv/kv_test_reference.h"

namespace kvferry {
namespace {

using kv_testing::kAllArrangements;

KvLayout make(const KvGeometry& g, KvArrangement a, std::uint32_t blocks) {
  Result<KvLayout> layout = KvLayout::create(g, a, blocks);
  EXPECT_TRUE(layout.ok()) << layout.status().to_string();
  return *layout;
}

// The bytes a block's segments cover, as (tensor, offset).
std::vector<std::pair<std::uint32_t, std::uint64_t>> segment_bytes_of_block(const KvLayout& layout,
                                                                            std::uint32_t layer,
                                                                            std::uint32_t b) {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> bytes;
  for (std::uint32_t part = 0; part < layout.lanes_per_layer(); ++part) {
    const std::uint32_t lane = layer * layout.lanes_per_layer() + part;
    EXPECT_EQ(layout.layer_of_lane(lane), layer);
    const std::uint64_t start = layout.segment_offset(lane, b);
    for (std::uint64_t i = 0; i < layout.segment_bytes(); ++i)
      bytes.emplace_back(layout.tensor_of_lane(lane), start + i);
  }
  return bytes;
}

class KvLayoutArrangement : public ::testing::TestWithParam<KvArrangement> {};

TEST_P(KvLayoutArrangement, SegmentsCoverExactlyTheBlocksElements) {
  const KvLayout layout = make(kv_testing::small_geometry(GetParam()), GetParam(), 7);
  for (std::uint32_t layer = 0; layer < layout.geometry().layers; ++layer) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
      auto expected = kv_testing::naive_block_bytes(layout, layer, b);
      auto actual = segment_bytes_of_block(layout, layer, b);
      std::sort(expected.begin(), expected.end());
      std::sort(actual.begin(), actual.end());
      ASSERT_EQ(actual, expected) << to_string(GetParam()) << " layer " << layer << " block " << b;
    }
  }
}

TEST_P(KvLayoutArrangement, BlocksTileEveryTensorOnce) {
  const KvLayout layout = make(kv_testing::small_geometry(GetParam()), GetParam(), 6);
  std::set<std::pair<std::uint32_t, std::uint64_t>> seen;
  std::uint64_t total = 0;
  for (std::uint32_t layer = 0; layer < layout.geometry().layers; ++layer) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
      for (const auto& byte : segment_bytes_of_block(layout, layer, b)) {
        ASSERT_LT(byte.first, layout.tensor_count());
        ASSERT_LT(byte.second, layout.tensor_bytes());
        seen.insert(byte);
        ++total;
      }
    }
  }
  EXPECT_EQ(total, layout.pool_bytes());
  EXPECT_EQ(seen.size(), layout.pool_bytes());  // no byte twice, none missing
}

TEST_P(KvLayoutArrangement, BlockBytesFollowSeed001) {
  const KvGeometry g = kv_testing::small_geometry(GetParam());
  const KvLayout layout = make(g, GetParam(), 6);
  const std::uint64_t factor = GetParam() == KvArrangement::kMla ? 1 : 2;
  EXPECT_EQ(layout.block_bytes(), factor * g.kv_heads * g.head_dim * g.block_tokens * dtype_bytes(g.dtype));
  EXPECT_EQ(layout.segment_bytes() * layout.lanes_per_layer(), layout.block_bytes());
  EXPECT_EQ(layout.descriptor_count(), layout.lane_count() * layout.blocks());
}

INSTANTIATE_TEST_SUITE_P(KvEveryArrangement, KvLayoutArrangement, ::testing::ValuesIn(kAllArrangements),
                         [](const ::testing::TestParamInfo<KvArrangement>& param) {
                           std::string name(to_string(param.param));
                           std::erase(name, '-');
                           return name;
                         });

TEST(KvLayout, MistralSmall31UnderVllmDefaults) {
  const KvGeometry g{40, 8, 128, 16, KvDtype::kBf16};
  const std::uint32_t blocks = static_cast<std::uint32_t>((std::uint64_t{4} << 30) / (64 * 1024) / 40);
  EXPECT_EQ(blocks, 1638u);  // seed 001
  const KvLayout layout = make(g, KvArrangement::kVllmNhd, blocks);
  EXPECT_EQ(layout.block_bytes(), 64u * 1024);
  EXPECT_EQ(layout.tensor_count(), 40u);
  EXPECT_EQ(layout.lane_count(), 80u);
  EXPECT_EQ(layout.segment_bytes(), 32u * 1024);
  EXPECT_EQ(layout.lane_offset(1), std::uint64_t{blocks} * 32 * 1024);  // V follows every K
  EXPECT_EQ(layout.blocks_for_tokens(4096), 256u);
  EXPECT_EQ(layout.blocks_for_tokens(4097), 257u);
  EXPECT_EQ(layout.blocks_for_tokens(256 * 16) * layout.block_bytes_all_layers(), 671088640u);
}

TEST(KvLayout, DeepSeekMlaLatent) {
  const KvLayout layout = make({61, 1, 576, 64, KvDtype::kBf16}, KvArrangement::kMla, 100);
  EXPECT_EQ(layout.block_bytes(), 576u * 64 * 2);
  EXPECT_EQ(layout.lanes_per_layer(), 1u);
}

TEST(KvLayout, SglangHasTwoTensorsPerLayer) {
  const KvLayout layout = make({4, 8, 128, 1, KvDtype::kFp8}, KvArrangement::kSglangTokenSlots, 1000);
  EXPECT_EQ(layout.tensor_count(), 8u);
  EXPECT_EQ(layout.tensor_bytes(), 1000u * 8 * 128);
  EXPECT_EQ(layout.tensor_of_lane(5), 5u);
}

TEST(KvLayout, RejectsBadGeometryNamingTheField) {
  KvGeometry g{40, 8, 128, 16, KvDtype::kBf16};
  g.kv_heads = 0;
  auto zero = KvLayout::create(g, KvArrangement::kVllmNhd, 10);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("kv_heads"), std::string::npos) << zero.status().to_string();
  EXPECT_FALSE(KvLayout::create({40, 8, 128, 16, KvDtype::kBf16}, KvArrangement::kVllmNhd, 0).ok());
  auto mla = KvLayout::create({40, 8, 576, 16, KvDtype::kBf16}, KvArrangement::kMla, 10);
  ASSERT_FALSE(mla.ok());
  EXPECT_NE(mla.status().message().find("kv_heads must be 1"), std::string::npos);
  auto huge =
      KvLayout::create({4000, 1u << 20, 1u << 20, 1u << 20, KvDtype::kFp32}, KvArrangement::kVllmNhd, 10);
  EXPECT_FALSE(huge.ok());
  auto indices = KvLayout::create({1u << 16, 1, 1, 1, KvDtype::kFp8}, KvArrangement::kVllmNhd, 1u << 16);
  ASSERT_FALSE(indices.ok());
  EXPECT_NE(indices.status().message().find("32-bit"), std::string::npos);
  EXPECT_FALSE(KvLayout::create(g, static_cast<KvArrangement>(99), 10).ok());
}

TEST(KvLayout, NamesRoundTrip) {
  for (KvArrangement a : kAllArrangements) {
    KvArrangement parsed{};
    ASSERT_TRUE(parse_kv_arrangement(to_string(a), &parsed));
    EXPECT_EQ(parsed, a);
  }
  for (KvDtype d : {KvDtype::kBf16, KvDtype::kFp16, KvDtype::kFp8, KvDtype::kFp32}) {
    KvDtype parsed{};
    ASSERT_TRUE(parse_kv_dtype(to_string(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  KvDtype dtype{};
  EXPECT_FALSE(parse_kv_dtype("int4", &dtype));
  EXPECT_EQ(dtype_bytes(KvDtype::kFp8), 1u);
  EXPECT_EQ(dtype_bytes(KvDtype::kFp32), 4u);
}

}  // namespace
}  // namespace kvferry
