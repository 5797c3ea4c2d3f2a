#include "common/socket_util.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

namespace kvferry::cli {
namespace {

struct AddrInfoDeleter {
  void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoDeleter>;

Result<AddrInfoList> resolve(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0) {
    return Unavailable("cannot resolve '" + host + "': " + gai_strerror(rc));
  }
  return AddrInfoList(found);
}

std::uint16_t bound_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

// Waits for POLLOUT on a non-blocking connect, then reads its outcome.
Status finish_connect(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLOUT, 0};
  const int ready = poll(&p, 1, static_cast<int>(timeout.count()));
  if (ready == 0) return Timeout("connect timed out after " + std::to_string(timeout.count()) + " ms");
  if (ready < 0) return IoErrorFromErrno("poll(connect)", errno);
  int error = 0;
  socklen_t len = sizeof(error);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return IoErrorFromErrno("getsockopt", errno);
  if (error != 0) return IoErrorFromErrno("connect", error);
  return Status::Ok();
}

}  // namespace

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int FileDescriptor::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void FileDescriptor::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Listener> listen_tcp(const std::string& address, std::uint16_t port) {
  KVF_ASSIGN_OR_RETURN(AddrInfoList list, resolve(address, port, /*passive=*/true));
  Status last = Unavailable("no address to listen on for '" + address + "'");
  for (addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    FileDescriptor fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = IoErrorFromErrno("socket", errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 16) != 0) {
      last = IoErrorFromErrno("bind/listen on " + address + ":" + std::to_string(port), errno);
      continue;
    }
    const std::uint16_t actual = bound_port(fd.get());
    return Listener{std::move(fd), actual};
  }
  return last;
}

Result<FileDescriptor> accept_connection(int listen_fd, std::chrono::milliseconds slice,
                                         const std::function<bool()>& keep_waiting) {
  while (keep_waiting()) {
    KVF_ASSIGN_OR_RETURN(bool readable, wait_readable(listen_fd, slice));
    if (!readable) continue;
    FileDescriptor fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return IoErrorFromErrno("accept", errno);
    }
    KVF_RETURN_IF_ERROR(configure_stream_socket(fd.get()));
    return fd;
  }
  return Cancelled("stopped waiting for a connection");
}

Result<FileDescriptor> connect_tcp(const std::string& host, std::uint16_t port,
                                   std::chrono::milliseconds timeout) {
  KVF_ASSIGN_OR_RETURN(AddrInfoList list, resolve(host, port, /*passive=*/false));
  Status last = Unavailable("no address for '" + host + "'");
  for (addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    FileDescriptor fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                               ai->ai_protocol));
    if (!fd.valid()) {
      last = IoErrorFromErrno("socket", errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last = IoErrorFromErrno("connect to " + host + ":" + std::to_string(port), errno);
        continue;
      }
      Status done = finish_connect(fd.get(), timeout);
      if (!done.ok()) {
        last = done.with_context("connect to " + host + ":" + std::to_string(port));
        continue;
      }
    }
    const int flags = fcntl(fd.get(), F_GETFL);
    if (flags < 0 || fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
      return IoErrorFromErrno("fcntl", errno);
    }
    KVF_RETURN_IF_ERROR(configure_stream_socket(fd.get()));
    return fd;
  }
  return last;
}

Status configure_stream_socket(int fd, std::chrono::milliseconds io_timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(io_timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
  const int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return IoErrorFromErrno("setsockopt", errno);
  }
  return Status::Ok();
}

Status send_all(int fd, const void* data, std::size_t length, std::size_t chunk) {
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  while (length > 0) {
    const ssize_t sent = ::send(fd, bytes, std::min(length, chunk), MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Timeout("send timed out");
      if (errno == EPIPE || errno == ECONNRESET) return PeerLost("connection closed by peer");
      return IoErrorFromErrno("send", errno);
    }
    bytes += sent;
    length -= static_cast<std::size_t>(sent);
  }
  return Status::Ok();
}

Status recv_all(int fd, void* data, std::size_t length, std::size_t chunk) {
  auto* bytes = static_cast<std::uint8_t*>(data);
  while (length > 0) {
    const ssize_t got = ::recv(fd, bytes, std::min(length, chunk), 0);
    if (got == 0) return PeerLost("connection closed by peer");
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Timeout("receive timed out");
      if (errno == ECONNRESET) return PeerLost("connection reset by peer");
      return IoErrorFromErrno("recv", errno);
    }
    bytes += got;
    length -= static_cast<std::size_t>(got);
  }
  return Status::Ok();
}

Result<bool> wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  const int ready = poll(&p, 1, static_cast<int>(timeout.count()));
  if (ready < 0) {
    if (errno == EINTR) return false;  // a signal: let the caller re-check its stop flag
    return IoErrorFromErrno("poll", errno);
  }
  return ready > 0;
}

}  // namespace kvferry::cli
