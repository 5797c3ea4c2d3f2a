// Helpers of the failure suites (tests/failure_*_test.cc): the backends they run over
// (the fixture `Failure`, one parameter per backend, fault injection off and on), raw
// sockets for garbage on listening ports, frame headers, busy links and waits for peer loss.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend_registry.h"
#include "peer_test_util.h"
#include "test_memory.h"

namespace kvferry::testing {

// One backend of the failure suite, with fault injection off or on.
struct FailureRoute {
  std::string backend;
  bool faults = false;
  // The peer's data port (the one listening socket besides its side channel) speaks the
  // frames of tcp_header() below: garbage cases aim at it too.
  bool tcp_frames = false;
};
inline void PrintTo(const FailureRoute& r, std::ostream* os) { *os << r.backend << (r.faults ? " with faults" : ""); }
inline std::string failure_route_name(const ::testing::TestParamInfo<FailureRoute>& p) {
  return p.param.backend + (p.param.faults ? "_WithFaults" : "_Plain");
}
// A new backend joins the suite with one line here; what each case expects of it follows
// from its capabilities (FailureCapabilities below), never from its name. The one thing
// said by name is a wire format: only tcp's data port speaks the frames the garbage case
// forges (tcp_header()).
inline std::vector<FailureRoute> failure_routes() {
  std::vector<FailureRoute> out;
  for (const char* b : {"loopback", "tcp", "shm", "file", "ucx", "cuda_ipc"})
    for (bool faults : {false, true}) out.push_back({b, faults, std::string_view(b) == "tcp"});
  return out;
}

// What a backend's capabilities say about how it fails.
struct FailureCapabilities {
  bool host_memory = false;   // moves our host memory
  // The memory the cases use on both sides: host memory where the backend moves it, else
  // GPU memory (a GPU-only backend; those cases skip where no GPU is present).
  MemoryKind memory = MemoryKind::kDram;
  bool peer_process = false;  // links agents of different processes (there is a peer to kill or stop)
  bool own_files = false;     // its targets are the agent's own files
  // The initiator moves the bytes itself through memory the peer shares with it (a
  // same-host backend: mapped memfd or process_vm_*): a stopped peer cannot stop a copy,
  // only the answers it owes (a notification's acknowledgement) can be missing.
  bool initiator_copies = false;
};

// Asks the backend's factory (the backend is made once, for its capabilities only).
inline Result<FailureCapabilities> failure_capabilities(const std::string& backend) {
  const detail::BackendFactory* f = detail::BackendRegistry::builtin().find(backend);
  if (!f) return NotFound("backend '" + backend + "' is not compiled into this build");
  if (Status usable = f->probe(); !usable.ok()) return usable;
  detail::BackendContext context;
  context.agent_name = "capabilities-probe";
  auto made = f->create(context);
  if (!made.ok()) return made.status();
  const detail::Capabilities c = (*made)->capabilities();
  FailureCapabilities out;
  out.host_memory = c.local_kinds.contains(MemoryKind::kDram);
  if (!out.host_memory && c.local_kinds.contains(MemoryKind::kVram)) out.memory = MemoryKind::kVram;
  out.peer_process = !c.same_process_only;
  out.own_files = c.same_process_only && c.remote_kinds.contains(MemoryKind::kFile);
  out.initiator_copies = c.same_host_only;
  return out;
}

// Fault injection mixed as in the guarantees suite: delays, failures, truncations, stalls.
inline std::map<std::string, std::string> failure_fault_settings(bool on) {
  if (!on) return {};
  return {{"fault.seed", "11"},      {"fault.delay_us", "300"}, {"fault.fail", "100"},
          {"fault.truncate", "100"}, {"fault.stall", "100"}};
}

// A 1 GiB zero-filled peer, and an initiator with 256 MiB registered that knows it.
struct LoadedPeer {
  std::unique_ptr<PeerProcess> peer;
  std::unique_ptr<TestMemory> local;
  std::unique_ptr<Agent> agent;
};


// The fixture of every Failure.* case: skips routes not usable here, and makes agents and
// peer processes over the route's backend.
class Failure : public ::testing::TestWithParam<FailureRoute> {
 public:
  void SetUp() override {
    auto caps = failure_capabilities(backend());
    if (!caps.ok()) GTEST_SKIP() << backend() << " cannot run here: " << caps.status().to_string();
    caps_ = *caps;
    if (!caps_.host_memory && caps_.memory != MemoryKind::kVram)
      GTEST_SKIP() << backend() << " moves neither host nor GPU memory, which these cases use";
    if (caps_.memory == MemoryKind::kVram && visible_gpus() == 0)
      GTEST_SKIP() << backend() << " moves GPU memory only: needs a CUDA GPU";
  }

