// soak_command.h — `kvferry soak`: random verified transfers over every usable backend
// for a while, with peers killed and restarted and requests cancelled; reports bytes,
// errors by cause, corrupt bytes (must be 0), and RSS and open descriptors over time
// (must stay flat). `kvferry soak-peer` (hidden) is the peer process it spawns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace kvferry::cli {

struct SoakOptions {
  std::string duration = "10m";      // "90s", "10m", "1h"
  std::vector<std::string> backends;  // empty: every usable one of loopback, tcp, shm, file
  std::uint64_t seed = 1;
  std::string kill_every = "20s";     // a peer process is killed and restarted this often
  std::string report_every = "60s";
  std::uint32_t cancel_permille = 30;  // requests cancelled in flight
  std::uint64_t peer_bytes = 64u << 20;
  std::string directory = "/var/tmp";  // where the file backend's file lives
};

struct SoakPeerOptions {
  std::string name, backend;
  std::uint64_t bytes = 0, seed = 0;
  int report_fd = -1;
};

CLI::App* add_soak_command(CLI::App& app, SoakOptions& options);
int run_soak_command(const SoakOptions& options);
CLI::App* add_soak_peer_command(CLI::App& app, SoakPeerOptions& options);
int run_soak_peer_command(const SoakPeerOptions& options);

// Parses "250ms", "90s", "10m", "2h" (a bare number is seconds); -1 when malformed.
long long parse_duration_ms(const std::string& text);

}  // namespace kvferry::cli
