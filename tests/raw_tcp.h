// A peer that speaks the wire by hand, on raw sockets: tests that replay, forge or break
// frames (authentication replays, hostile segment tables) send exactly the bytes they
// choose and read exactly what comes back.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backends/tcp/tcp_wire.h"
#include "core/byte_io.h"

namespace kvferry::testing {

// A blocking connection to 127.0.0.1:port (fd -1 if it failed); receives time out after 3 s.
struct Sock {
  int fd = -1;
  explicit Sock(std::uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~Sock() {
    if (fd >= 0) ::close(fd);
  }
  void put(std::span<const std::uint8_t> b) const { [[maybe_unused]] auto rc = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL); }
  std::vector<std::uint8_t> get(std::size_t n) const {
    std::vector<std::uint8_t> out(n);
    std::size_t have = 0;
    while (have < n) {
      ssize_t rc = ::recv(fd, out.data() + have, n - have, 0);
      if (rc <= 0) break;
      have += static_cast<std::size_t>(rc);
    }
    out.resize(have);
    return out;
  }
};

// A tcp backend frame: header (type, len = payload size) then the payload.
inline std::vector<std::uint8_t> tcp_frame(detail::tcp::FrameType type, std::span<const std::uint8_t> payload) {
  detail::tcp::WireHeader h;
  h.type = static_cast<std::uint8_t>(type);
  h.len = payload.size();
  std::vector<std::uint8_t> out(sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// A stream's hello: this version, session `session`, stream 0 of 1, to agent `target`
// from agent `from` (an authenticating initiator appends its nonce).
inline std::vector<std::uint8_t> tcp_hello(const std::string& target, const std::string& from, std::uint64_t session) {
  detail::ByteWriter w;
  w.u32(detail::tcp::kProtocolVersion);
  w.u64(session);
  w.u32(0);  // stream index
  w.u32(1);  // stream count
  w.u16(static_cast<std::uint16_t>(target.size()));
  w.str(target);
  w.u16(static_cast<std::uint16_t>(from.size()));
  w.str(from);
  return w.take();
}

// (header, payload) of the next tcp frame; magic 0 when the connection ended.
inline std::pair<detail::tcp::WireHeader, std::vector<std::uint8_t>> tcp_reply(const Sock& s) {
  detail::tcp::WireHeader h{};
  h.magic = 0;
  auto raw = s.get(sizeof h);
  if (raw.size() != sizeof h) return {h, {}};
  std::memcpy(&h, raw.data(), sizeof h);
  return {h, s.get(std::min<std::uint64_t>(h.len, 4096))};
}

}  // namespace kvferry::testing
