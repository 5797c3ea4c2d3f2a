// kvferry_test_peer: the other process of the multi-process and failure suites.
//
//   kvferry_test_peer --name NAME --size BYTES --seed N [--fill random|zero]
//                     [--peer-timeout-ms MS] [--lifetime-s S] [--mode serve]
//                     [--backend tcp|shm] [--shared 0|1] [--mem dram|vram --device N]
//                     [--push-to PORT] [--max-fds N] [--secret TEXT]
//
// Creates an Agent (tcp by default, or --backend), registers a page-aligned, pre-faulted buffer of
// BYTES filled from std::mt19937_64(seed) 8 bytes at a time (test_util.h's
// Buffer::randomize), listens on 127.0.0.1:0 and prints one line
//
//   READY <side-channel port> <buffer address, hex> <tcp data port, 0 if not found>
//
// then answers notifications until "quit", until its stdin reaches EOF (the test process
// is gone) or until --lifetime-s passes:
//   "checksum"   -> "checksum <hex of word_fnv1a64(buffer)>"
//   "echo X"     -> "X"
//   "deregister" -> deregisters the buffer, "deregistered" (or "deregister failed: ...")
//   "quit"       -> exits 0
//   anything else -> "got <message>"
// Only the public API and POSIX. The data port is found by scanning our own listening
// sockets (getsockopt SO_ACCEPTCONN + getsockname): the side channel and the tcp backend.
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>

#include "kvferry/kvferry.h"
#include "peer_process.h"
#ifdef KVFERRY_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using namespace std::chrono_literals;

int fail(const std::string& what) {
  std::fprintf(stderr, "kvferry_test_peer: %s\n", what.c_str());
  return 2;
}

std::uint16_t find_data_port(std::uint16_t side_port) {
  long max_fd = ::sysconf(_SC_OPEN_MAX);
  if (max_fd <= 0 || max_fd > 65536) max_fd = 65536;
  for (int fd = 3; fd < max_fd; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) continue;
    std::uint16_t port = 0;
    if (ss.ss_family == AF_INET) port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    else if (ss.ss_family == AF_INET6) port = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    if (port != 0 && port != side_port) return port;
  }
  return 0;
}

// True once the parent closed our stdin (or it is gone).
bool stdin_closed() {
  pollfd p{0, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  char c;
  return ::read(0, &c, 1) <= 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string name, fill = "random", mode = "serve", backend = "tcp";
  bool shared = false;  // pool from Agent::allocate_shared_memory (memfd)
  std::string mem_kind = "dram";  // vram: the pool is cudaMalloc'd on --device (a host mirror serves checksums)
  [[maybe_unused]] int device = 0;  // used with CUDA only
  std::uint64_t size = 0, seed = 0;
  long peer_timeout_ms = 5000, lifetime_s = 120, push_to = 0, max_fds = 0;
  std::string secret;  // AgentOptions::secret (its bytes); empty: none
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--name") name = v;
    else if (k == "--size") size = std::strtoull(v, nullptr, 10);
    else if (k == "--seed") seed = std::strtoull(v, nullptr, 10);
    else if (k == "--fill") fill = v;
    else if (k == "--peer-timeout-ms") peer_timeout_ms = std::strtol(v, nullptr, 10);
    else if (k == "--lifetime-s") lifetime_s = std::strtol(v, nullptr, 10);
    else if (k == "--mode") mode = v;
    else if (k == "--backend") backend = v;
    else if (k == "--shared") shared = std::string_view(v) == "1";
    else if (k == "--mem") mem_kind = v;
    else if (k == "--push-to") push_to = std::strtol(v, nullptr, 10);
    else if (k == "--max-fds") max_fds = std::strtol(v, nullptr, 10);
    else if (k == "--secret") secret = v;
    else if (k == "--device") device = static_cast<int>(std::strtol(v, nullptr, 10));
    else return fail("unknown option " + std::string(k));
  }
  if (name.empty() || size == 0 || mode != "serve" || (fill != "random" && fill != "zero"))
    return fail("usage: --name NAME --size BYTES --seed N [--fill random|zero] [--mode serve]");

  if (max_fds > 0) {  // a small descriptor table, to run out of it on purpose
    rlimit rl{static_cast<rlim_t>(max_fds), static_cast<rlim_t>(max_fds)};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return fail("setrlimit RLIMIT_NOFILE failed");
  }
  kvferry::AgentOptions o;
  o.name = name;
  if (backend != "all") o.backends = {backend};
  o.peer_timeout = std::chrono::milliseconds(peer_timeout_ms);
  o.secret.assign(secret.begin(), secret.end());
  auto created = kvferry::Agent::create(o);
  if (!created.ok()) return fail("Agent::create: " + created.status().to_string());
  std::unique_ptr<kvferry::Agent> agent = std::move(created).value();
  kvferry::SharedMemory shared_pool;
  void* mem = nullptr;
  if (shared) {
    auto pool = agent->allocate_shared_memory(size);
    if (!pool.ok()) return fail("allocate_shared_memory: " + pool.status().to_string());
    shared_pool = std::move(pool).value();
    mem = shared_pool.data();
  } else {
    mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return fail("mmap of " + std::to_string(size) + " bytes: " + std::strerror(errno));
  }
  auto* buf = static_cast<std::uint8_t*>(mem);
  if (fill == "random") {
    std::mt19937_64 rng(seed);
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      std::uint64_t v = rng();
      std::memcpy(buf + i, &v, 8);
    }
    for (; i < size; ++i) buf[i] = static_cast<std::uint8_t>(rng());
  } else {
    std::memset(buf, 0, size);  // pre-faults
  }

  kvferry::DescriptorList whole(kvferry::MemoryKind::kDram, {kvferry::make_descriptor(buf, size)});
  std::uint8_t* host_mirror = buf;  // what "checksum" hashes
