// Human-readable names for descriptors in error messages.
#pragma once

#include <cstdio>
#include <string>

#include "kvferry/memory.h"

namespace kvferry::detail {

inline std::string describe(MemoryKind kind, const Descriptor& d) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s[0x%llx, +%llu, dev %u]", std::string(to_string(kind)).c_str(),
                static_cast<unsigned long long>(d.address), static_cast<unsigned long long>(d.length),
                d.device);
  return buf;
}

}  // namespace kvferry::detail
