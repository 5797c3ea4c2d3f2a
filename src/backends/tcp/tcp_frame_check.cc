#include "backends/tcp/tcp_frame_check.h"

#include <cstdio>
#include <cstring>

namespace kvferry::detail::tcp {

std::string batch_header_error(const WireHeader& h, bool data_follows) {
  const std::uint64_t table = std::uint64_t{h.aux} * kSegmentEntryBytes;
  if (h.aux == 0 || h.aux > kMaxSegments || h.len < table || h.len - table > kMaxChunkBytes ||
      (data_follows ? h.len == table : h.len != table))
    return "batch frame with bad segment count or length";
  return "";
}

bool parse_segments(const std::string& table, const std::function<bool(std::uint64_t, std::uint64_t)>& inside,
                    std::vector<Segment>& out, std::uint64_t& total, std::string& bad) {
  out.clear();
  total = 0;
  bool all_ok = true;
  for (std::size_t off = 0; off + kSegmentEntryBytes <= table.size(); off += kSegmentEntryBytes) {
    std::uint64_t e[2];
    std::memcpy(e, table.data() + off, sizeof e);
    if (e[1] == 0 || !inside(e[0], e[1])) {
      if (all_ok) {
        char text[64];
        std::snprintf(text, sizeof text, "[0x%llx, +%llu)", static_cast<unsigned long long>(e[0]),
                      static_cast<unsigned long long>(e[1]));
        bad = text;
      }
      all_ok = false;
    }
    out.push_back(Segment{reinterpret_cast<std::uint8_t*>(e[0]), e[1]});
    total = total + e[1] < total ? UINT64_MAX : total + e[1];
  }
  return all_ok;
}

}  // namespace kvferry::detail::tcp