#ifdef KVFERRY_HAVE_CUDA
  void* dev = nullptr;
  if (mem_kind == "vram") {
    if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&dev, size) != cudaSuccess ||
        cudaMemcpy(dev, buf, size, cudaMemcpyHostToDevice) != cudaSuccess)
      return fail("cudaMalloc/cudaMemcpy of the vram pool on GPU " + std::to_string(device) + " failed");
    buf = static_cast<std::uint8_t*>(dev);
    whole = kvferry::DescriptorList(kvferry::MemoryKind::kVram,
                                    {kvferry::make_descriptor(dev, size, static_cast<std::uint32_t>(device))});
  }
#endif
  if (mem_kind != "dram" && whole.kind() != kvferry::MemoryKind::kVram) return fail("--mem " + mem_kind + ": not built with CUDA");
  if (auto s = agent->register_memory(whole); !s.ok()) return fail("register_memory: " + s.to_string());
  auto port = agent->listen("127.0.0.1", 0);
  if (!port.ok()) return fail("listen: " + port.status().to_string());

  if (push_to > 0) {  // e.g. an impostor taking another agent's name (tests/identity_test.cc)
    auto pushed = agent->fetch_remote("127.0.0.1", static_cast<std::uint16_t>(push_to), true, 3s);
    std::fprintf(stderr, "push: %s\n", pushed.ok() ? ("ok, peer " + *pushed).c_str() : pushed.status().to_string().c_str());
  }
  std::printf("READY %u %" PRIx64 " %u\n", static_cast<unsigned>(*port), reinterpret_cast<std::uint64_t>(buf),
              static_cast<unsigned>(find_data_port(*port)));
  std::fflush(stdout);

  bool registered = true;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(lifetime_s);
  while (std::chrono::steady_clock::now() < end) {
    if (stdin_closed()) return 0;
    if (!agent->wait_for_notifications(100ms)) continue;
    for (auto& n : agent->take_notifications()) {
      const std::string& m = n.message;
      kvferry::Status s;
      if (m == "quit") {
        return 0;
      } else if (m == "checksum") {
        char hex[32];
#ifdef KVFERRY_HAVE_CUDA
        if (whole.kind() == kvferry::MemoryKind::kVram && cudaMemcpy(host_mirror, buf, size, cudaMemcpyDeviceToHost) != cudaSuccess)
          std::memset(host_mirror, 0, size);
#endif
        std::snprintf(hex, sizeof hex, "%016" PRIx64, kvferry::testing::word_fnv1a64(host_mirror, size));
        s = agent->notify(n.from, std::string("checksum ") + hex);
      } else if (m.rfind("echo ", 0) == 0) {
        s = agent->notify(n.from, m.substr(5));
      } else if (m == "deregister") {
        kvferry::Status d = registered ? agent->deregister_memory(whole) : kvferry::Status::Ok();
        if (d.ok()) registered = false;
        s = agent->notify(n.from, d.ok() ? std::string("deregistered") : "deregister failed: " + d.to_string());
      } else {
        s = agent->notify(n.from, "got " + m);
      }
      if (!s.ok()) std::fprintf(stderr, "kvferry_test_peer %s: notify '%s': %s\n", name.c_str(), n.from.c_str(),
                                s.to_string().c_str());
    }
  }
  return 0;
}
