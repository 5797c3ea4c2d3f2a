// tcp frame headers and segment tables (backends/tcp/tcp_frame_check.h): a header that
// passes has a bounded table, and a table that passes lies wholly inside the regions
// (here one region [0x10000, +1 MiB)) with a total that does not wrap.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backends/tcp/tcp_frame_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvferry::detail::tcp;
  if (size < sizeof(WireHeader)) return 0;
  WireHeader h;
  std::memcpy(&h, data, sizeof h);
  const bool write = h.type == static_cast<std::uint8_t>(FrameType::kWrite);
  if (!batch_header_error(h, write).empty()) return 0;
  const std::uint64_t table_bytes = std::uint64_t{h.aux} * kSegmentEntryBytes;
  if (h.aux == 0 || h.aux > kMaxSegments || table_bytes > h.len) std::abort();
  const std::size_t have = std::min<std::size_t>(size - sizeof h, table_bytes);
  std::string table(reinterpret_cast<const char*>(data + sizeof h), have);
  constexpr std::uint64_t kBase = 0x10000, kLen = 1u << 20;
  auto inside = [](std::uint64_t a, std::uint64_t l) {
    return a >= kBase && a - kBase <= kLen && l <= kBase + kLen - a;
  };
  std::vector<Segment> segs;
  std::uint64_t total = 0;
  std::string bad;
  if (parse_segments(table, inside, segs, total, bad)) {
    std::uint64_t sum = 0;
    for (const Segment& s : segs) {
      const auto a = reinterpret_cast<std::uint64_t>(s.ptr);
      if (s.len == 0 || a < kBase || a + s.len > kBase + kLen) std::abort();
      sum += s.len;
    }
    if (sum != total) std::abort();
  } else if (bad.empty()) {
    std::abort();
  }
  return 0;
}
