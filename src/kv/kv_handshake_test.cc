// The handshake: mismatches name every differing field; the pool travels in the
// Agent's metadata and comes back intact.
#include "kvferry/kv/kv_handshake.h"
#include "test_util.h"

#include <gtest/gtest.h>

namespace kvferry {
namespace {

KvLayout layout_of(KvGeometry g, KvArrangement a = KvArrangement::kVllmNhd, std::uint32_t blocks = 100) {
  Result<KvLayout> layout = KvLayout::create(g, a, blocks);
  EXPECT_TRUE(layout.ok()) << layout.status().to_string();
  return *layout;
}

constexpr KvGeometry kMistral{40, 8, 128, 16, KvDtype::kBf16};

TEST(KvHandshake, SameGeometryDifferentPoolSizesAreCompatible) {
  EXPECT_TRUE(check_kv_compatible(layout_of(kMistral, KvArrangement::kVllmNhd, 1638),
                                  layout_of(kMistral, KvArrangement::kVllmNhd, 300))
                  .ok());
}

TEST(KvHandshake, MismatchNamesEveryDifferingField) {
  KvGeometry theirs = kMistral;
  theirs.kv_heads = 4;
  theirs.dtype = KvDtype::kFp16;
  const Status status = check_kv_compatible(layout_of(kMistral), layout_of(theirs), "prefill-0");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      status.message(),
      "kv geometry mismatch with peer 'prefill-0' (ours vs theirs): kv_heads 8 vs 4, dtype bf16 vs fp16, "
      "block_bytes 65536 vs 32768");
}

TEST(KvHandshake, ArrangementAloneIsAMismatch) {
  const Status status = check_kv_compatible(layout_of(kMistral, KvArrangement::kVllmNhd),
                                            layout_of(kMistral, KvArrangement::kVllmHnd));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("layout vllm-nhd vs vllm-hnd"), std::string::npos) << status.message();
  EXPECT_EQ(status.message().find("block_bytes"), std::string::npos);  // same size, not listed
}

TEST(KvHandshake, LayersAndBlockTokensAreNamed) {
  KvGeometry theirs = kMistral;
  theirs.layers = 32;
  theirs.block_tokens = 32;
  const Status status = check_kv_compatible(layout_of(kMistral), layout_of(theirs));
  EXPECT_NE(status.message().find("layers 40 vs 32"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("block_tokens 16 vs 32"), std::string::npos);
}

TEST(KvHandshake, PoolTravelsInMetadata) {
  auto prefill = testing::make_agent("kv-prefill", "loopback");
  auto decode = testing::make_agent("kv-decode", "loopback");
  ASSERT_TRUE(prefill && decode);
  Result<KvPool> pool = KvPool::create_contiguous(layout_of(kMistral, KvArrangement::kFlashInfer, 64),
                                                  MemoryKind::kDram, 0x7f0000000000ull);
  ASSERT_TRUE(pool.ok());
  ASSERT_TRUE(publish_kv_pool(*prefill, *pool).ok());
  Result<std::vector<std::uint8_t>> metadata = prefill->local_metadata();
  ASSERT_TRUE(metadata.ok());
  Result<std::string> peer = decode->load_remote(*metadata);
  ASSERT_TRUE(peer.ok());
  Result<KvPool> theirs = remote_kv_pool(*decode, *peer);
  ASSERT_TRUE(theirs.ok()) << theirs.status().to_string();
  EXPECT_EQ(theirs->tensor_addresses(), pool->tensor_addresses());
  EXPECT_EQ(theirs->layout().arrangement(), KvArrangement::kFlashInfer);

  Result<KvPool> missing = remote_kv_pool(*decode, *peer, "kv.other");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("published no KV pool"), std::string::npos);
  EXPECT_NE(remote_kv_pool(*decode, "nobody").status().message().find("unknown peer"), std::string::npos);
}

}  // namespace
}  // namespace kvferry
