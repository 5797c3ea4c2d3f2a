#include "kv/kv_agent.h"

#include "common/agent_factory.h"

namespace kvferry::cli {

Result<std::map<std::string, std::string>> parse_backend_params(const std::vector<std::string>& params) {
  std::map<std::string, std::string> parsed;
  for (const std::string& param : params) {
    const auto eq = param.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("--param '" + param + "': expected KEY=VALUE, e.g. tcp.bind=0.0.0.0");
    }
    parsed[param.substr(0, eq)] = param.substr(eq + 1);
  }
  return parsed;
}

std::string metrics_where(const Agent& agent, const ClusterOptions& cluster) {
  auto port = agent.metrics_port();
  if (!port.ok()) return {};
  return cluster.metrics.substr(0, cluster.metrics.rfind(':')) + ":" + std::to_string(*port);
}

void add_cluster_options(CLI::App* command, ClusterOptions& o) {
  command->add_option("--metadata", o.metadata,
                      "Metadata service etcd://HOST:PORT/NAMESPACE: agents find each other there, no addresses");
  command->add_option("--lease-s", o.lease_s, "With --metadata: a dead agent is gone after this many seconds")
      ->check(CLI::Range(2, 3600))
      ->capture_default_str();
  command->add_option("--metrics", o.metrics, "Serve Prometheus metrics at http://ADDRESS:PORT/metrics");
}

Result<std::unique_ptr<Agent>> make_kv_agent(std::string name, const std::vector<std::string>& backends,
                                             const std::vector<std::string>& params,
                                             std::chrono::milliseconds peer_timeout,
                                             const ClusterOptions& cluster) {
  if (backends.empty()) return Unavailable("no backend can move data between two processes here");
  for (const std::string& backend : backends) KVF_RETURN_IF_ERROR(check_backend_for_two_processes(backend));
  AgentOptions options;
  options.name = std::move(name);
  options.backends = backends;
  KVF_ASSIGN_OR_RETURN(options.backend_params, parse_backend_params(params));
  options.peer_timeout = peer_timeout;
  options.metadata_service = cluster.metadata;
  options.metadata_lease = std::chrono::seconds(cluster.lease_s);
  options.metrics_address = cluster.metrics;
  Result<std::unique_ptr<Agent>> agent = Agent::create(std::move(options));
  if (!agent.ok()) return agent.status().with_context("creating the agent");
  return agent;
}

}  // namespace kvferry::cli
