// cluster_commands.h — subcommands for many agents: `stats` (an agent's metrics as a
// table) and `swarm` (many agents joining one metadata service, for the scale run of
// scripts/cluster_scale.py). Exit codes as commands.h.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace kvferry::cli {

struct StatsOptions {
  std::string address;
  bool json = false;
  bool all = false;
};

struct SwarmOptions {
  std::string metadata;           // etcd://HOST:PORT/NAMESPACE
  int agents = 8;                 // in this process
  int expect = 8;                 // agents in the whole namespace (ours included)
  std::string prefix = "swarm-";  // our agents are PREFIX<tag>-<i>
  std::string tag;                // default: our pid
  std::string backend = "tcp";
  int lease_s = 2;
  int watch_s = 30;  // after discovery, report departures this long (or until SIGTERM)
  int discover_s = 60;
  int timeout_ms = 10000;  // bound on each etcd call (AgentOptions::connect_timeout)
};

CLI::App* add_stats_command(CLI::App& app, StatsOptions& options);
int run_stats_command(const StatsOptions& options);

CLI::App* add_swarm_command(CLI::App& app, SwarmOptions& options);
int run_swarm_command(const SwarmOptions& options);

}  // namespace kvferry::cli