  const std::string& backend() const { return GetParam().backend; }
  bool faults() const { return GetParam().faults; }
  const FailureCapabilities& caps() const { return caps_; }
  MemoryKind memory() const { return caps_.memory; }
  bool gpu() const { return caps_.memory == MemoryKind::kVram; }
  // Our memory: GPU 0 for vram; the peer's: another GPU where there are two.
  std::uint32_t peer_device() const { return gpu() && visible_gpus() > 1 ? 1 : 0; }

  // `size` zeroed bytes of the route's memory kind, ours (a failed allocation fails the case).
  std::unique_ptr<TestMemory> local_memory(std::size_t size) const {
    std::string why;
    auto m = TestMemory::make(memory(), 0, size, &why);
    EXPECT_TRUE(m) << why;
    return m;
  }
  // The peer process's pool as a remote list of the route's memory kind.
  DescriptorList remote(const PeerProcess& p, std::uint64_t offset, std::uint64_t length) const {
    return peer_range(p, memory(), peer_device(), offset, length);
  }

  // An error fault injection made (when it is on): accepted wherever the case expects
  // another outcome, since the injected fault came first.
  bool injected(const Status& s) const {
    return faults() && !s.ok() && s.message().find("fault injection") != std::string::npos;
  }

  std::unique_ptr<Agent> make_agent(const std::string& name,
                                    std::chrono::milliseconds peer_timeout = std::chrono::milliseconds(5000)) const {
    AgentOptions o;
    o.name = name;
    o.backends = {backend()};
    if (caps_.own_files) o.backends.push_back("loopback");  // notifications to itself
    o.backend_params = failure_fault_settings(faults());
    o.peer_timeout = peer_timeout;
    auto a = Agent::create(o);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return a.ok() ? std::move(a).value() : nullptr;
  }

  // A kvferry_test_peer over the route's backend (its pool shared memory where a
  // same-host backend can map it: the zero-copy path).
  std::unique_ptr<PeerProcess> spawn_peer(PeerOptions o) const {
    o.backend = backend();
    o.shared = caps_.initiator_copies && !gpu();
    o.mem = gpu() ? "vram" : "dram";
    o.device = static_cast<int>(peer_device());
    std::string error;
    auto p = PeerProcess::spawn(o, &error);
    EXPECT_TRUE(p) << "cannot start kvferry_test_peer over " << backend() << ": " << error;
    return p;
  }

  // A 1 GiB zero-filled peer, and an initiator with 256 MiB registered that knows it.
  // Setting up 1 GiB takes the peer well under a second in a plain build but 11.5 s under
  // ThreadSanitizer (its shadow memory is faulted in with the buffer): the wait for READY
  // is set-up, not one of the bounds these suites check, so it is generous.
  void load_peer(const std::string& name, std::chrono::milliseconds peer_timeout, LoadedPeer* out) const;

  // Posts and waits; with faults on, retries an attempt that an injected fault failed.
  Status run_until_done(TransferRequest& r, std::chrono::milliseconds timeout) const {
    Status s;
    for (int attempt = 0; attempt < 20; ++attempt) {
      s = r.post();
      if (s.ok()) s = r.wait(timeout);
      if (s.ok() || !faults()) break;
    }
    return s;
  }

 private:
  FailureCapabilities caps_;
};


// A socket fd closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

inline sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

inline Fd raw_connect(std::uint16_t port) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa = loopback(port);
  timeval tv{2, 0};
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return Fd();
  return s;
}

