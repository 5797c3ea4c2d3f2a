#include "kv_agent.h"

#include "agent_factory.h"

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

Result<std::unique_ptr<Agent>> make_kv_agent(std::string name, const std::vector<std::string>& backends,
                                             const std::vector<std::string>& params,
                                             std::chrono::milliseconds peer_timeout) {
  if (backends.empty()) return Unavailable("no backend can move data between two processes here");
  for (const std::string& backend : backends) KVF_RETURN_IF_ERROR(check_backend_for_two_processes(backend));
  AgentOptions options;
  options.name = std::move(name);
  options.backends = backends;
  KVF_ASSIGN_OR_RETURN(options.backend_params, parse_backend_params(params));
  options.peer_timeout = peer_timeout;
  Result<std::unique_ptr<Agent>> agent = Agent::create(std::move(options));
  if (!agent.ok()) return agent.status().with_context("creating the agent");
  return agent;
}

}  // namespace kvferry::cli
