// tcp frame headers and strided segment tables (backends/tcp/tcp_frame_check.h): a header
// that passes has a bounded table; a table that passes has bounded units and bytes, and
// when no entry is reported outside, every unit of every segment lies wholly inside the
// regions (here [0x10000, +1 MiB) and [0x200000, +64 KiB), with a gap between them that
// a stride may jump) and the segments' bytes add up to the total, without wrapping.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backends/tcp/tcp_frame_check.h"

namespace {

using namespace kvferry::detail::tcp;

constexpr std::uint64_t kRegions[2][2] = {{0x10000, 1u << 20}, {0x200000, 64u << 10}};

bool inside(std::uint64_t a, std::uint64_t l) {
  for (const auto& r : kRegions) {
    if (a >= r[0] && a - r[0] <= r[1] && l <= r[0] + r[1] - a) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < sizeof(WireHeader)) return 0;
  WireHeader h;
  std::memcpy(&h, data, sizeof h);
  const bool write = h.type == static_cast<std::uint8_t>(FrameType::kWrite);
  if (!batch_header_error(h, write).empty()) return 0;
  const std::uint64_t table_bytes = std::uint64_t{h.aux} * kSegmentEntryBytes;
  if (h.aux == 0 || h.aux > kMaxSegments || table_bytes > h.len) std::abort();
  const std::size_t have = std::min<std::size_t>(size - sizeof h, table_bytes);
  std::string table(reinterpret_cast<const char*>(data + sizeof h), have);
  std::vector<Segment> segs;
  std::uint64_t total = 0;
  std::string outside;
  const std::string malformed = parse_segments(table, inside, segs, total, outside);
  if (!malformed.empty()) {
    if (malformed.rfind("segment table entry ", 0) != 0) std::abort();
    return 0;
  }
  if (total > kMaxChunkBytes) std::abort();
  std::uint64_t sum = 0, units = 0;
  for (const Segment& s : segs) {
    if (s.unit == 0 || s.count == 0 || (s.count > 1 && s.stride < s.unit)) std::abort();
    units += s.count;
    sum += s.bytes();
    if (!outside.empty()) continue;
    // Every unit inside: the extent in one region, as the engine relies on.
    if (!inside(reinterpret_cast<std::uint64_t>(s.ptr), s.extent())) std::abort();
  }
  if (sum != total || units > kMaxFrameUnits) std::abort();
  return 0;
}
