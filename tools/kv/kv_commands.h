// kv_commands.h — the KV-layer subcommands of `kvferry`: serve, pull, estimate.
// Exit codes as commands.h: 0 success, 1 error, 2 usage, 3 a verification failed.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_geometry_options.h"
#include "kv/kv_pool_memory.h"

namespace kvferry::cli {

// Many agents: a metadata service instead of addresses, and a metrics endpoint.
struct ClusterOptions {
  std::string metadata;  // etcd://HOST:PORT/NAMESPACE; empty: none
  int lease_s = 5;
  std::string metrics;  // ADDRESS:PORT of a Prometheus endpoint; empty: none
};

struct ServeOptions {
  KvPoolOptions pool;
  KvMemoryOptions memory;  // --mem, --device
  std::vector<std::string> backends;  // empty: every backend usable between two processes
  std::string listen;  // empty: 127.0.0.1:7000, or no side channel with --metadata
  ClusterOptions cluster;
  std::vector<std::string> params;  // KEY=VALUE backend parameters
  bool json = false;
  int peer_timeout_ms = 5000;
  int client_idle_s = 600;  // a client silent this long is forgotten
};

struct PullOptions {
  KvPoolOptions pool;
  KvMemoryOptions memory;  // --mem, --device
  std::string peer = "127.0.0.1:7000";
  ClusterOptions cluster;
  std::string server = "kv-serve-";  // with --metadata: the server's name or its prefix
  int hold_s = 0;  // with --metadata: then watch the server this long; its departure is an error
  std::string backend = "tcp";
  std::vector<std::string> params;
  std::uint64_t tokens = 4096;
  std::uint64_t cached_tokens = 0;  // prefix-cache hit: these tokens are not pulled
  int steps = 10;
  int warmup = 1;               // unmeasured steps first (connection set-up, cold caches)
  std::uint32_t transfers = 1;  // per step, each a range of layers, all posted at once
  std::string pattern = "scattered";
  std::uint64_t seed = 1;
  bool json = false;
  int peer_timeout_ms = 5000;
  int timeout_s = 60;  // bound on one step's transfers
  bool compare_bench = false;
  bool baseline = false;  // interleave a bench-equivalent step after each step
};

struct EstimateOptions {
  KvGeometryOptions geometry;
  std::vector<std::uint64_t> tokens = {512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
  double prefill_tokens_per_s = 10000;
  double decode_step_ms = 25;
  std::vector<std::string> bench_files;  // `kvferry bench --json` outputs
  std::vector<std::string> assumed;      // NAME=GB/s, paths not measured here
  std::string plot = "kv_estimate.svg";
  bool json = false;
};

void add_cluster_options(CLI::App* command, ClusterOptions& options);

CLI::App* add_serve_command(CLI::App& app, ServeOptions& options);
int run_serve_command(const ServeOptions& options);

CLI::App* add_pull_command(CLI::App& app, PullOptions& options);
int run_pull_command(const PullOptions& options);

CLI::App* add_estimate_command(CLI::App& app, EstimateOptions& options);
int run_estimate_command(const EstimateOptions& options);

}  // namespace kvferry::cli
