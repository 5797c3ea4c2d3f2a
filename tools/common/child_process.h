// child_process.h — re-executing this binary as a helper process, never leaving orphans.
//
// The child gets the write end of a pipe (its number follows "--report-fd") on which it
// reports one line (e.g. its bound port) and then closes it. The child also asks the
// kernel to SIGKILL it if this process dies, so a crash or Ctrl-C of the parent cannot
// leave it behind. Destroying a ChildProcess that still runs terminates and reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"
#include "common/socket_util.h"

namespace kvferry::cli {

class ChildProcess {
 public:
  // Runs /proc/self/exe with `args` followed by "--report-fd <n>".
  static Result<ChildProcess> spawn_self(std::vector<std::string> args);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { terminate(); }

  pid_t pid() const { return pid_; }

  // The child's one report line, without its newline. Fails if the child closes the
  // pipe (usually: it failed and said why on stderr) or stays silent past `timeout`.
  Result<std::string> read_report_line(std::chrono::milliseconds timeout);

  // Waits up to `timeout` for the child to exit and reaps it. Returns its exit code
  // (128 + signal number when killed by a signal), or Timeout while it still runs.
  Result<int> wait_for_exit(std::chrono::milliseconds timeout);

  // SIGTERM, a short grace period, then SIGKILL; always reaps. Idempotent.
  void terminate();

 private:
  ChildProcess(pid_t pid, FileDescriptor report_pipe)
      : pid_(pid), report_pipe_(std::move(report_pipe)) {}

  pid_t pid_ = -1;  // -1 once reaped
  FileDescriptor report_pipe_;
  std::string report_buffer_;
};

// Child side: writes `line` plus a newline to the inherited report fd and closes it.
Status write_report_line(int report_fd, const std::string& line);

}  // namespace kvferry::cli
