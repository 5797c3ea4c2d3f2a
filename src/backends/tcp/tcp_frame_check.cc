#include "backends/tcp/tcp_frame_check.h"

#include <cstdio>
#include <cstring>

namespace kvferry::detail::tcp {
namespace {

std::string entry_error(std::size_t i, const char* what) {
  return "segment table entry " + std::to_string(i) + ": " + what;
}

std::string describe(const WireSegment& e) {
  char text[128];
  if (e.count == 1) {
    std::snprintf(text, sizeof text, "[0x%llx, +%llu)", static_cast<unsigned long long>(e.addr),
                  static_cast<unsigned long long>(e.unit));
  } else {
    std::snprintf(text, sizeof text, "[0x%llx, +%llu) x %llu, stride %llu", static_cast<unsigned long long>(e.addr),
                  static_cast<unsigned long long>(e.unit), static_cast<unsigned long long>(e.count),
                  static_cast<unsigned long long>(e.stride));
  }
  return text;
}

// Where the units of `e` lie: its extent in one region (the usual case: one lookup),
// each unit in some region (units of pieces from different regions that happen to lie
// at a fixed stride), or not all inside registered memory.
enum class Placement { kOneRegion, kUnitByUnit, kOutside };

Placement place(const WireSegment& e, std::uint64_t extent, const InsideFn& inside) {
  if (inside(e.addr, extent)) return Placement::kOneRegion;
  if (e.count == 1) return Placement::kOutside;
  for (std::uint64_t k = 0; k < e.count; ++k) {
    if (!inside(e.addr + k * e.stride, e.unit)) return Placement::kOutside;
  }
  return Placement::kUnitByUnit;
}

}  // namespace

std::string batch_header_error(const WireHeader& h, bool data_follows) {
  const std::uint64_t table = std::uint64_t{h.aux} * kSegmentEntryBytes;
  if (h.aux == 0 || h.aux > kMaxSegments || h.len < table || h.len - table > kMaxChunkBytes ||
      (data_follows ? h.len == table : h.len != table))
    return "batch frame with bad segment count or length";
  return "";
}

std::string parse_segments(std::string_view table, const InsideFn& inside, std::vector<Segment>& out,
                           std::uint64_t& total, std::string& outside) {
  out.clear();
  total = 0;
  outside.clear();
  std::uint64_t units = 0;
  const std::size_t entries = table.size() / kSegmentEntryBytes;
  out.reserve(entries);
  for (std::size_t i = 0; i < entries; ++i) {
    WireSegment e;
    std::memcpy(&e, table.data() + i * kSegmentEntryBytes, sizeof e);
    if (e.unit == 0 || e.count == 0) return entry_error(i, "empty unit or count");
    if (e.count > 1 && e.stride < e.unit) return entry_error(i, "stride below its unit");
    // extent = (count - 1) * stride + unit, and addr + extent, without wrapping.
    std::uint64_t extent = 0, end = 0;
    if (__builtin_mul_overflow(e.count - 1, e.count > 1 ? e.stride : 0, &extent) ||
        __builtin_add_overflow(extent, e.unit, &extent) || __builtin_add_overflow(e.addr, extent, &end))
      return entry_error(i, "extent overflows");
    if (e.count > kMaxFrameUnits - units) return entry_error(i, "more units in the frame than its cap");
    units += e.count;
    const std::uint64_t bytes = e.unit * e.count;  // <= extent: cannot wrap
    if (bytes > kMaxChunkBytes - total) return entry_error(i, "more bytes in the frame than its cap");
    total += bytes;
    auto* ptr = reinterpret_cast<std::uint8_t*>(e.addr);
    const Placement where = place(e, extent, inside);
    if (where == Placement::kOutside && outside.empty()) outside = describe(e);
    if (where != Placement::kUnitByUnit) {
      out.push_back(make_segment(ptr, e.unit, e.stride, e.count));
      continue;
    }
    // Every Segment lies in one region (the vram and deregistration checks rely on it).
    for (std::uint64_t k = 0; k < e.count; ++k) out.push_back(make_segment(ptr + k * e.stride, e.unit, e.unit, 1));
  }
  return "";
}

}  // namespace kvferry::detail::tcp
