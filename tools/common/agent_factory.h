// agent_factory.h — agents for the tools: one forced backend, names unique per process.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

// "<role>-<hostname>-<pid>[-<serial>]": unique among agents that talk to each other.
std::string unique_agent_name(std::string_view role, int serial = -1);

// Checks that `backend` is compiled in, usable here and able to join two processes,
// with a message that says which of these failed and what is available instead.
Status check_backend_for_two_processes(const std::string& backend);

// Starts an agent with exactly `backend` (AgentOptions::backends = {backend}), so a
// measurement is of the backend it names, never of one the agent picked.
// With `metadata_service` (etcd://...), the agent joins it (AgentOptions::metadata_service).
Result<std::unique_ptr<Agent>> make_single_backend_agent(
    std::string name, const std::string& backend, std::map<std::string, std::string> params,
    const std::string& metadata_service = {});

// Waits until the agent, through its metadata service, knows the peer named exactly `name`.
Status wait_for_named_peer(Agent& agent, const std::string& name, std::chrono::milliseconds timeout);

}  // namespace kvferry::cli
