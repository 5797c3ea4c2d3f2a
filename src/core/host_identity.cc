#include "core/host_identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>

namespace kvferry::detail {

std::string host_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!in || !std::getline(in, id) || id.empty()) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    id = std::string("host:") + name;
  }
  // Containers and network namespaces share the boot id but not the abstract Unix
  // sockets, loopback or the other paths same-host backends rely on: processes in two
  // network namespaces are on two hosts as far as transports go.
  struct stat st {};
  if (::stat("/proc/self/ns/net", &st) == 0) id += "/netns:" + std::to_string(st.st_ino);
  return id;
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
