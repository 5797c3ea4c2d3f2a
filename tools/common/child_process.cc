#include "common/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <thread>

#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Runs in the forked child before exec: only async-signal-safe calls here.
[[noreturn]] void exec_child(pid_t parent, int report_fd, char* const* argv) {
  // Die with the parent. If it is already gone (race with the fork), leave now.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
  // The pipe was made close-on-exec so other children never inherit it; this one must.
  if (fcntl(report_fd, F_SETFD, 0) != 0) _exit(127);
  execv("/proc/self/exe", argv);
  _exit(127);
}

}  // namespace

Result<ChildProcess> ChildProcess::spawn_self(std::vector<std::string> args) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoErrorFromErrno("pipe2", errno);
  FileDescriptor read_end(fds[0]);
  FileDescriptor write_end(fds[1]);

  // Build argv before fork: the child may not allocate.
  args.insert(args.begin(), "kvferry");
  args.push_back("--report-fd");
  args.push_back(std::to_string(write_end.get()));
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return IoErrorFromErrno("fork", errno);
  if (pid == 0) exec_child(parent, write_end.get(), argv.data());
  write_end.reset();  // only the child writes; its exit then gives us EOF
  return ChildProcess(pid, std::move(read_end));
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_),
      report_pipe_(std::move(other.report_pipe_)),
      report_buffer_(std::move(other.report_buffer_)) {
  other.pid_ = -1;
}

Result<ControlMessage> ChildProcess::read_report(std::chrono::milliseconds timeout, std::uint32_t max_body) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    KVF_ASSIGN_OR_RETURN(std::optional<ControlTaken> taken,
                         take_control(report_buffer_, max_body));
    if (taken) {
      report_buffer_.erase(report_buffer_.begin(), report_buffer_.begin() + static_cast<std::ptrdiff_t>(taken->consumed));
      return std::move(taken->message);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Timeout("child process did not report within the time limit");
    KVF_ASSIGN_OR_RETURN(bool readable, wait_readable(report_pipe_.get(), left));
    if (!readable) continue;
    // take_control refused any header over the cap, so the buffer stays below one frame.
    std::uint8_t chunk[4096];
    const ssize_t got = ::read(report_pipe_.get(), chunk, sizeof(chunk));
    if (got == 0) return Unavailable("child process exited before reporting (see its stderr)");
    if (got < 0) {
      if (errno == EINTR) continue;
      return IoErrorFromErrno("read(report pipe)", errno);
    }
    report_buffer_.insert(report_buffer_.end(), chunk, chunk + got);
  }
}

Result<int> ChildProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  if (pid_ < 0) return InvalidArgument("child process already reaped");
  const auto deadline = Clock::now() + timeout;
  while (true) {
    int wait_status = 0;
    const pid_t done = waitpid(pid_, &wait_status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return exit_code_of(wait_status);
    }
    if (done < 0 && errno != EINTR) {
      pid_ = -1;
      return IoErrorFromErrno("waitpid", errno);
    }
    if (Clock::now() >= deadline) return Timeout("child process still running");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void ChildProcess::terminate() {
  if (pid_ < 0) return;
  ::kill(pid_, SIGTERM);
  if (wait_for_exit(std::chrono::milliseconds(2000)).ok()) return;
  ::kill(pid_, SIGKILL);
  (void)wait_for_exit(std::chrono::milliseconds(5000));
  if (pid_ >= 0) {  // SIGKILL cannot be ignored; block until the kernel reaps it
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

Status write_report(int report_fd, ControlType type, const nlohmann::json& body) {
  const std::vector<std::uint8_t> frame = encode_control(type, body);
  std::size_t written = 0;
  while (written < frame.size()) {
    const ssize_t n = ::write(report_fd, frame.data() + written, frame.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoErrorFromErrno("write(report fd)", errno);
    }
    written += static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

}  // namespace kvferry::cli
