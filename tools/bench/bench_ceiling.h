// bench_ceiling.h — the plain paths each case is compared with, measured in the same
// run between the same two processes over the same bytes.
//
// Stream ceiling (tcp): after kStreamBegin, for each rep the sender streams `bytes` from
// its pool in 4 MiB send() calls and the receiver recv()s them into its pool. For a
// write the initiator sends and the target answers one ack byte when all arrived; for a
// read the initiator sends one go byte and the target streams. The initiator times each
// rep from its first byte to the last byte (or ack), so a rep includes one small round
// trip: ~60 us next to the ~100 ms a rep of hundreds of MiB takes.
// With plan.streams = N > 1 (as many as the backend moves a transfer over), the target
// answers kStreamReady {"port"} on its control address, the initiator opens N - 1 more
// connections there, and every rep moves one contiguous share of the bytes over each of
// the N connections at once (one thread per connection on both sides); the go byte and
// the ack stay on the control socket.
// Ping-pong ceiling: after kPingPongBegin, `count` 8-byte round trips.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/bench_protocol.h"
#include "common/control_channel.h"
#include "common/host_pool.h"

namespace kvferry::cli {

// Initiator side. Returns the GB/s of every rep.
Result<std::vector<double>> measure_stream_gbps(ControlChannel& channel, const HostPool& pool,
                                                const StreamPlan& plan);
// Same-process memcpy of `bytes` from the first half of the pool to the second, in
// `chunk`-byte copies (the block size), split over `threads` threads; GB/s of every rep.
std::vector<double> measure_memcpy_gbps(const HostPool& pool, std::uint64_t bytes,
                                        std::uint64_t chunk, int reps, unsigned threads = 1);
// Round-trip time of every 8-byte ping-pong, in microseconds.
Result<std::vector<double>> measure_ping_pong_us(ControlChannel& channel, std::uint32_t count);

// Target side, after receiving the corresponding message.
Status serve_stream(ControlChannel& channel, const HostPool& pool, const StreamPlan& plan);
Status serve_ping_pong(ControlChannel& channel, std::uint32_t count);

}  // namespace kvferry::cli
