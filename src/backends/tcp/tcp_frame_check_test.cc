// The tcp segment table's checks (tcp_frame_check.h) and the segment cursor
// (tcp_segments.h): hostile entries are refused naming the entry and what is wrong,
// strided entries become one segment each, and the cursor walks them byte-exactly.
#include "backends/tcp/tcp_frame_check.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace kvferry::detail::tcp {
namespace {

constexpr std::uint64_t kBase = 0x100000, kLen = 1u << 20;  // the one registered region

bool in_region(std::uint64_t a, std::uint64_t l) { return a >= kBase && a - kBase <= kLen && l <= kBase + kLen - a; }

std::string table_of(std::initializer_list<WireSegment> entries) {
  std::string t;
  for (const WireSegment& e : entries) t.append(reinterpret_cast<const char*>(&e), sizeof e);
  return t;
}

struct Parsed {
  std::string error;
  std::string outside;
  std::vector<Segment> segs;
  std::uint64_t total = 0;
};

Parsed parse(const std::string& table, const InsideFn& inside = in_region) {
  Parsed p;
  p.error = parse_segments(table, inside, p.segs, p.total, p.outside);
  return p;
}

TEST(TcpFrameCheck, StridedEntryIsOneSegmentCheckedOnce) {
  int lookups = 0;
  auto counting = [&](std::uint64_t a, std::uint64_t l) { return ++lookups, in_region(a, l); };
  // 1,024 rows of 512 B at a 1 KiB stride: the whole region's first half of each row.
  Parsed p = parse(table_of({{kBase, 512, 1024, 1024}}), counting);
  ASSERT_EQ(p.error, "");
  EXPECT_EQ(p.outside, "");
  EXPECT_EQ(lookups, 1);
  ASSERT_EQ(p.segs.size(), 1u);
  EXPECT_EQ(reinterpret_cast<std::uint64_t>(p.segs[0].ptr), kBase);
  EXPECT_EQ(p.segs[0].unit, 512u);
  EXPECT_EQ(p.segs[0].stride, 1024u);
  EXPECT_EQ(p.segs[0].count, 1024u);
  EXPECT_EQ(p.total, 512u * 1024);
}

TEST(TcpFrameCheck, TouchingUnitsBecomeOneContiguousUnit) {
  Parsed p = parse(table_of({{kBase, 512, 512, 16}, {kBase + 8192, 4096, 0, 1}}));
  ASSERT_EQ(p.error, "");
  ASSERT_EQ(p.segs.size(), 2u);
  EXPECT_EQ(p.segs[0].unit, 8192u);
  EXPECT_EQ(p.segs[0].count, 1u);
  EXPECT_EQ(p.segs[1].unit, 4096u);
  EXPECT_EQ(p.total, 8192u + 4096);
}

TEST(TcpFrameCheck, HostileEntriesAreRefusedNamingTheEntry) {
  const std::uint64_t big = std::uint64_t{1} << 62;
  struct Case {
    const char* what;
    std::string table;
    const char* error;
  } cases[] = {
      {"zero unit", table_of({{kBase, 4096, 4096, 1}, {kBase, 0, 512, 4}}), "segment table entry 1: empty unit or count"},
      {"zero count", table_of({{kBase, 512, 512, 0}}), "segment table entry 0: empty unit or count"},
      {"stride below unit", table_of({{kBase, 512, 256, 2}}), "segment table entry 0: stride below its unit"},
      {"stride x count overflows", table_of({{kBase, 512, big, 8}}), "segment table entry 0: extent overflows"},
      {"extent + unit overflows", table_of({{kBase, 512, UINT64_MAX / 2, 3}}), "segment table entry 0: extent overflows"},
      {"address + extent overflows", table_of({{UINT64_MAX - 100, 512, 0, 1}}), "segment table entry 0: extent overflows"},
      {"too many units (iovecs)", table_of({{kBase, 1, 2, kMaxFrameUnits}, {kBase, 1, 1, 1}}),
       "segment table entry 1: more units in the frame than its cap"},
      {"a count that would wrap the unit sum", table_of({{kBase, 1, 1, 1}, {kBase, 1, 0, UINT64_MAX}}),
       "segment table entry 1: stride below its unit"},
      {"a count far above the cap", table_of({{kBase, 1, 1, 2}, {kBase, 1, 1, std::uint64_t{1} << 40}}),
       "segment table entry 1: more units in the frame than its cap"},
      {"too many bytes", table_of({{kBase, kMaxChunkBytes, 0, 1}, {kBase, 1, 0, 1}}),
       "segment table entry 1: more bytes in the frame than its cap"},
  };
  for (const Case& c : cases) {
    Parsed p = parse(c.table);
    EXPECT_EQ(p.error, c.error) << c.what;
  }
}

TEST(TcpFrameCheck, EntryOutsideTheRegionIsNamedAndNoProtocolError) {
  // The last unit of 1,025 rows at 1 KiB runs past the region's end.
  Parsed p = parse(table_of({{kBase, 4096, 0, 1}, {kBase, 512, 1024, 1025}, {kBase - 8, 16, 0, 1}}));
  EXPECT_EQ(p.error, "");
  EXPECT_EQ(p.outside, "[0x100000, +512) x 1025, stride 1024");
  p = parse(table_of({{kBase + kLen - 256, 512, 0, 1}}));
  EXPECT_EQ(p.error, "");
  EXPECT_EQ(p.outside, "[0x1fff00, +512)");
}

TEST(TcpFrameCheck, EntrySpanningTwoRegionsIsCheckedUnitByUnit) {
  // Two regions with a gap: units of one entry in each, at a stride that jumps the gap.
  auto two = [](std::uint64_t a, std::uint64_t l) {
    return in_region(a, l) || (a >= 0x400000 && a - 0x400000 <= 4096 && l <= 0x400000 + 4096 - a);
  };
  const std::uint64_t stride = 0x400000 - kBase;
  Parsed p = parse(table_of({{kBase, 4096, stride, 2}}), two);
  ASSERT_EQ(p.error, "");
  EXPECT_EQ(p.outside, "");
  ASSERT_EQ(p.segs.size(), 2u);  // one per unit: each lies in one region
  EXPECT_EQ(reinterpret_cast<std::uint64_t>(p.segs[1].ptr), 0x400000u);
  EXPECT_EQ(p.segs[1].unit, 4096u);
  // A third unit would land in the gap's far side: refused.
  p = parse(table_of({{kBase, 4096, stride, 3}}), two);
  EXPECT_EQ(p.outside, "[0x100000, +4096) x 3, stride 3145728");
}

TEST(TcpSegments, CursorFillsAndAdvancesByteExactly) {
  std::vector<std::uint8_t> mem(64 * 1024);
  std::vector<Segment> segs = {make_segment(mem.data(), 100, 300, 5), make_segment(mem.data() + 4000, 7, 7, 3),
                               make_segment(mem.data() + 8000, 50, 64, 2)};
  ASSERT_EQ(segs[1].count, 1u);  // touching units: one of 21 bytes
  // Expected byte offsets, in order.
  std::vector<std::size_t> want;
  for (int k = 0; k < 5; ++k)
    for (int b = 0; b < 100; ++b) want.push_back(k * 300 + b);
  for (int b = 0; b < 21; ++b) want.push_back(4000 + b);
  for (int k = 0; k < 2; ++k)
    for (int b = 0; b < 50; ++b) want.push_back(8000 + k * 64 + b);
  // Walk it in odd steps, with few iovecs per call, as partial readv/sendmsg calls do.
  SegmentCursor at;
  std::vector<std::size_t> got;
  const std::size_t steps[] = {1, 99, 3, 250, 77, 13, 500};
  for (int call = 0; at.seg < segs.size() && call < 1000; ++call) {
    const std::size_t step = steps[call % 7];
    iovec iov[3];
    int cnt = 0;
    at.fill(segs, iov, cnt, 3, UINT64_MAX);
    std::size_t moved = 0;
    for (int i = 0; i < cnt && moved < step; ++i) {
      for (std::size_t b = 0; b < iov[i].iov_len && moved < step; ++b, ++moved)
        got.push_back(static_cast<std::uint8_t*>(iov[i].iov_base) + b - mem.data());
    }
    at.advance(segs, moved);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(at.seg, segs.size());
}

}  // namespace
}  // namespace kvferry::detail::tcp
