// `kvferry bench --mem vram`: KV blocks between GPU pools of two processes through the
// cuda_ipc backend, with the ceiling measured in the same run: a contiguous
// cudaMemcpyPeerAsync of the same total bytes between the same two GPUs.
//
// The initiator spawns its target (this binary, `bench --mem vram --vram-target`), which
// allocates a pool of the same shape on --peer-device, registers it and answers
// notifications: "fill SEED", "poison", "checksum", "quit" (also exits when its stdin
// closes). Verification (--verify): fresh pattern data, a poisoned destination, every
// byte compared (write: the target's checksum of its whole pool against the expected
// image; read: our whole pool downloaded and compared).
#include <cinttypes>
#include <cstdio>

#include "bench_roles.h"

#ifndef KVFERRY_HAVE_CUDA
namespace kvferry::cli {
int run_vram_bench(const BenchOptions&) {
  std::fprintf(stderr, "kvferry bench: --mem vram needs a build with CUDA (KVFERRY_ENABLE_CUDA)\n");
  return 2;
}
}  // namespace kvferry::cli
#else
#include <cuda_runtime.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "block_choice.h"
#include "bench_vram_pool.h"

extern char** environ;

namespace kvferry::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string hex64(std::uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "%016" PRIx64, v);
  return b;
}

int run_target(const BenchOptions& o) {
  auto pool = VramPool::allocate(o.pool_shape(), o.device);
  if (!pool.ok()) return std::fprintf(stderr, "vram target: %s\n", pool.status().to_string().c_str()), 1;
  AgentOptions ao;
  ao.name = "vram-target";
  ao.backends = {o.backend};
  ao.backend_params = o.local_params;
  auto agent = Agent::create(ao);
  if (!agent.ok()) return std::fprintf(stderr, "vram target: %s\n", agent.status().to_string().c_str()), 1;
  Agent& a = **agent;
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
      std::string reply;
      if (n.message == "quit") return 0;
      if (n.message.rfind("fill ", 0) == 0) {
        Status s = pool->fill_pattern(std::strtoull(n.message.c_str() + 5, nullptr, 10));
        reply = s.ok() ? "filled" : s.to_string();
      } else if (n.message == "poison") {
        Status s = pool->poison();
        reply = s.ok() ? "poisoned" : s.to_string();
      } else if (n.message == "checksum") {
        auto sum = pool->checksum();
        reply = sum.ok() ? "checksum " + hex64(*sum) : sum.status().to_string();
      } else {
        reply = "unknown " + n.message;
      }
      (void)a.notify(n.from, reply);
    }
  }
}

