// cli_runner.h — the real `kvferry` tool run as a child process by the CLI suites
// (kv_cli_test.cc, kv_cli_vram_test.cc): stdout and stderr captured, lines awaited with
// a bound, the exit code collected; a child still running is killed and reaped when
// its Cli is destroyed, on every path.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvferry::testing {

// $KVFERRY_CLI when set (binaries carried to another machine: scripts/gpu_check.sh),
// else the build tree's ../tools/kvferry beside kvferry_test_peer (tests/CMakeLists.txt).
inline std::string cli_path() {
  if (const char* env = std::getenv("KVFERRY_CLI"); env != nullptr && *env != '\0') return env;
  return (std::filesystem::path(KVFERRY_TEST_PEER_PATH).parent_path().parent_path() / "tools" / "kvferry")
      .string();
}

// A child running the kvferry tool, stdout and stderr captured.
class Cli {
 public:
  using Clock = std::chrono::steady_clock;

  static std::unique_ptr<Cli> start(std::vector<std::string> args) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return nullptr;
    args.insert(args.begin(), cli_path());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    auto cli = std::unique_ptr<Cli>(new Cli);
    cli->pid_ = pid;
    cli->out_ = out[0];
    cli->err_ = err[0];
    return cli;
  }
  ~Cli() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(out_);
    close(err_);
  }

  // The next stdout line containing `needle`, or nullopt after `timeout`.
  std::optional<std::string> line_with(const std::string& needle, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      std::size_t newline;
      while ((newline = pending_.find('\n')) != std::string::npos) {
        std::string line = pending_.substr(0, newline);
        pending_.erase(0, newline + 1);
        stdout_ += line + "\n";
        if (line.find(needle) != std::string::npos) return line;
      }
      if (Clock::now() >= deadline || !pump(deadline)) return std::nullopt;
    }
  }
  // Exit code (128 + signal when killed), or nullopt if still running after `timeout`.
  // Drains both pipes on the way so a chatty child never blocks.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (Clock::now() >= deadline) return std::nullopt;
      pump(std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    }
    while (pump(Clock::now() + std::chrono::milliseconds(50))) {}
    stdout_ += pending_;
    pending_.clear();
    return exit_code_;
  }
  void signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  const std::string& out() const { return stdout_; }
  const std::string& err() const { return stderr_; }

 private:
  Cli() = default;
  // Reads what is there until `deadline`; false once both pipes are at EOF.
  bool pump(Clock::time_point deadline) {
    pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (poll(fds, 2, static_cast<int>(std::max<std::int64_t>(0, left.count()))) <= 0)
      return !(out_eof_ && err_eof_);
    char chunk[4096];
    if (fds[0].revents != 0) {
      const ssize_t n = read(out_, chunk, sizeof chunk);
      if (n > 0) pending_.append(chunk, static_cast<std::size_t>(n));
      if (n == 0) out_eof_ = true;
    }
    if (fds[1].revents != 0) {
      const ssize_t n = read(err_, chunk, sizeof chunk);
      if (n > 0) stderr_.append(chunk, static_cast<std::size_t>(n));
      if (n == 0) err_eof_ = true;
    }
    return !(out_eof_ && err_eof_);
  }

  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool out_eof_ = false, err_eof_ = false;
  std::optional<int> exit_code_;
  std::string pending_, stdout_, stderr_;
};

}  // namespace kvferry::testing
