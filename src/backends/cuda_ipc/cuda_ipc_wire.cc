#include "backends/cuda_ipc/cuda_ipc_wire.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace kvferry::detail::cuda_ipc {
namespace {

Status wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) return Timeout("cuda_ipc: control socket wait timed out");
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoErrorFromErrno("cuda_ipc: poll", errno);
    if (n > 0) return Status::Ok();
  }
}

}  // namespace

Status send_packet(int fd, const std::vector<std::uint8_t>& bytes, Deadline deadline) {
  if (bytes.size() > kMaxWireMessage) return InvalidArgument("cuda_ipc: message too large");
  for (;;) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(bytes.size())) return Status::Ok();
    if (n >= 0) return IoError("cuda_ipc: short send on a packet socket");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      KVF_RETURN_IF_ERROR(wait_fd(fd, POLLOUT, deadline));
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET) return PeerLost("cuda_ipc: the peer closed its socket");
    return IoErrorFromErrno("cuda_ipc: send", errno);
  }
}

Status recv_packet(int fd, std::vector<std::uint8_t>* bytes, Deadline deadline) {
  for (;;) {
    // Learn the next packet's length first (SEQPACKET keeps boundaries), then take it.
    std::uint8_t probe = 0;
    ssize_t n = ::recv(fd, &probe, 1, MSG_PEEK | MSG_TRUNC);
    if (n > static_cast<ssize_t>(kMaxWireMessage)) return Corrupt("cuda_ipc: oversized message");
    if (n > 0) {
      bytes->resize(static_cast<std::size_t>(n));
      ssize_t got = ::recv(fd, bytes->data(), bytes->size(), 0);
      if (got != n) return IoError("cuda_ipc: packet changed between peek and read");
      return Status::Ok();
    }
    if (n == 0) return PeerLost("cuda_ipc: the peer closed its socket");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      KVF_RETURN_IF_ERROR(wait_fd(fd, POLLIN, deadline));
      continue;
    }
    if (errno == ECONNRESET) return PeerLost("cuda_ipc: the peer reset its socket");
    return IoErrorFromErrno("cuda_ipc: recv", errno);
  }
}

}  // namespace kvferry::detail::cuda_ipc
