#include "core/host_identity.h"

#include <unistd.h>

#include <fstream>
#include <random>

namespace kvferry::detail {

std::string host_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (in && std::getline(in, id) && !id.empty()) return id;
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return std::string("host:") + name;
}

std::string process_id() {
  // Drawn once: a process keeps one identity for all its agents (immutable after init).
  static const std::string id = [] {
    std::random_device rd;
    std::uint64_t token = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    return std::to_string(::getpid()) + ":" + std::to_string(token);
  }();
  return id;
}

}  // namespace kvferry::detail
