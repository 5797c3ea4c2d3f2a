// The additions to metadata version 1 (revision, region names) in both directions: blobs
// of the original layout decode unchanged, and new records are optional records an
// original reader skips.
#include <gtest/gtest.h>
#include <xxhash.h>

#include "core/byte_io.h"
#include "core/metadata.h"

namespace kvferry::detail {
namespace {

// A blob as the version-1 encoder wrote it before revisions and region names (tags 1..8),
// built by hand.
std::vector<std::uint8_t> original_blob(const std::vector<std::pair<std::uint16_t, ByteWriter>>& records) {
  ByteWriter body;
  for (const auto& [tag, value] : records) {
    body.u16(tag);
    body.u32(static_cast<std::uint32_t>(value.size()));
    body.raw(const_cast<ByteWriter&>(value).buffer().data(), value.size());
  }
  ByteWriter out;
  out.raw("KVFM", 4);
  out.u16(1);
  out.u16(0);
  out.u32(static_cast<std::uint32_t>(body.size()));
  out.u64(XXH3_64bits(body.buffer().data(), body.size()));
  out.bytes(body.buffer());
  return out.take();
}

ByteWriter text(std::string_view s) {
  ByteWriter w;
  w.str(s);
  return w;
}

ByteWriter instance() {
  ByteWriter w;
  w.u64(0x1234);
  w.u64(0x5678);
  return w;
}

TEST(MetadataRevision, OriginalLayoutDecodesWithoutRevisionOrNames) {
  ByteWriter region;
  region.u64(7);
  region.u8(static_cast<std::uint8_t>(MemoryKind::kDram));
  region.u32(0);
  region.u64(0x1000);
  region.u64(0x2000);
  auto blob = original_blob({{1, text("old-peer")}, {8, instance()}, {2, text("boot")}, {3, text("1:2")}, {5, region}});
  auto md = decode_metadata(blob);
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  EXPECT_EQ(md->name, "old-peer");
  EXPECT_EQ(md->revision, 0u);
  EXPECT_TRUE(md->region_names.empty());
  ASSERT_EQ(md->regions.size(), 1u);
  EXPECT_EQ(md->regions[0].address, 0x1000u);
}

TEST(MetadataRevision, NewRecordsRoundTripAndAreSkippableRecords) {
  AgentMetadata md;
  md.name = "new-peer";
  md.host_id = "boot";
  md.process_id = "1:2";
  md.instance.hi = 1;
  md.instance.lo = 2;
  md.revision = 42;
  md.regions.push_back(RegionInfo{7, MemoryKind::kDram, 0, 0x1000, 0x2000});
  md.region_names[7] = "kv.layer.17";
  const auto blob = encode_metadata(md);
  auto back = decode_metadata(blob);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->revision, 42u);
  ASSERT_EQ(back->region_names.size(), 1u);
  EXPECT_EQ(back->region_names.at(7), "kv.layer.17");
  // An original reader knows only tags below 9: strip the rest, and what is left is a
  // valid original blob describing the same peer.
  ByteReader r(std::span<const std::uint8_t>(blob).subspan(20));
  std::vector<std::pair<std::uint16_t, ByteWriter>> kept;
  int skipped = 0;
  while (r.remaining() > 0) {
    const std::uint16_t tag = r.u16();
    const std::uint32_t len = r.u32();
    auto value = r.take(len);
    ASSERT_TRUE(r.ok());
    if (tag > 8) {
      ++skipped;
      continue;
    }
    ByteWriter w;
    w.raw(value.data(), value.size());
    kept.emplace_back(tag, std::move(w));
  }
  EXPECT_EQ(skipped, 2);  // the revision and one region name
  auto stripped = decode_metadata(original_blob(kept));
  ASSERT_TRUE(stripped.ok());
  EXPECT_EQ(stripped->name, "new-peer");
  EXPECT_EQ(stripped->regions.size(), 1u);
}

TEST(MetadataRevision, BadRegionNamesAndTruncatedRevisionsAreCorrupt) {
  ByteWriter bad_name;
  bad_name.u64(1);
  bad_name.str("has space");
  EXPECT_EQ(decode_metadata(original_blob({{1, text("p")}, {8, instance()}, {10, bad_name}})).status().code(), StatusCode::kCorrupt);
  ByteWriter empty_name;
  empty_name.u64(1);
  EXPECT_EQ(decode_metadata(original_blob({{1, text("p")}, {8, instance()}, {10, empty_name}})).status().code(), StatusCode::kCorrupt);
  ByteWriter short_revision;
  short_revision.u32(5);
  EXPECT_EQ(decode_metadata(original_blob({{1, text("p")}, {8, instance()}, {9, short_revision}})).status().code(),
            StatusCode::kCorrupt);
}

}  // namespace
}  // namespace kvferry::detail
