#include "common/agent_factory.h"

#include <unistd.h>

#include <algorithm>

#include "common/backend_traits.h"

namespace kvferry::cli {

std::string unique_agent_name(std::string_view role, int serial) {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::string name = std::string(role) + "-" + (host[0] != '\0' ? host : "host") + "-" +
                     std::to_string(getpid());
  if (serial >= 0) name += "-" + std::to_string(serial);
  return name.substr(0, 255);
}

Status check_backend_for_two_processes(const std::string& backend) {
  std::string compiled;
  for (const BackendInfo& info : compiled_backends()) {
    compiled += (compiled.empty() ? "" : ", ") + info.name;
    if (info.name != backend) continue;
    if (!info.usable) return Unavailable("backend '" + backend + "' is not usable here: " + info.reason);
    const BackendTraits traits = traits_of(backend);
    if (!traits.crosses_processes) {
      return NotSupported("backend '" + backend + "' cannot move data between two processes: " +
                          traits.why_not);
    }
    return Status::Ok();
  }
  return NotFound("backend '" + backend + "' is not compiled in (compiled: " + compiled + ")");
}

Result<std::unique_ptr<Agent>> make_single_backend_agent(
    std::string name, const std::string& backend, std::map<std::string, std::string> params,
    const std::string& metadata_service) {
  AgentOptions options;
  options.name = std::move(name);
  options.backends = {backend};
  options.backend_params = std::move(params);
  options.metadata_service = metadata_service;
  Result<std::unique_ptr<Agent>> agent = Agent::create(std::move(options));
  if (!agent.ok()) return agent.status().with_context("creating an agent with backend '" + backend + "'");
  return agent;
}

Status wait_for_named_peer(Agent& agent, const std::string& name, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const std::vector<std::string> found = agent.find_peers(name);
    if (std::find(found.begin(), found.end(), name) != found.end()) return Status::Ok();
    if (std::chrono::steady_clock::now() >= until)
      return Timeout("agent '" + name + "' did not appear in the metadata service within " +
                     std::to_string(timeout.count()) + " ms");
    agent.wait_for_peer_events(std::chrono::milliseconds(20));
    (void)agent.take_peer_events();
  }
}

}  // namespace kvferry::cli
