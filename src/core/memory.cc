#include "kvferry/memory.h"

namespace kvferry {

std::string_view to_string(MemoryKind kind) noexcept {
  switch (kind) {
    case MemoryKind::kDram: return "dram";
    case MemoryKind::kVram: return "vram";
    case MemoryKind::kFile: return "file";
  }
  return "unknown";
}

bool parse_memory_kind(std::string_view text, MemoryKind* out) noexcept {
  for (int i = 0; i < kMemoryKindCount; ++i) {
    auto kind = static_cast<MemoryKind>(i);
    if (text == to_string(kind)) {
      *out = kind;
      return true;
    }
  }
  return false;
}

std::uint64_t DescriptorList::total_bytes() const {
  std::uint64_t sum = 0;
  for (const auto& d : descriptors_) sum += d.length;
  return sum;
}

}  // namespace kvferry
