#include "core/socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvferry::detail {
namespace {

int ms_until(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000 ? 1'000'000 : static_cast<int>(left + 1);
}

// Waits for `events` on fd; Timeout if the deadline passes first.
Status wait_fd(int fd, short events, Deadline deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, ms_until(deadline));
    if (rc > 0) return Status::Ok();
    if (rc == 0) return Timeout(std::string(what) + " timed out");
    if (errno != EINTR) return IoErrorFromErrno(what, errno);
  }
}

Result<addrinfo*> resolve(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) return Unavailable("cannot resolve '" + host + "': " + gai_strerror(rc));
  return res;
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Status parse_host_port(const std::string& text, std::string* host, std::uint16_t* port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size())
    return InvalidArgument("'" + text + "' is not HOST:PORT");
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned long p = 0;
  for (char c : text.substr(colon + 1)) {
    if (c < '0' || c > '9') return InvalidArgument("'" + text + "': port is not a number");
    p = p * 10 + static_cast<unsigned long>(c - '0');
    if (p > 65535) return InvalidArgument("'" + text + "': port above 65535");
  }
  *host = h.empty() ? "127.0.0.1" : h;
  *port = static_cast<std::uint16_t>(p);
  return Status::Ok();
}

Status set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0) return IoErrorFromErrno("fcntl(F_GETFL)", errno);
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, flags) < 0) return IoErrorFromErrno("fcntl(F_SETFL)", errno);
  return Status::Ok();
}

Status set_nodelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
    return IoErrorFromErrno("setsockopt(TCP_NODELAY)", errno);
  return Status::Ok();
}

Result<UniqueFd> tcp_listen(const std::string& address, std::uint16_t port, int backlog) {
  KVF_ASSIGN_OR_RETURN(addrinfo * res, resolve(address, port, true));
  Status last = Unavailable("no address to listen on for '" + address + "'");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) { last = IoErrorFromErrno("socket", errno); continue; }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      last = IoErrorFromErrno("bind " + address + ":" + std::to_string(port), errno);
      continue;
    }
    if (::listen(fd.get(), backlog) < 0) { last = IoErrorFromErrno("listen", errno); continue; }
    ::freeaddrinfo(res);
    return fd;
  }
  ::freeaddrinfo(res);
  return last;
}

Result<UniqueFd> tcp_connect(const std::string& host, std::uint16_t port, Deadline deadline, bool nonblocking) {
  KVF_ASSIGN_OR_RETURN(addrinfo * res, resolve(host, port, false));
  std::string where = host + ":" + std::to_string(port);
  Status last = Unavailable("no address for " + where);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) { last = IoErrorFromErrno("socket", errno); continue; }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      if (errno != EINPROGRESS) { last = Unavailable("connect to " + where + ": " + std::strerror(errno)); continue; }
      Status s = wait_fd(fd.get(), POLLOUT, deadline, ("connect to " + where).c_str());
      if (!s.ok()) { last = s; continue; }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) { last = Unavailable("connect to " + where + ": " + std::strerror(err)); continue; }
    }
    ::freeaddrinfo(res);
    KVF_RETURN_IF_ERROR(set_nodelay(fd.get()));
    if (!nonblocking) KVF_RETURN_IF_ERROR(set_nonblocking(fd.get(), false));
    return fd;
  }
  ::freeaddrinfo(res);
  return last;
}

Result<std::uint16_t> local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return IoErrorFromErrno("getsockname", errno);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

Status send_all(int fd, const void* data, std::size_t n, Deadline deadline) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  while (n > 0) {
    ssize_t rc = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (rc > 0) { p += rc; n -= static_cast<std::size_t>(rc); continue; }
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      KVF_RETURN_IF_ERROR(wait_fd(fd, POLLOUT, deadline, "send"));
      continue;
    }
    return PeerLost(std::string("send: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status recv_all(int fd, void* data, std::size_t n, Deadline deadline) {
  auto* p = static_cast<std::uint8_t*>(data);
  while (n > 0) {
    ssize_t rc = ::recv(fd, p, n, MSG_DONTWAIT);
    if (rc > 0) { p += rc; n -= static_cast<std::size_t>(rc); continue; }
    if (rc == 0) return PeerLost("connection closed by peer");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      KVF_RETURN_IF_ERROR(wait_fd(fd, POLLIN, deadline, "recv"));
      continue;
    }
    return PeerLost(std::string("recv: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Result<UniqueFd> make_eventfd(std::string_view who) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return IoErrorFromErrno(std::string(who) + ": eventfd", errno);
  return fd;
}

void ring_eventfd(int fd) {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t rc = ::write(fd, &one, sizeof one);
}

}  // namespace kvferry::detail
