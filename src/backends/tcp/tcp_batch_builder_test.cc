// BatchBuilder (tcp_batch_builder.h): runs of equal pieces at fixed strides become one
// table entry and one local segment; frames are cut by bytes and by the wire's caps.
#include "backends/tcp/tcp_batch_builder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "backends/tcp/tcp_wire.h"

namespace kvferry::detail::tcp {
namespace {

std::vector<WireSegment> entries(const Batch& b) {
  std::vector<WireSegment> out(b.table.size() / sizeof(WireSegment));
  std::memcpy(out.data(), b.table.data(), b.table.size());
  return out;
}

std::vector<Batch> build(std::uint64_t chunk, std::uint64_t batch,
                         const std::vector<std::array<std::uint64_t, 3>>& pieces) {
  std::vector<Batch> out;
  BatchBuilder b(chunk, batch, [&](Batch&& f) { out.push_back(std::move(f)); });
  for (const auto& p : pieces) b.add(p[0], p[1], p[2]);
  b.finish();
  return out;
}

TEST(TcpBatchBuilder, RowsIntoAStrideAreOneEntryPerRun) {
  // Two blocks of 16 token rows (512 B): contiguous here, every 1 KiB there; the second
  // block elsewhere on both sides (a block table's jump).
  std::vector<std::array<std::uint64_t, 3>> pieces;
  for (std::uint64_t t = 0; t < 16; ++t) pieces.push_back({0x10000 + t * 512, 0x900000 + t * 1024, 512});
  for (std::uint64_t t = 0; t < 16; ++t) pieces.push_back({0x50000 + t * 512, 0x100000 + t * 1024, 512});
  auto frames = build(1u << 20, 4u << 20, pieces);
  ASSERT_EQ(frames.size(), 1u);
  const auto e = entries(frames[0]);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].addr, 0x900000u);
  EXPECT_EQ(e[0].unit, 512u);
  EXPECT_EQ(e[0].stride, 1024u);
  EXPECT_EQ(e[0].count, 16u);
  EXPECT_EQ(e[1].addr, 0x100000u);
  ASSERT_EQ(frames[0].local.size(), 2u);  // our side is contiguous: one unit of 8 KiB each
  EXPECT_EQ(frames[0].local[0].unit, 8192u);
  EXPECT_EQ(frames[0].local[0].count, 1u);
  EXPECT_EQ(frames[0].bytes, 32u * 512);
}

TEST(TcpBatchBuilder, FramesAreCutByBytesAndByTheCaps) {
  // 4 KiB frames of 512 B rows: 8 rows each, the run split at each frame's end.
  std::vector<std::array<std::uint64_t, 3>> rows;
  for (std::uint64_t t = 0; t < 20; ++t) rows.push_back({0x10000 + t * 1024, 0x900000 + t * 512, 512});
  auto frames = build(1u << 20, 4096, rows);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].bytes, 4096u);
  EXPECT_EQ(frames[2].bytes, 2048u);
  EXPECT_EQ(entries(frames[1])[0].addr, 0x900000u + 8 * 512);
  EXPECT_EQ(frames[1].local[0].count, 8u);  // strided here: 8 units of 512 every 1 KiB
  EXPECT_EQ(frames[1].local[0].stride, 1024u);

  // Units: 1-byte pieces every 2 bytes make frames of kMaxFrameUnits units.
  std::vector<std::array<std::uint64_t, 3>> tiny;
  for (std::uint64_t i = 0; i < kMaxFrameUnits + 10; ++i) tiny.push_back({0x10000 + 2 * i, 0x900000 + 2 * i, 1});
  frames = build(1u << 20, 4u << 20, tiny);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].bytes, kMaxFrameUnits);
  EXPECT_EQ(entries(frames[0]).size(), 1u);

  // Entries: pieces that never join (the peer's side descends) make frames of kMaxSegments.
  std::vector<std::array<std::uint64_t, 3>> apart;
  for (std::uint64_t i = 0; i < kMaxSegments + 5; ++i) apart.push_back({0x10000 + 64 * i, 0x9000000 - 64 * i, 64});
  frames = build(1u << 20, 4u << 20, apart);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(entries(frames[0]).size(), kMaxSegments);
  EXPECT_EQ(entries(frames[1]).size(), 5u);
}

TEST(TcpBatchBuilder, LargePiecesAreCutIntoChunks) {
  // 2.5 MiB with 1 MiB chunks: two chunks that touch on both sides (one contiguous entry
  // of 2 MiB), then the half chunk.
  auto frames = build(1u << 20, 64u << 20, {{0x10000000, 0x20000000, (5u << 20) / 2}});
  ASSERT_EQ(frames.size(), 1u);
  const auto e = entries(frames[0]);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].count, 2u);
  EXPECT_EQ(e[0].unit, 1u << 20);
  EXPECT_EQ(e[1].addr, 0x20000000u + (2u << 20));
  EXPECT_EQ(e[1].unit, 1u << 19);
  EXPECT_EQ(frames[0].local[0].unit, 2u << 20);  // touching on our side: one unit
}

}  // namespace
}  // namespace kvferry::detail::tcp
