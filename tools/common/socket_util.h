// socket_util.h — plain TCP sockets for the bench's own control connection.
//
// Every call that can block is bounded: connect by its timeout, accept by its slice and
// a keep-waiting predicate, send/recv by the SO_SNDTIMEO/SO_RCVTIMEO set on the socket
// (`kIoTimeout` by default). A timed-out call returns a Timeout status, never hangs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

inline constexpr std::chrono::milliseconds kIoTimeout{30000};

// Owns one file descriptor; closes it on destruction. Move-only.
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void reset();

 private:
  int fd_ = -1;
};

struct Listener {
  FileDescriptor socket;
  std::uint16_t port = 0;  // the bound port (useful when asked for port 0)
};

Result<Listener> listen_tcp(const std::string& address, std::uint16_t port);

// Waits for one connection in slices of `slice`; between slices asks `keep_waiting`
// and gives up (Cancelled) when it answers false.
Result<FileDescriptor> accept_connection(int listen_fd, std::chrono::milliseconds slice,
                                         const std::function<bool()>& keep_waiting);

Result<FileDescriptor> connect_tcp(const std::string& host, std::uint16_t port,
                                   std::chrono::milliseconds timeout);

// Sets SO_RCVTIMEO/SO_SNDTIMEO and TCP_NODELAY (the control messages are small and a
// Nagle delay would pollute the ping-pong ceiling).
Status configure_stream_socket(int fd, std::chrono::milliseconds io_timeout = kIoTimeout);

// Sends/receives exactly `length` bytes in calls of at most `chunk` bytes.
Status send_all(int fd, const void* data, std::size_t length, std::size_t chunk = 4u << 20);
// EOF before the first byte or in the middle is PeerLost.
Status recv_all(int fd, void* data, std::size_t length, std::size_t chunk = 4u << 20);

// True when readable (data or EOF) within `timeout`, false on timeout.
Result<bool> wait_readable(int fd, std::chrono::milliseconds timeout);

}  // namespace kvferry::cli
