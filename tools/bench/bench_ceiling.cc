#include "bench/bench_ceiling.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

Status check_fits(const HostPool& pool, std::uint64_t bytes) {
  if (bytes > pool.bytes()) {
    return InvalidArgument("stream of " + std::to_string(bytes) + " bytes exceeds the pool");
  }
  return Status::Ok();
}

// The connections of a stream ceiling besides the control socket (stream 0).
struct StreamSockets {
  std::vector<FileDescriptor> extra;
  std::vector<int> fds(const ControlChannel& channel) const {
    std::vector<int> out{channel.fd()};
    for (const auto& s : extra) out.push_back(s.get());
    return out;
  }
};

// The numeric address of one end of a connected socket.
Result<std::string> socket_address(int fd, bool peer) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  if (rc != 0) return IoErrorFromErrno(peer ? "getpeername of the control socket" : "getsockname of the control socket", errno);
  char host[NI_MAXHOST];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&sa), len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
    return IoError("the control socket's address has no numeric form");
  return std::string(host);
}

// Initiator: after kStreamBegin, the target names a port on its control address; the
// extra streams connect there.
Result<StreamSockets> connect_streams(ControlChannel& channel, std::uint32_t streams) {
  StreamSockets out;
  if (streams <= 1) return out;
  KVF_ASSIGN_OR_RETURN(nlohmann::json ready, channel.expect(ControlType::kStreamReady));
  const auto port = ready.find("port");
  if (port == ready.end() || !port->is_number_unsigned() || port->get<std::uint64_t>() == 0 ||
      port->get<std::uint64_t>() > 65535)
    return Corrupt("stream ready message without a valid port");
  KVF_ASSIGN_OR_RETURN(std::string host, socket_address(channel.fd(), /*peer=*/true));
  for (std::uint32_t i = 1; i < streams; ++i) {
    KVF_ASSIGN_OR_RETURN(FileDescriptor s, connect_tcp(host, port->get<std::uint16_t>(), kIoTimeout));
    KVF_RETURN_IF_ERROR(configure_stream_socket(s.get()));
    out.extra.push_back(std::move(s));
  }
  return out;
}

// Target: listens on the address the initiator reached it at, names the port, and takes
// streams - 1 connections, each within the I/O timeout.
Result<StreamSockets> accept_streams(ControlChannel& channel, std::uint32_t streams) {
  StreamSockets out;
  if (streams <= 1) return out;
  KVF_ASSIGN_OR_RETURN(std::string host, socket_address(channel.fd(), /*peer=*/false));
  KVF_ASSIGN_OR_RETURN(Listener listener, listen_tcp(host, 0));
  KVF_RETURN_IF_ERROR(channel.send(ControlType::kStreamReady, nlohmann::json{{"port", listener.port}}));
  for (std::uint32_t i = 1; i < streams; ++i) {
    const auto deadline = Clock::now() + kIoTimeout;
    KVF_ASSIGN_OR_RETURN(FileDescriptor s, accept_connection(listener.socket.get(), std::chrono::milliseconds(100),
                                                             [&] { return Clock::now() < deadline; }));
    KVF_RETURN_IF_ERROR(configure_stream_socket(s.get()));
    out.extra.push_back(std::move(s));
  }
  return out;
}

// Sends (or receives) `bytes` from (into) `base`, cut into one contiguous share per
// socket, all sockets at once: one thread each beyond the caller's.
Status move_shares(const std::vector<int>& fds, std::uint8_t* base, std::uint64_t bytes, bool send) {
  const std::uint64_t n = fds.size();
  std::vector<Status> results(n);
  auto move_one = [&](std::uint64_t i) {
    const std::uint64_t first = bytes * i / n, last = bytes * (i + 1) / n;
    results[i] = send ? send_all(fds[i], base + first, last - first) : recv_all(fds[i], base + first, last - first);
  };
  std::vector<std::thread> helpers;
  for (std::uint64_t i = 1; i < n; ++i) helpers.emplace_back(move_one, i);
  move_one(0);
  for (auto& h : helpers) h.join();
  for (const Status& r : results) KVF_RETURN_IF_ERROR(r);
  return Status::Ok();
}

}  // namespace

