#include "kv/kv_messages.h"

#include <cstdio>

namespace kvferry::cli {

std::string format_pulled(const KvPulledMessage& m) {
  char text[160];
  std::snprintf(text, sizeof(text), "kv.pulled step=%llu part=%u/%u bytes=%llu last=%d",
                static_cast<unsigned long long>(m.step), m.part, m.parts,
                static_cast<unsigned long long>(m.bytes), m.last ? 1 : 0);
  return text;
}

std::optional<KvPulledMessage> parse_pulled(std::string_view text) {
  if (text.size() > 159) return std::nullopt;
  const std::string copy(text);  // sscanf needs a terminated string
  unsigned long long step = 0, bytes = 0;
  unsigned part = 0, parts = 0;
  int last = 0, consumed = 0;
  if (std::sscanf(copy.c_str(), "kv.pulled step=%llu part=%u/%u bytes=%llu last=%d%n", &step, &part, &parts,
                  &bytes, &last, &consumed) != 5 ||
      static_cast<std::size_t>(consumed) != copy.size() || part == 0 || part > parts ||
      (last != 0 && last != 1)) {
    return std::nullopt;
  }
  return KvPulledMessage{step, part, parts, bytes, last == 1};
}

}  // namespace kvferry::cli
