// cli_util.h — small parsing and formatting helpers shared by the subcommands.
#pragma once

#include <ctime>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvferry::cli {

using Clock = std::chrono::steady_clock;

// Accepts plain bytes ("65536") or a number with a binary suffix, case-insensitive:
// K, KB, KiB = 1024; M, MB, MiB = 1024^2; G, GB, GiB = 1024^3. Block sizes are powers
// of two in practice, so "64K" meaning 65536 is what users of this field expect.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

// 65536 -> "64 KiB"; 671088640 -> "640 MiB"; 8 -> "8 B". Exact multiples only get a
// unit, otherwise the plain byte count is shown.
std::string format_bytes(std::uint64_t bytes);

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
// "127.0.0.1:5555", "host.example:0", "[::1]:5555".
std::optional<HostPort> parse_host_port(std::string_view text);

// CPU time consumed by the calling thread, in microseconds.
inline double thread_cpu_micros() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

inline double to_micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}
inline double to_seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// 10^9 bytes per second, the unit of BENCH.md.
inline double gigabytes_per_second(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

}  // namespace kvferry::cli