Result<std::vector<double>> measure_stream_gbps(ControlChannel& channel, const HostPool& pool,
                                                const StreamPlan& plan) {
  KVF_RETURN_IF_ERROR(check_fits(pool, plan.bytes));
  KVF_RETURN_IF_ERROR(channel.send(ControlType::kStreamBegin, to_json(plan)));
  KVF_ASSIGN_OR_RETURN(StreamSockets sockets, connect_streams(channel, plan.streams));
  std::vector<double> gbps;
  std::uint8_t token = 1;
  for (std::uint32_t rep = 0; rep < plan.reps; ++rep) {
    const auto start = Clock::now();
    if (plan.op == TransferOp::kWrite) {
      KVF_RETURN_IF_ERROR(move_shares(sockets.fds(channel), pool.base(), plan.bytes, /*send=*/true));
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &token, 1));
    } else {
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), &token, 1));
      KVF_RETURN_IF_ERROR(move_shares(sockets.fds(channel), pool.base(), plan.bytes, /*send=*/false));
    }
    gbps.push_back(gigabytes_per_second(plan.bytes, to_seconds(Clock::now() - start)));
  }
  return gbps;
}

std::vector<double> measure_memcpy_gbps(const HostPool& pool, std::uint64_t bytes,
                                        std::uint64_t chunk, int reps, unsigned threads) {
  std::vector<double> gbps;
  if (2 * bytes > pool.bytes() || chunk == 0 || threads == 0) return gbps;
  const std::uint8_t* source = pool.base();
  std::uint8_t* destination = pool.base() + bytes;
  // Each thread copies a contiguous share, in whole chunks.
  const std::uint64_t chunks = (bytes + chunk - 1) / chunk;
  auto copy_share = [&](unsigned t) {
    const std::uint64_t first = chunks * t / threads, last = chunks * (t + 1) / threads;
    for (std::uint64_t c = first; c < last; ++c) {
      const std::uint64_t offset = c * chunk;
      std::memcpy(destination + offset, source + offset, std::min(chunk, bytes - offset));
    }
  };
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = Clock::now();
    std::vector<std::thread> helpers;
    for (unsigned t = 1; t < threads; ++t) helpers.emplace_back(copy_share, t);
    copy_share(0);
    for (auto& h : helpers) h.join();
    gbps.push_back(gigabytes_per_second(bytes, to_seconds(Clock::now() - start)));
  }
  return gbps;
}

Result<std::vector<double>> measure_ping_pong_us(ControlChannel& channel, std::uint32_t count) {
  KVF_RETURN_IF_ERROR(channel.send(ControlType::kPingPongBegin, nlohmann::json{{"count", count}}));
  std::vector<double> round_trips_us;
  round_trips_us.reserve(count);
  std::uint64_t ping = 0;
  std::uint64_t pong = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    ping = i;
    const auto start = Clock::now();
    KVF_RETURN_IF_ERROR(send_all(channel.fd(), &ping, sizeof(ping)));
    KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &pong, sizeof(pong)));
    round_trips_us.push_back(to_micros(Clock::now() - start));
    if (pong != ping) return Corrupt("ping-pong: echo does not match");
  }
  return round_trips_us;
}

Status serve_stream(ControlChannel& channel, const HostPool& pool, const StreamPlan& plan) {
  KVF_RETURN_IF_ERROR(check_fits(pool, plan.bytes));
  KVF_ASSIGN_OR_RETURN(StreamSockets sockets, accept_streams(channel, plan.streams));
  std::uint8_t token = 1;
  for (std::uint32_t rep = 0; rep < plan.reps; ++rep) {
    if (plan.op == TransferOp::kWrite) {
      KVF_RETURN_IF_ERROR(move_shares(sockets.fds(channel), pool.base(), plan.bytes, /*send=*/false));
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), &token, 1));
    } else {
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &token, 1));
      KVF_RETURN_IF_ERROR(move_shares(sockets.fds(channel), pool.base(), plan.bytes, /*send=*/true));
    }
  }
  return Status::Ok();
}

Status serve_ping_pong(ControlChannel& channel, std::uint32_t count) {
  std::uint64_t word = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &word, sizeof(word)));
    KVF_RETURN_IF_ERROR(send_all(channel.fd(), &word, sizeof(word)));
  }
  return Status::Ok();
}

}  // namespace kvferry::cli