inline void send_bytes(const Fd& s, const void* p, std::size_t n) {
  // The server may drop us half-way: errors are expected and ignored.
  [[maybe_unused]] ssize_t rc = ::send(s.fd, p, n, MSG_NOSIGNAL);
}

// Reads until EOF/reset or `timeout`; true if the server closed the connection.
inline bool server_closes(const Fd& s, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{s.fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    ssize_t n = ::recv(s.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
  return false;
}

inline std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

inline void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// Side-channel frame header: magic "KVFS" u32 | type u16 | reserved u16 | length u32.
inline std::vector<std::uint8_t> side_header(std::uint16_t type, std::uint32_t length) {
  std::vector<std::uint8_t> h;
  put_le(h, 0x5346564b, 4);
  put_le(h, type, 2);
  put_le(h, 0, 2);
  put_le(h, length, 4);
  return h;
}

// tcp backend frame header (32 bytes): magic u16 0x464b | type u8 | flags u8 | aux u32 |
// req u64 | addr u64 | len u64.
inline std::vector<std::uint8_t> tcp_header(std::uint8_t type, std::uint64_t addr, std::uint64_t len) {
  std::vector<std::uint8_t> h;
  put_le(h, 0x464b, 2);
  put_le(h, type, 1);
  put_le(h, 0, 1);
  put_le(h, 0, 4);
  put_le(h, 1, 8);
  put_le(h, addr, 8);
  put_le(h, len, 8);
  return h;
}

// Posts `count` transfers of `local.size()` bytes with the peer (cycling over its
// buffer), so that the link is busy for a while.
inline std::vector<TransferRequest> post_transfers(const Failure& f, Agent& a, const PeerProcess& peer,
                                                   const TestMemory& local, int count,
                                                   TransferOp op = TransferOp::kRead) {
  std::vector<TransferRequest> reqs;
  const std::uint64_t chunk = local.size();
  const std::uint64_t slots = peer.size() / chunk;
  for (int i = 0; i < count; ++i) {
    auto r = a.create_transfer(op, local.whole(), peer.name(),
                               f.remote(peer, (static_cast<std::uint64_t>(i) % slots) * chunk, chunk));
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) break;
    Status s = r->post();
    EXPECT_TRUE(s.ok()) << s.to_string();
    reqs.push_back(std::move(r).value());
  }
  return reqs;
}

// Waits for every request up to one shared deadline; returns how many ended in kPeerLost
// (not counting injected faults, which `injected` recognises) and flags any other failure. `done`, when given,
// gets which requests finished.
template <typename Injected>
int wait_all_lost(std::vector<TransferRequest>& reqs, std::chrono::steady_clock::time_point deadline,
                  Injected injected, std::vector<bool>* done = nullptr) {
  int lost = 0;
  if (done) done->assign(reqs.size(), false);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto left = std::max<std::chrono::steady_clock::duration>(deadline - std::chrono::steady_clock::now(),
                                                        std::chrono::steady_clock::duration::zero());
    Status s = reqs[i].wait(left);
    if (s.ok()) {  // finished before the peer went away
      if (done) (*done)[i] = true;
      continue;
    }
    if (injected(s)) continue;  // an injected fault came first
    lost += s.code() == StatusCode::kPeerLost;
    if (s.code() != StatusCode::kPeerLost) ADD_FAILURE() << "request " << i << ": " << s.to_string();
  }
  return lost;
}


inline void Failure::load_peer(const std::string& name, std::chrono::milliseconds peer_timeout,
                               LoadedPeer* out) const {
  out->peer = spawn_peer({.name = name, .size = 1u << 30, .seed = 0, .fill = "zero", .peer_timeout = peer_timeout,
                          .ready_timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(out->peer);
  out->agent = make_agent("initiator", peer_timeout);
  ASSERT_TRUE(out->agent);
  out->local = local_memory(256u << 20);
  ASSERT_TRUE(out->local);
  KVF_ASSERT_OK(out->agent->register_memory(out->local->whole()));
  ASSERT_TRUE(out->agent->fetch_remote("127.0.0.1", out->peer->port()).ok());
}

}  // namespace kvferry::testing
