#include "peer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#ifndef KVFERRY_TEST_PEER_PATH
#error "KVFERRY_TEST_PEER_PATH must name the kvferry_test_peer executable"
#endif

extern char** environ;

namespace kvferry::testing {
namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  bool open() { return ::pipe2(fd, O_CLOEXEC) == 0; }
  int release(int i) {
    int f = fd[i];
    fd[i] = -1;
    return f;
  }
};

struct SpawnActions {
  posix_spawn_file_actions_t actions;
  SpawnActions() { posix_spawn_file_actions_init(&actions); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&actions); }
};

}  // namespace

std::unique_ptr<PeerProcess> PeerProcess::spawn(const PeerOptions& options, std::string* error) {
  Pipe in, out;
  if (!in.open() || !out.open()) {
    *error = std::string("pipe2: ") + std::strerror(errno);
    return nullptr;
  }
  // dup2 clears FD_CLOEXEC on the target, so the child keeps exactly 0 and 1 of these.
  SpawnActions fa;
  posix_spawn_file_actions_adddup2(&fa.actions, in.fd[0], 0);
  posix_spawn_file_actions_adddup2(&fa.actions, out.fd[1], 1);

  // KVFERRY_TEST_PEER overrides the build-time path (binaries carried to another machine).
  const char* env_path = std::getenv("KVFERRY_TEST_PEER");
  const std::string peer_path = env_path && *env_path ? env_path : KVFERRY_TEST_PEER_PATH;
  std::vector<std::string> args = {
      peer_path,
      "--name", options.name,
      "--size", std::to_string(options.size),
      "--seed", std::to_string(options.seed),
      "--fill", options.fill,
      "--backend", options.backend,
      "--shared", options.shared ? "1" : "0",
      "--peer-timeout-ms", std::to_string(options.peer_timeout.count()),
      "--lifetime-s", std::to_string(options.lifetime.count()),
      "--mode", "serve",
  };
  if (options.mem != "dram") {
    for (const std::string& a : {std::string("--mem"), options.mem, std::string("--device"), std::to_string(options.device)})
      args.push_back(a);
  }
  if (options.max_fds != 0) {
    args.push_back("--max-fds");
    args.push_back(std::to_string(options.max_fds));
  }
  if (options.push_to != 0) {
    args.push_back("--push-to");
    args.push_back(std::to_string(options.push_to));
  }
  if (!options.secret.empty()) {
    args.push_back("--secret");
    args.push_back(options.secret);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, peer_path.c_str(), &fa.actions, nullptr, argv.data(), environ);
  if (rc != 0) {
    *error = "posix_spawn " + peer_path + ": " + std::strerror(rc);
    return nullptr;
  }
  std::unique_ptr<PeerProcess> p(new PeerProcess());
  p->pid_ = pid;
  p->name_ = options.name;
  p->size_ = options.size;
  p->stdin_fd_ = in.release(1);
  p->stdout_fd_ = out.release(0);
  // Our copies of the child's ends close here (Pipe destructors), so EOF is seen on exit.
  ::close(in.release(0));
  ::close(out.release(1));

  // Read the READY line, bounded.
  const auto deadline = std::chrono::steady_clock::now() + options.ready_timeout;
  std::string line;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *error = "peer did not print READY within " + std::to_string(options.ready_timeout.count()) + " ms";
      return nullptr;  // the destructor kills and reaps
    }
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    int n = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = std::string("poll: ") + std::strerror(errno);
      return nullptr;
    }
    if (n == 0) continue;
    char buf[256];
    ssize_t got = ::read(p->stdout_fd_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      int st = 0;
      p->wait_exit(std::chrono::milliseconds(1000), &st);
      *error = "peer exited before READY (wait status " + std::to_string(st) + "), output so far: '" + line + "'";
      return nullptr;
    }
    line.append(buf, static_cast<std::size_t>(got));
    auto nl = line.find('\n');
    if (nl == std::string::npos) {
      if (line.size() > 4096) {
        *error = "peer printed garbage instead of READY";
        return nullptr;
      }
      continue;
    }
    line.resize(nl);
    break;
  }
  std::istringstream is(line);
  std::string word;
  unsigned port = 0, data_port = 0;
  std::string addr_hex;
  is >> word >> port >> addr_hex >> data_port;
  if (word != "READY" || port == 0 || port > 65535 || addr_hex.empty()) {
    *error = "bad READY line: '" + line + "'";
    return nullptr;
  }
  p->port_ = static_cast<std::uint16_t>(port);
  p->data_port_ = static_cast<std::uint16_t>(data_port);
  p->address_ = std::strtoull(addr_hex.c_str(), nullptr, 16);
  return p;
}

PeerProcess::~PeerProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);  // also ends a SIGSTOPped child
    int st;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

bool PeerProcess::signal(int sig) {
  if (pid_ <= 0 || reaped_) return false;
  return ::kill(pid_, sig) == 0;
}

bool PeerProcess::try_reap(int* wait_status) {
  if (reaped_) return true;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    if (wait_status) *wait_status = st;
    return true;
  }
  return false;
}

bool PeerProcess::alive() {
  if (pid_ <= 0 || try_reap(nullptr)) return false;
  return ::kill(pid_, 0) == 0;
}

bool PeerProcess::wait_exit(std::chrono::milliseconds timeout, int* wait_status) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (try_reap(wait_status)) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace kvferry::testing
