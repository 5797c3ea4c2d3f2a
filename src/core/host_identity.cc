#include "core/host_identity.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

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

namespace {
std::string pid_namespace() {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return "0";
  return std::to_string(static_cast<unsigned long long>(st.st_ino));
}
}  // namespace

std::string process_id() {
  // Drawn once: a process keeps one identity for all its agents (immutable after init).
  static const std::string id = [] {
    std::random_device rd;
    std::uint64_t token = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    return std::to_string(::getpid()) + ":" + std::to_string(token) + ":" + pid_namespace();
  }();
  return id;
}

}  // namespace kvferry::detail

namespace kvferry::detail {

bool process_exited(const std::string& process_id) {
  const auto first = process_id.find(':');
  const auto last = process_id.rfind(':');
  if (first == std::string::npos || last == first) return false;
  static const std::string ours = pid_namespace();
  if (ours == "0" || process_id.substr(last + 1) != ours) return false;
  char* end = nullptr;
  const long pid = std::strtol(process_id.c_str(), &end, 10);
  if (end != process_id.c_str() + first || pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace kvferry::detail
