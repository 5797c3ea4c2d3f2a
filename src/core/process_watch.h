// ProcessWatch: whether a same-host peer process has been killed or is exiting, asked
// cheaply and without waiting.
//
// Copies through shared mappings complete even after the peer process was killed (the
// mappings keep the pages alive), and the peer's sockets hang up only once the kernel has
// torn its address space down, tens of milliseconds later. A transfer that completes in
// that window must not be reported done: the peer was gone. /proc/<pid>/stat shows the
// kill at once: a pending SIGKILL is set before kill(2) returns, PF_EXITING once the
// process starts to exit. Its start time guards against a reused pid.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "core/socket_util.h"

namespace kvferry::detail {

class ProcessWatch {
 public:
  ProcessWatch() = default;
  // Opens /proc/<pid>/stat; a watch that cannot open it reports nothing (never "gone").
  explicit ProcessWatch(pid_t pid);
  // True when the process is killed, exiting, exited, or its pid now names another one.
  bool gone() const;

 private:
  UniqueFd stat_;
  std::uint64_t start_time_ = 0;
};

}  // namespace kvferry::detail
