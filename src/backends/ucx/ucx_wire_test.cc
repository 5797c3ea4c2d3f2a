// The ucx backend's connection info and hello answer are untrusted input: round trip, and
// every truncation, flip and oversized count is an error, never a crash.
#if __has_include(<ucp/api/ucp.h>)  // built with the ucx backend (cmake/kvferry_ucx.cmake)
#include <gtest/gtest.h>

#include <random>

#include "backends/ucx/ucx_context.h"
#include "backends/ucx/ucx_wire.h"

namespace kvferry::detail::ucx {
namespace {

ConnectionInfo sample() {
  ConnectionInfo info;
  info.flags = kFlagRdma;
  info.address.assign(200, 0x5a);
  return info;
}

std::vector<RegionKey> sample_keys() {
  std::vector<RegionKey> keys;
  for (std::uint64_t i = 0; i < 3; ++i)
    keys.push_back(RegionKey{i + 1, (i + 1) << 30, 1u << 20, std::vector<std::uint8_t>(12, 0x11)});
  return keys;
}

std::vector<std::uint8_t> encode_keys(const std::vector<RegionKey>& keys) {
  ByteWriter w;
  encode_region_keys(w, keys);
  return w.take();
}

Result<std::vector<RegionKey>> decode_keys(std::span<const std::uint8_t> bytes) {
  ByteReader r(bytes);
  return decode_region_keys(r);
}

TEST(UcxWire, RoundTrip) {
  auto bytes = encode_info(sample());
  auto back = decode_info(bytes);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->flags, kFlagRdma);
  EXPECT_EQ(back->address, sample().address);
  auto keys = decode_keys(encode_keys(sample_keys()));
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  ASSERT_EQ(keys->size(), 3u);
  EXPECT_EQ((*keys)[2].id, 3u);
  EXPECT_EQ((*keys)[2].address, 3ull << 30);
  EXPECT_EQ((*keys)[2].rkey, sample_keys()[2].rkey);
}

TEST(UcxWire, RegionKeysTruncatedFlippedOrHugeAreCorrupt) {
  auto bytes = encode_keys(sample_keys());
  for (std::size_t n = 0; n < bytes.size(); ++n)
    ASSERT_EQ(decode_keys(std::span<const std::uint8_t>(bytes.data(), n)).status().code(), StatusCode::kCorrupt) << n;
  auto padded = bytes;
  padded.push_back(0);
  EXPECT_EQ(decode_keys(padded).status().code(), StatusCode::kCorrupt);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    auto m = bytes;
    m[rng() % m.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    auto r = decode_keys(m);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
    }
  }
  auto huge = bytes;
  huge[0] = huge[1] = huge[2] = huge[3] = 0xff;
  EXPECT_EQ(decode_keys(huge).status().code(), StatusCode::kCorrupt);
}

TEST(UcxWire, EveryTruncationAndPaddingIsCorrupt) {
  auto bytes = encode_info(sample());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode_info(std::span<const std::uint8_t>(bytes.data(), n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << n;
  }
  bytes.push_back(0);
  EXPECT_EQ(decode_info(bytes).status().code(), StatusCode::kCorrupt);
}

TEST(UcxWire, FlipsAndHugeCountsNeverCrash) {
  const auto bytes = encode_info(sample());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20000; ++i) {
    auto m = bytes;
    m[rng() % m.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    auto r = decode_info(m);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
    }
  }
  auto long_address = bytes;
  long_address[8] = long_address[9] = long_address[10] = long_address[11] = 0xff;
  EXPECT_EQ(decode_info(long_address).status().code(), StatusCode::kCorrupt);
}

TEST(UcxContext, TransportsFromUcxsPrintout) {
  const std::string printed =
      "#      resource 0  :  md 0  dev 0  flags -- self/memory0\n"
      "#      resource 1  :  md 1  dev 1  flags -- tcp/eth0\n"
      "#      resource 2  :  md 1  dev 2  flags -- tcp/lo\n"
      "#      resource 3  :  md 2  dev 3  flags -- rc_mlx5/mlx5_0:1\n";
  auto t = parse_transports(printed);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[1], "tcp");
  EXPECT_TRUE(is_rdma_transport(t[2]));
  EXPECT_FALSE(is_rdma_transport("tcp"));
  EXPECT_FALSE(is_rdma_transport("cma"));
  EXPECT_TRUE(is_rdma_transport("dc_mlx5"));
  EXPECT_TRUE(is_rdma_transport("ud_verbs"));
}

}  // namespace
}  // namespace kvferry::detail::ucx
#endif
