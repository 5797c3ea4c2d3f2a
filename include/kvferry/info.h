// kvferry/info.h — what this build contains and what is usable on this machine.
// Thread-safe; may probe the system (open a socket, query devices), never blocks long.
#pragma once

#include <string>
#include <vector>

namespace kvferry {

struct BackendInfo {
  std::string name;
  std::string description;  // memory kinds and reach, one line
  bool usable = false;
  std::string reason;       // why not usable; empty when usable
};

std::vector<BackendInfo> compiled_backends();
const char* version_string() noexcept;

}  // namespace kvferry
