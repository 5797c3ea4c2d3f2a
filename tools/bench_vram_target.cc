// The target process of `kvferry bench --mem vram` (bench_vram.h) and how the initiator
// starts it and talks to it.
#ifdef KVFERRY_HAVE_CUDA
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "bench_vram.h"
#include "bench_vram_pool.h"
#include "host_pool.h"

extern char** environ;

namespace kvferry::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;


// The target's pool: GPU memory, or host memory (shared memory when the backend is shm,
// so that the initiator can map it).
class TargetPool {
 public:
  static Result<TargetPool> allocate(const BenchOptions& o, Agent& agent) {
    TargetPool p;
    if (o.peer_mem == "vram") {
      KVF_ASSIGN_OR_RETURN(auto v, VramPool::allocate(o.pool_shape(), o.device));
      p.vram_.emplace(std::move(v));
    } else {
      KVF_ASSIGN_OR_RETURN(auto h, HostPool::allocate(o.pool_shape(), 0xA5, o.backend == "shm" ? &agent : nullptr));
      p.host_.emplace(std::move(h));
    }
    return p;
  }
  DescriptorList region() const { return vram_ ? vram_->region() : host_->region(); }
  std::uint64_t address() const { return vram_ ? vram_->address() : host_->address(); }
  Status fill(std::uint64_t seed) {
    if (vram_) return vram_->fill_pattern(seed);
    fill_pattern_bytes(host_->base(), host_->bytes(), seed);
    return Status::Ok();
  }
  Status poison() {
    if (vram_) return vram_->poison();
    std::memset(host_->base(), 0xA5, host_->bytes());
    return Status::Ok();
  }
  Result<std::uint64_t> checksum() const {
    if (vram_) return vram_->checksum();
    return checksum_bytes(host_->base(), host_->bytes());
  }

 private:
  std::optional<VramPool> vram_;
  std::optional<HostPool> host_;
};

std::string answer(TargetPool& pool, const std::string& m) {
  unsigned port = 0;
  std::uint64_t bytes = 0;
  if (m.rfind("fill ", 0) == 0) {
    Status s = pool.fill(std::strtoull(m.c_str() + 5, nullptr, 10));
    return s.ok() ? "filled" : s.to_string();
  }
  if (m == "poison") {
    Status s = pool.poison();
    return s.ok() ? "poisoned" : s.to_string();
  }
  if (m == "checksum") {
    auto sum = pool.checksum();
    return sum.ok() ? checksum_answer(*sum) : sum.status().to_string();
  }
  if (std::sscanf(m.c_str(), "sink %u %" SCNu64, &port, &bytes) == 2 ||
      std::sscanf(m.c_str(), "source %u %" SCNu64, &port, &bytes) == 2) {
    Status s = serve_socket_stream(static_cast<std::uint16_t>(port), bytes, m[1] == 'o');
    return s.ok() ? "streamed" : s.to_string();
  }
  return "unknown " + m;
}

}  // namespace

int run_vram_target(const BenchOptions& o) {
  AgentOptions ao;
  ao.name = "vram-target";
  ao.backends = {o.backend};
  ao.backend_params = o.local_params;
  auto agent = Agent::create(ao);
  if (!agent.ok()) return std::fprintf(stderr, "vram target: %s\n", agent.status().to_string().c_str()), 1;
  Agent& a = **agent;
  auto pool = TargetPool::allocate(o, a);
  if (!pool.ok()) return std::fprintf(stderr, "vram target: %s\n", pool.status().to_string().c_str()), 1;
  if (Status s = a.register_memory(pool->region()); !s.ok())
    return std::fprintf(stderr, "vram target: register: %s\n", s.to_string().c_str()), 1;
  auto port = a.listen("127.0.0.1", 0);
  if (!port.ok()) return std::fprintf(stderr, "vram target: listen: %s\n", port.status().to_string().c_str()), 1;
  std::printf("READY %u %" PRIx64 "\n", static_cast<unsigned>(*port), pool->address());
  std::fflush(stdout);
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char c;
      if (::read(0, &c, 1) <= 0) return 0;  // the initiator is gone
    }
    if (!a.wait_for_notifications(100ms)) continue;
    for (auto& n : a.take_notifications()) {
      if (n.message == "quit") return 0;
      (void)a.notify(n.from, answer(*pool, n.message));
    }
  }
}

std::string checksum_answer(std::uint64_t sum) {
  char b[32];
  std::snprintf(b, sizeof b, "%016" PRIx64, sum);
  return std::string("checksum ") + b;
}

VramTarget::~VramTarget() {
  if (in >= 0) ::close(in);  // the target exits on EOF
  if (out >= 0) ::close(out);
  if (pid > 0) {
    for (int i = 0; i < 50 && ::waitpid(pid, nullptr, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
}

Status spawn_vram_target(const BenchOptions& o, int peer_device, VramTarget* t) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return IoErrorFromErrno("pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<std::string> args = {"/proc/self/exe", "bench", "--mem", "vram", "--vram-target",
                                   "--backend", o.backend, "--device", std::to_string(peer_device),
                                   "--peer-mem", o.peer_mem, "--layers", std::to_string(o.layers),
                                   "--blocks", std::to_string(o.blocks), "--block-size", std::to_string(o.block_size)};
  for (const auto& p : o.params) {
    args.push_back("--param");
    args.push_back(p);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = ::posix_spawn(&t->pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  t->in = in[1];
  t->out = out[0];
  if (rc != 0) return IoErrorFromErrno("posix_spawn of the vram target", rc);
  std::string line;
  const auto deadline = Clock::now() + 60s;
  while (line.find('\n') == std::string::npos) {
    pollfd p{t->out, POLLIN, 0};
    if (Clock::now() > deadline) return Timeout("the vram target did not start within 60 s");
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[256];
    ssize_t n = ::read(t->out, buf, sizeof buf);
    if (n <= 0) return Unavailable("the vram target exited before READY (see its stderr)");
    line.append(buf, static_cast<std::size_t>(n));
  }
  unsigned port = 0;
  if (std::sscanf(line.c_str(), "READY %u %" SCNx64, &port, &t->address) != 2) return Corrupt("bad READY: " + line);
  t->port = static_cast<std::uint16_t>(port);
  return Status::Ok();
}

std::string ask_vram_target(Agent& a, const std::string& message) {
  if (!a.notify("vram-target", message).ok()) return "notify failed";
  return await_vram_target(a);
}

std::string await_vram_target(Agent& a) {
  const auto deadline = Clock::now() + 120s;
  while (Clock::now() < deadline) {
    if (!a.wait_for_notifications(1s)) continue;
    for (auto& n : a.take_notifications())
      if (n.from == "vram-target") return n.message;
  }
  return "no answer";
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
