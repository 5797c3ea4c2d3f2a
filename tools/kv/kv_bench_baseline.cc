#include "kv/kv_bench_baseline.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/cli_util.h"
#include "common/socket_util.h"

namespace kvferry::cli {
namespace {

std::vector<std::string> bench_arguments(const BenchBaselineRequest& r) {
  std::vector<std::string> args = {"kvferry",
                                   "bench",
                                   "--backend",
                                   r.backend,
                                   "--op",
                                   "read",
                                   "--block-size",
                                   std::to_string(r.segment_bytes),
                                   "--layers",
                                   std::to_string(r.lanes),
                                   "--blocks",
                                   std::to_string(r.blocks),
                                   "--pattern",
                                   r.pattern,
                                   "--iterations",
                                   std::to_string(r.iterations),
                                   "--warmup",
                                   std::to_string(r.warmup),
                                   "--small-round-trips",
                                   "0",
                                   "--ceiling-reps",
                                   "3",
                                   "--verify",
                                   "--json"};
  for (const std::string& param : r.params) {
    args.push_back("--param");
    args.push_back(param);
  }
  return args;
}

// Runs `args` with stdout into a pipe; returns everything it printed there. Stderr is
// shared with ours, so the bench's own errors reach the user.
Result<std::string> run_capturing_stdout(std::vector<std::string> args, std::chrono::seconds limit) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoErrorFromErrno("pipe2", errno);
  FileDescriptor read_end(fds[0]), write_end(fds[1]);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return IoErrorFromErrno("fork", errno);
  if (pid == 0) {  // only async-signal-safe calls until exec
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    if (dup2(write_end.get(), STDOUT_FILENO) < 0) _exit(127);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  write_end.reset();
  std::string out;
  Status status;
  const auto deadline = Clock::now() + limit;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      status = Timeout("kvferry bench did not finish within " + std::to_string(limit.count()) + " s");
      break;
    }
    Result<bool> readable = wait_readable(read_end.get(), left);
    if (!readable.ok()) {
      status = readable.status();
      break;
    }
    if (!*readable) continue;
    char chunk[4096];
    const ssize_t got = ::read(read_end.get(), chunk, sizeof(chunk));
    if (got == 0) break;
    if (got < 0 && errno != EINTR) {
      status = IoErrorFromErrno("read(bench stdout)", errno);
      break;
    }
    if (got > 0) out.append(chunk, static_cast<std::size_t>(got));
  }
  if (!status.ok()) kill(pid, SIGKILL);
  int wait_status = 0;
  while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {}
  KVF_RETURN_IF_ERROR(status);
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    return Unavailable("kvferry bench failed (exit status " + std::to_string(wait_status) +
                       "; see its stderr)");
  }
  return out;
}

}  // namespace

Result<BenchBaseline> run_bench_baseline(const BenchBaselineRequest& request, std::chrono::seconds limit) {
  std::vector<std::string> args = bench_arguments(request);
  BenchBaseline baseline;
  for (std::size_t i = 0; i < args.size(); ++i) baseline.command += (i ? " " : "") + args[i];
  KVF_ASSIGN_OR_RETURN(std::string out, run_capturing_stdout(std::move(args), limit));
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.value("op", "") != "read" || !j.contains("gbps")) continue;
    baseline.gbps = j.value("gbps", 0.0);
    baseline.p50_ms = j.value("p50_us", 0.0) / 1e3;
    baseline.ceiling_gbps = j.value("ceiling_gbps", 0.0);
    baseline.ceiling_name = j.value("ceiling_name", "");
    baseline.pool_blocks = std::max(2 * request.blocks, request.blocks + 64);
    if (!j.value("verified", true)) return Unavailable("kvferry bench reported a verification failure");
    return baseline;
  }
  return Corrupt("kvferry bench printed no read case (output: " + out.substr(0, 200) + ")");
}

}  // namespace kvferry::cli
