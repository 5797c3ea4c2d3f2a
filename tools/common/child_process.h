// child_process.h — re-executing this binary as a helper process, never leaving orphans.
//
// The child gets the write end of a pipe (its number follows "--report-fd") on which it
// reports in control_codec.h frames (e.g. kListening with its bound port); the parent
// reads them with a bound on time and size. The child also asks the
// kernel to SIGKILL it if this process dies, so a crash or Ctrl-C of the parent cannot
// leave it behind. Destroying a ChildProcess that still runs terminates and reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"
#include "common/control_codec.h"
#include "common/socket_util.h"

namespace kvferry::cli {

// A report is a port and a few fields, or a tp rank's result: small.
inline constexpr std::uint32_t kMaxReportBodyBytes = 1u << 20;

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

  // The child's next report. Fails if the child closes the pipe (usually: it failed and
  // said why on stderr), stays silent past `timeout`, or writes anything but a frame
  // of at most `max_body` bytes (Corrupt).
  Result<ControlMessage> read_report(std::chrono::milliseconds timeout, std::uint32_t max_body = kMaxReportBodyBytes);

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
  std::vector<std::uint8_t> report_buffer_;  // at most one frame: read_report takes it as soon as it is whole
};

// Child side: writes one frame to the inherited report fd (left open, for more reports;
// the parent sees EOF when the child exits).
Status write_report(int report_fd, ControlType type, const nlohmann::json& body = nlohmann::json::object());

}  // namespace kvferry::cli
