#include "core/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace kvferry::detail {
namespace {

Status wait_for(int sock, short events, Deadline deadline, std::string_view who) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Timeout(std::string(who) + ": the peer did not answer in time");
    pollfd p{sock, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return Status::Ok();
    if (rc < 0 && errno != EINTR) return IoErrorFromErrno(std::string(who) + ": poll", errno);
  }
}

}  // namespace

Status send_message(int sock, std::span<const std::uint8_t> bytes, std::span<const int> fds, Deadline deadline,
                    std::string_view who) {
  if (fds.size() > kMaxFdsPerMessage) return Internal(std::string(who) + ": too many fds in one message");
  iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return Status::Ok();
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      KVF_RETURN_IF_ERROR(wait_for(sock, POLLOUT, deadline, who));
      continue;
    }
    return PeerLost(std::string(who) + ": send to peer failed: " + std::strerror(errno));
  }
}

Status recv_message(int sock, std::vector<std::uint8_t>* bytes, std::vector<UniqueFd>* fds, Deadline deadline,
                    std::string_view who) {
  bytes->resize(kMaxMessageBytes);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  iovec iov{bytes->data(), bytes->size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  for (;;) {
    n = ::recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      KVF_RETURN_IF_ERROR(wait_for(sock, POLLIN, deadline, who));
      continue;
    }
    return PeerLost(std::string(who) + ": receive from peer failed: " + std::strerror(errno));
  }
  if (n == 0) return PeerLost(std::string(who) + ": the peer closed the connection");
  bytes->resize(static_cast<std::size_t>(n));
  fds->clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds->emplace_back(fd);
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Corrupt(std::string(who) + ": oversized message from the peer");
  return Status::Ok();
}

}  // namespace kvferry::detail
