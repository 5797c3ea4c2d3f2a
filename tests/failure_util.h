// Helpers of the failure suites (tests/failure_*_test.cc): raw sockets for garbage on
// listening ports, frame headers, busy links and waits for peer loss.
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

#include "peer_test_util.h"

namespace kvferry::testing {


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
inline std::vector<TransferRequest> post_transfers(Agent& a, const PeerProcess& peer, Buffer& local, int count,
                                                   TransferOp op = TransferOp::kRead) {
  std::vector<TransferRequest> reqs;
  const std::uint64_t chunk = local.size();
  const std::uint64_t slots = peer.size() / chunk;
  for (int i = 0; i < count; ++i) {
    auto r = a.create_transfer(op, local.whole(), peer.name(),
                               remote_range(peer, (static_cast<std::uint64_t>(i) % slots) * chunk, chunk));
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) break;
    Status s = r->post();
    EXPECT_TRUE(s.ok()) << s.to_string();
    reqs.push_back(std::move(r).value());
  }
  return reqs;
}

// Waits for every request up to one shared deadline; returns how many ended in kPeerLost
// and flags any other failure.
inline int wait_all_lost(std::vector<TransferRequest>& reqs, std::chrono::steady_clock::time_point deadline) {
  int lost = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto left = std::max<std::chrono::steady_clock::duration>(deadline - std::chrono::steady_clock::now(),
                                                        std::chrono::steady_clock::duration::zero());
    Status s = reqs[i].wait(left);
    if (s.ok()) continue;  // finished before the peer went away
    EXPECT_EQ(s.code(), StatusCode::kPeerLost) << "request " << i << ": " << s.to_string();
    lost += s.code() == StatusCode::kPeerLost;
  }
  return lost;
}

// A 1 GiB zero-filled tcp peer, and a tcp initiator with 256 MiB registered that knows it.
struct LoadedPeer {
  std::unique_ptr<PeerProcess> peer;
  Buffer local{256u << 20};
  std::unique_ptr<Agent> agent;
};

// Setting up 1 GiB takes the peer well under a second in a plain build but 11.5 s under
// ThreadSanitizer (its shadow memory is faulted in with the buffer): the wait for READY
// is set-up, not one of the bounds these suites check, so it is generous.
inline void load_peer(const std::string& name, std::chrono::milliseconds peer_timeout, LoadedPeer* out) {
  out->peer = spawn_peer({.name = name, .size = 1u << 30, .seed = 0, .fill = "zero", .peer_timeout = peer_timeout,
                          .ready_timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(out->peer);
  out->agent = make_agent("initiator", suite_backend(), peer_timeout);
  ASSERT_TRUE(out->agent);
  KVF_ASSERT_OK(out->agent->register_memory(out->local.whole()));
  ASSERT_TRUE(out->agent->fetch_remote("127.0.0.1", out->peer->port()).ok());
}

// ---------------------------------------------------------------------------------------

}  // namespace kvferry::testing
