// `kvferry swarm`: --agents agents in this process join one metadata service namespace,
// wait until each has discovered --expect agents (ours and other processes'), then
// report every departure they see, one JSON line each, until --watch-s passes or a
// signal. scripts/cluster_scale.py runs many of these, kills some, and checks that every
// survivor saw every death within the lease. Times are wall-clock milliseconds
// (CLOCK_REALTIME, comparable across processes of one host).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/cluster_commands.h"
#include "kvferry/kvferry.h"
#include "kvferry/metrics.h"
#include "common/stop_signal.h"

namespace kvferry::cli {
namespace {

double wall_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void emit(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// The agent's metadata-service traffic, from its own metrics.
nlohmann::json traffic_of(const Agent& agent) {
  nlohmann::json t{{"sent", 0}, {"received", 0}, {"requests", 0}};
  auto samples = parse_metrics_text(agent.metrics_text());
  if (!samples.ok()) return t;
  for (const auto& s : *samples) {
    if (s.name == "kvferry_metadata_service_bytes_total") t[s.labels.at("direction")] = s.value;
    if (s.name == "kvferry_metadata_service_requests_total") t["requests"] = s.value;
  }
  return t;
}

}  // namespace

CLI::App* add_swarm_command(CLI::App& app, SwarmOptions& o) {
  CLI::App* command = app.add_subcommand(
      "swarm", "Many agents join a metadata service namespace; report discovery and departures (JSON lines)");
  command->add_option("--metadata", o.metadata, "etcd://HOST:PORT/NAMESPACE")->required();
  command->add_option("--agents", o.agents, "Agents in this process")->check(CLI::Range(1, 1024))->capture_default_str();
  command->add_option("--expect", o.expect, "Agents in the namespace in all (ours included)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  command->add_option("--prefix", o.prefix, "Name prefix of every swarm agent")->capture_default_str();
  command->add_option("--tag", o.tag, "This process's part of the names (default: its pid)");
  command->add_option("--backend", o.backend, "Backend each agent starts")->capture_default_str();
  command->add_option("--lease-s", o.lease_s, "Lease of each agent")->check(CLI::Range(2, 3600))->capture_default_str();
  command->add_option("--timeout-ms", o.timeout_ms, "Bound on each etcd call")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--discover-s", o.discover_s, "Bound on discovery")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--watch-s", o.watch_s, "Report departures this long after discovery")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  return command;
}

int run_swarm_command(const SwarmOptions& o) {
  install_stop_signal_handlers();
  const std::string tag = o.tag.empty() ? std::to_string(::getpid()) : o.tag;
  std::vector<std::unique_ptr<Agent>> agents;
  for (int i = 0; i < o.agents; ++i) {
    AgentOptions ao;
    ao.name = o.prefix + tag + "-" + std::to_string(i);
    ao.backends = {o.backend};
    ao.metadata_service = o.metadata;
    ao.metadata_lease = std::chrono::seconds(o.lease_s);
    ao.connect_timeout = std::chrono::milliseconds(o.timeout_ms);
    const double t0 = wall_ms();
    auto agent = Agent::create(ao);
    if (!agent.ok()) {
      std::fprintf(stderr, "kvferry swarm: %s: %s\n", ao.name.c_str(), agent.status().to_string().c_str());
      return 1;
    }
    emit({{"event", "joined"}, {"agent", ao.name}, {"start_ms", t0}, {"join_ms", wall_ms() - t0}});
    agents.push_back(std::move(agent).value());
  }
  // Discovery: each agent until it knows the other expect-1.
  std::vector<bool> done(agents.size(), false);
  std::size_t remaining = agents.size();
  const auto discover_until = std::chrono::steady_clock::now() + std::chrono::seconds(o.discover_s);
  while (remaining > 0 && !stop_requested()) {
    if (std::chrono::steady_clock::now() > discover_until) {
      for (std::size_t i = 0; i < agents.size(); ++i)
        if (!done[i])
          std::fprintf(stderr, "kvferry swarm: %s found %zu of %d agents\n", agents[i]->name().c_str(),
                       agents[i]->find_peers(o.prefix).size(), o.expect - 1);
      return 1;
    }
    for (std::size_t i = 0; i < agents.size(); ++i) {
      if (done[i] || agents[i]->find_peers(o.prefix).size() + 1 < static_cast<std::size_t>(o.expect)) continue;
      done[i] = true;
      --remaining;
      emit({{"event", "discovered"}, {"agent", agents[i]->name()}, {"at_ms", wall_ms()},
            {"traffic", traffic_of(*agents[i])}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Departures, as each agent sees them.
  const auto watch_until = std::chrono::steady_clock::now() + std::chrono::seconds(o.watch_s);
  while (std::chrono::steady_clock::now() < watch_until && !stop_requested()) {
    for (auto& agent : agents) {
      for (const PeerEvent& e : agent->take_peer_events()) {
        if (e.kind != PeerEventKind::kLeft) continue;
        emit({{"event", "left"}, {"agent", agent->name()}, {"peer", e.peer}, {"at_ms", wall_ms()}});
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& agent : agents)
    emit({{"event", "traffic"}, {"agent", agent->name()}, {"traffic", traffic_of(*agent)}});
  return 0;
}

}  // namespace kvferry::cli
