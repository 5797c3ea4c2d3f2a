#include "core/metadata.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>

namespace kvferry::detail {
namespace {

AgentMetadata sample() {
  AgentMetadata md;
  md.name = "prefill-0";
  md.instance = InstanceId{0x0123456789abcdefull, 0xfedcba9876543210ull};
  md.host_id = "boot-1234";
  md.process_id = "42:99";
  md.side_channel = SideChannelAddress{"127.0.0.1", 5555};
  md.backends.push_back({"tcp", {1, 2, 3, 4}});
  md.backends.push_back({"loopback", {9, 9}});
  for (std::uint64_t i = 0; i < 40; ++i)
    md.regions.push_back(RegionInfo{i + 1, MemoryKind::kDram, 0, 0x10000000 + i * 0x100000, 0x100000});
  md.regions.push_back(RegionInfo{100, MemoryKind::kVram, 3, 0x7f0000000000, 1 << 30});
  return md;
}

// Re-seals a mutated body so the checksum passes and the parser itself is exercised.
void reseal(std::vector<std::uint8_t>& blob) {
  if (blob.size() < 20) return;
  std::uint32_t body = static_cast<std::uint32_t>(blob.size() - 20);
  std::memcpy(blob.data() + 8, &body, 4);
  std::uint64_t sum = XXH3_64bits(blob.data() + 20, body);
  std::memcpy(blob.data() + 12, &sum, 8);
}

TEST(Metadata, RoundTrips) {
  auto md = sample();
  auto decoded = decode_metadata(encode_metadata(md));
  ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
  EXPECT_EQ(decoded->name, md.name);
  EXPECT_EQ(decoded->instance, md.instance);
  EXPECT_EQ(decoded->host_id, md.host_id);
  EXPECT_EQ(decoded->process_id, md.process_id);
  ASSERT_TRUE(decoded->side_channel);
  EXPECT_EQ(decoded->side_channel->port, 5555);
  ASSERT_EQ(decoded->backends.size(), 2u);
  EXPECT_EQ(decoded->backends[0].info, (std::vector<std::uint8_t>{1, 2, 3, 4}));
  ASSERT_EQ(decoded->regions.size(), md.regions.size());
  EXPECT_EQ(decoded->regions.back().kind, MemoryKind::kVram);
  EXPECT_EQ(decoded->regions.back().device, 3u);
}

TEST(Metadata, EveryTruncationIsAnError) {
  auto blob = encode_metadata(sample());
  for (std::size_t n = 0; n < blob.size(); ++n) {
    auto r = decode_metadata({blob.data(), n});
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  }
}

TEST(Metadata, EveryFlippedByteIsAnError) {
  auto blob = encode_metadata(sample());
  for (std::size_t i = 0; i < blob.size(); ++i) {
    auto copy = blob;
    copy[i] ^= 0x5a;
    ASSERT_FALSE(decode_metadata(copy).ok()) << i;
  }
}

TEST(Metadata, ForeignAndFutureBlobsAreNamedErrors) {
  auto blob = encode_metadata(sample());
  auto foreign = blob;
  foreign[0] = 'X';
  EXPECT_NE(decode_metadata(foreign).status().message().find("magic"), std::string::npos);
  auto future = blob;
  future[4] = 9;
  EXPECT_NE(decode_metadata(future).status().message().find("version 9"), std::string::npos);
}

TEST(Metadata, UnknownRecordsAndKindsAreSkipped) {
  auto blob = encode_metadata(sample());
  // Append a record with an unknown tag and a region of an unknown memory kind.
  std::vector<std::uint8_t> extra = {0x77, 0x00, 3, 0, 0, 0, 'a', 'b', 'c'};
  std::vector<std::uint8_t> region = {5, 0, 29, 0, 0, 0};
  region.resize(6 + 29, 0);
  region[6 + 8] = 200;   // kind 200
  region[6 + 21] = 1;    // address 1
  region[6 + 29 - 8] = 1;  // length 1
  blob.insert(blob.end(), extra.begin(), extra.end());
  blob.insert(blob.end(), region.begin(), region.end());
  reseal(blob);
  auto r = decode_metadata(blob);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->regions.size(), sample().regions.size());
}

TEST(Metadata, FuzzedBodiesNeverCrash) {
  auto base = encode_metadata(sample());
  std::mt19937_64 rng(7);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    auto blob = base;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      std::size_t pos = 20 + rng() % (blob.size() - 20);
      switch (rng() % 3) {
        case 0: blob[pos] = static_cast<std::uint8_t>(rng()); break;
        case 1: blob.resize(pos); break;
        default: blob.insert(blob.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<std::uint8_t>(rng())); break;
      }
      if (blob.size() <= 21) break;
    }
    reseal(blob);
    auto r = decode_metadata(blob);
    if (r.ok()) {
      ++accepted;
      EXPECT_FALSE(r->name.empty());
      for (const auto& region : r->regions) EXPECT_GE(region.address + region.length, region.address);
    }
  }
  SUCCEED() << accepted << " mutated blobs were still well-formed";
}

TEST(Metadata, RandomGarbageIsRejected) {
  std::mt19937_64 rng(11);
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<std::uint8_t> junk(rng() % 512);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    EXPECT_FALSE(decode_metadata(junk).ok());
  }
}

TEST(Metadata, AgentNamesAreValidated) {
  EXPECT_TRUE(validate_agent_name("decode-3").ok());
  EXPECT_FALSE(validate_agent_name("").ok());
  EXPECT_FALSE(validate_agent_name("has space").ok());
  EXPECT_FALSE(validate_agent_name(std::string(256, 'a')).ok());
}

TEST(Metadata, AnAgentWithoutInstanceIdIsRefused) {
  auto md = sample();
  md.instance = InstanceId{};
  auto r = decode_metadata(encode_metadata(md));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("instance id"), std::string::npos) << r.status().to_string();
}

}  // namespace
}  // namespace kvferry::detail
