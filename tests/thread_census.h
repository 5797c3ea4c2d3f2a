// Threads of a process, from /proc/<pid>/task: how many, their names, and how often one
// of them woke up (voluntary context switches). The reactor suites use it to show that
// sessions add no thread and that the agent's reactor serves them.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace kvferry::testing {

struct ThreadInfo {
  pid_t tid = 0;
  std::string name;
  std::uint64_t woke = 0;  // voluntary_ctxt_switches
};

inline std::vector<ThreadInfo> threads_of(pid_t pid = ::getpid()) {
  std::vector<ThreadInfo> out;
  const std::filesystem::path dir = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    ThreadInfo t;
    t.tid = static_cast<pid_t>(std::stol(e.path().filename().string()));
    std::ifstream(e.path() / "comm") >> t.name;
    std::ifstream status(e.path() / "status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) t.woke = std::stoull(line.substr(24));
    out.push_back(std::move(t));
  }
  return out;
}

inline std::vector<ThreadInfo> threads_named(const std::string& name, pid_t pid = ::getpid()) {
  std::vector<ThreadInfo> out;
  for (auto& t : threads_of(pid))
    if (t.name == name) out.push_back(t);
  return out;
}

}  // namespace kvferry::testing
