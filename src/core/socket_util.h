// Small POSIX socket helpers with deadlines. Every blocking helper takes a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "kvferry/status.h"

namespace kvferry::detail {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// "host:port" -> parts. Accepts "[v6]:port".
Status parse_host_port(const std::string& text, std::string* host, std::uint16_t* port);

// Bound, listening, non-blocking TCP socket.
Result<UniqueFd> tcp_listen(const std::string& address, std::uint16_t port, int backlog = 128);
// Connected TCP socket (blocking mode unless `nonblocking`), TCP_NODELAY set.
Result<UniqueFd> tcp_connect(const std::string& host, std::uint16_t port, Deadline deadline,
                             bool nonblocking = false);
Result<std::uint16_t> local_port(int fd);

Status set_nonblocking(int fd, bool on);
Status set_nodelay(int fd);

// Full send/recv on a blocking or non-blocking socket, waiting with poll() up to the
// deadline. recv_all fails with PeerLost on orderly close before `n` bytes.
Status send_all(int fd, const void* data, std::size_t n, Deadline deadline);
Status recv_all(int fd, void* data, std::size_t n, Deadline deadline);

inline Deadline deadline_after(std::chrono::nanoseconds d) { return Clock::now() + d; }

// A non-blocking eventfd (the bell of a progress thread), and a write of 1 to one: never
// blocks; errors are ignored (a bell that cannot ring has a reader that is awake or gone).
Result<UniqueFd> make_eventfd(std::string_view who);
void ring_eventfd(int fd);

}  // namespace kvferry::detail
