#include "cluster/base64.h"

#include <gtest/gtest.h>

#include <random>

#include "cluster/metadata_service.h"

namespace kvferry::detail {
namespace {

TEST(Base64, KnownVectorsAndRoundTrip) {
  EXPECT_EQ(base64_encode(std::string_view("")), "");
  EXPECT_EQ(base64_encode(std::string_view("f")), "Zg==");
  EXPECT_EQ(base64_encode(std::string_view("fo")), "Zm8=");
  EXPECT_EQ(base64_encode(std::string_view("foo")), "Zm9v");
  EXPECT_EQ(base64_encode(std::string_view("foobar")), "Zm9vYmFy");
  std::mt19937 rng(5);
  for (std::size_t n = 0; n < 64; ++n) {
    std::vector<std::uint8_t> bytes(n);
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    auto back = base64_decode(base64_encode(bytes));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, bytes);
  }
}

TEST(Base64, RejectsMalformedInput) {
  for (const char* bad : {"Zg=", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg==", "Zm 9"}) {
    EXPECT_EQ(base64_decode(bad).status().code(), StatusCode::kCorrupt) << bad;
  }
}

TEST(MetadataServiceUrl, ParsesAndRejectsWithReasons) {
  auto u = parse_metadata_service_url("etcd://127.0.0.1:2379/kvferry/prod/");
  ASSERT_TRUE(u.ok()) << u.status().to_string();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 2379);
  EXPECT_EQ(u->name_space, "kvferry/prod");
  EXPECT_EQ(u->agents_prefix(), "kvferry/prod/agents/");
  auto v6 = parse_metadata_service_url("etcd://[::1]:2379/x");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  for (const char* bad : {"http://h:1/x", "etcd://h:1", "etcd://h:1/", "etcd://h/x", "etcd://h:0/x",
                          "etcd://h:70000/x", "etcd://:1/x", "etcd://h:1/a b"}) {
    EXPECT_EQ(parse_metadata_service_url(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace kvferry::detail
