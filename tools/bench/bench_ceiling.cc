#include "bench/bench_ceiling.h"

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

}  // namespace

Result<std::vector<double>> measure_stream_gbps(ControlChannel& channel, const HostPool& pool,
                                                const StreamPlan& plan) {
  KVF_RETURN_IF_ERROR(check_fits(pool, plan.bytes));
  KVF_RETURN_IF_ERROR(channel.send(ControlType::kStreamBegin, to_json(plan)));
  std::vector<double> gbps;
  std::uint8_t token = 1;
  for (std::uint32_t rep = 0; rep < plan.reps; ++rep) {
    const auto start = Clock::now();
    if (plan.op == TransferOp::kWrite) {
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), pool.base(), plan.bytes));
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &token, 1));
    } else {
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), &token, 1));
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), pool.base(), plan.bytes));
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
  std::uint8_t token = 1;
  for (std::uint32_t rep = 0; rep < plan.reps; ++rep) {
    if (plan.op == TransferOp::kWrite) {
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), pool.base(), plan.bytes));
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), &token, 1));
    } else {
      KVF_RETURN_IF_ERROR(recv_all(channel.fd(), &token, 1));
      KVF_RETURN_IF_ERROR(send_all(channel.fd(), pool.base(), plan.bytes));
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