struct Target {
  pid_t pid = -1;
  int in = -1, out = -1;
  std::uint16_t port = 0;
  std::uint64_t address = 0;
  ~Target() {
    if (in >= 0) ::close(in);  // the target exits on EOF
    if (out >= 0) ::close(out);
    if (pid > 0) {
      for (int i = 0; i < 50 && ::waitpid(pid, nullptr, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

Status spawn_target(const BenchOptions& o, int peer_device, Target* t) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return IoErrorFromErrno("pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<std::string> args = {"/proc/self/exe", "bench", "--mem", "vram", "--vram-target",
                                   "--backend", o.backend, "--device", std::to_string(peer_device),
                                   "--layers", std::to_string(o.layers), "--blocks", std::to_string(o.blocks),
                                   "--block-size", std::to_string(o.block_size)};
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

std::string ask(Agent& a, const std::string& message) {
  if (!a.notify("vram-target", message).ok()) return "notify failed";
  const auto deadline = Clock::now() + 120s;
  while (Clock::now() < deadline) {
    if (!a.wait_for_notifications(1s)) continue;
    for (auto& n : a.take_notifications())
      if (n.from == "vram-target") return n.message;
  }
  return "no answer";
}

// Best of `reps` contiguous cudaMemcpyPeerAsync of `bytes` (GB/s).
double peer_copy_ceiling(int src_dev, const void* src, int dst_dev, void* dst, std::uint64_t bytes, int reps) {
  cudaSetDevice(src_dev);
  if (src_dev != dst_dev && cudaDeviceEnablePeerAccess(dst_dev, 0) != cudaSuccess) cudaGetLastError();  // direct P2P
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = Clock::now();
    cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, s);
    cudaStreamSynchronize(s);
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);  // first: warm-up
  }
  cudaStreamDestroy(s);
  return best;
}

}  // namespace

int run_vram_bench(const BenchOptions& o) {
  if (o.backend != "cuda_ipc") {
    std::fprintf(stderr, "kvferry bench --mem vram: only --backend cuda_ipc so far (vram over tcp/shm staging is "
                         "not built yet)\n");
    return 2;
  }
  if (o.vram_target) return run_target(o);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::fprintf(stderr, "kvferry bench --mem vram: no CUDA GPU here\n");
    return 2;
  }
  const int peer_device = o.peer_device >= 0 ? o.peer_device : (o.device + 1) % gpus;
  if (o.device >= gpus || peer_device >= gpus) {
    std::fprintf(stderr, "kvferry bench --mem vram: %d GPU(s) here\n", gpus);
    return 2;
  }
  const PoolShape shape = o.pool_shape();
  auto pool = VramPool::allocate(shape, o.device);
  if (!pool.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", pool.status().to_string().c_str()), 1;
  Target target;
  if (Status s = spawn_target(o, peer_device, &target); !s.ok())
    return std::fprintf(stderr, "kvferry bench: %s\n", s.to_string().c_str()), 1;
  AgentOptions ao;
  ao.name = "vram-initiator";
  ao.backends = {o.backend};
  ao.backend_params = o.local_params;
  auto agent = Agent::create(ao);
  if (!agent.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", agent.status().to_string().c_str()), 1;
  Agent& a = **agent;
  Status st = a.register_memory(pool->region());
  if (st.ok()) st = a.fetch_remote("127.0.0.1", target.port).status();
  auto local = a.prepare_local(pool->block_descriptors());
  auto remote = a.prepare_remote("vram-target", VramPool::block_descriptors(shape, target.address, peer_device));
  if (st.ok() && !local.ok()) st = local.status();
  if (st.ok() && !remote.ok()) st = remote.status();
  if (!st.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", st.to_string().c_str()), 1;

  const std::uint64_t seed = o.seed ? o.seed : static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  const auto local_ids = indices_in_every_layer(
      choose_block_ids(o.block_pattern, local_side_seed(seed, 0), shape.blocks_per_layer, o.blocks), o.layers,
      shape.blocks_per_layer);
  const auto remote_ids = indices_in_every_layer(
      choose_block_ids(o.block_pattern, remote_side_seed(seed, 0), shape.blocks_per_layer, o.blocks), o.layers,
      shape.blocks_per_layer);
  const std::uint64_t bytes = std::uint64_t{o.layers} * o.blocks * o.block_size;
  std::string copy = "kernel";
  if (auto it = o.local_params.find(o.backend + ".copy"); it != o.local_params.end()) copy = it->second;
  std::printf("kvferry bench --mem vram: %s copy=%s, GPU%d -> GPU%d (another process), %u layers x %u %s blocks x %" PRIu64
              " B = %.3f GB per request, %d iterations\n",
              o.backend.c_str(), copy.c_str(), o.device, peer_device, o.layers, o.blocks, to_string(o.block_pattern),
              o.block_size, static_cast<double>(bytes) / 1e9, o.iterations);

  // The ceiling: the same bytes, one contiguous peer copy each way, in this process.
  void* peer_buf = nullptr;
  cudaSetDevice(peer_device);
  if (cudaMalloc(&peer_buf, bytes) != cudaSuccess) return std::fprintf(stderr, "kvferry bench: cudaMalloc failed\n"), 1;
  const double ceiling_write = peer_copy_ceiling(o.device, pool->data(), peer_device, peer_buf, bytes, o.ceiling_reps);
  const double ceiling_read = peer_copy_ceiling(peer_device, peer_buf, o.device, pool->data(), bytes, o.ceiling_reps);
  cudaSetDevice(peer_device);
  cudaFree(peer_buf);

  int rc = 0;
  std::printf("%-6s %10s %10s %10s %12s %7s %9s\n", "op", "median_ms", "p99_ms", "GB/s", "ceiling_GB/s", "ratio",
              "verified");
  for (TransferOp op : o.ops) {
    const bool write = op == TransferOp::kWrite;
    auto req = a.create_transfer(op, *local, local_ids, *remote, remote_ids);
    if (!req.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", req.status().to_string().c_str()), 1;
    std::vector<double> ms;
    for (int i = 0; i < o.warmup + o.iterations; ++i) {
      const auto t0 = Clock::now();
      Status s = req->post();
      if (s.ok()) s = req->wait(60s);
      if (!s.ok()) return std::fprintf(stderr, "kvferry bench: transfer: %s\n", s.to_string().c_str()), 1;
      if (i >= o.warmup) ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2], p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    const double gbps = static_cast<double>(bytes) / (median / 1e3) / 1e9;
    const double ceiling = write ? ceiling_write : ceiling_read;
    std::string verified = "-";
    if (o.verify) {
      const std::uint64_t data_seed = seed ^ (write ? 0x57 : 0x52);
      bool good = false;
      if (write) {
        good = pool->fill_pattern(data_seed).ok() && ask(a, "poison") == "poisoned" && req->post().ok() &&
               req->wait(60s).ok();
        if (good) {
          auto expect = expected_image(shape, data_seed, local_ids, remote_ids);
          good = ask(a, "checksum") == "checksum " + hex64(VramPool::checksum_of(expect));
        }
      } else {
        good = pool->poison().ok() && ask(a, "fill " + std::to_string(data_seed)) == "filled" && req->post().ok() &&
               req->wait(60s).ok();
        if (good) {
          auto expect = expected_image(shape, data_seed, remote_ids, local_ids);
          auto got = pool->download();
          good = got.ok() && *got == expect;
        }
      }
      verified = good ? "yes" : "FAILED";
      if (!good) rc = 3;
    }
    std::printf("%-6s %10.3f %10.3f %10.1f %12.1f %6.1f%% %9s\n", write ? "write" : "read", median, p99, gbps, ceiling,
                100.0 * gbps / ceiling, verified.c_str());
    if (o.json)
      std::printf("{\"mem\":\"vram\",\"backend\":\"%s\",\"copy\":\"%s\",\"op\":\"%s\",\"device\":%d,\"peer_device\":%d,"
                  "\"layers\":%u,\"blocks\":%u,\"block_size\":%" PRIu64 ",\"bytes\":%" PRIu64
                  ",\"median_ms\":%.4f,\"p99_ms\":%.4f,\"gbps\":%.2f,\"ceiling_gbps\":%.2f,\"ratio\":%.4f,"
                  "\"verified\":\"%s\"}\n",
                  o.backend.c_str(), copy.c_str(), write ? "write" : "read", o.device, peer_device, o.layers, o.blocks,
                  o.block_size, bytes, median, p99, gbps, ceiling, gbps / ceiling, verified.c_str());
    std::fflush(stdout);
  }
  (void)a.notify("vram-target", "quit");
  return rc;
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
