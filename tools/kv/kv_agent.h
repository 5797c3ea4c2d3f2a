// kv_agent.h — the agents of `kvferry serve` / `pull`: the named backends only, backend
// parameters from `--param KEY=VALUE`, and a stated peer timeout (the bound within
// which a dead peer turns transfers into errors).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kv/kv_commands.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

// "tcp.bind=0.0.0.0" -> {"tcp.bind", "0.0.0.0"}; InvalidArgument names a bad entry.
Result<std::map<std::string, std::string>> parse_backend_params(const std::vector<std::string>& params);

// "ADDRESS:PORT" of the agent's metrics endpoint (the bound port), or "" without one.
std::string metrics_where(const Agent& agent, const ClusterOptions& cluster);

// Each backend must be compiled in, usable here and able to join two processes.
Result<std::unique_ptr<Agent>> make_kv_agent(std::string name, const std::vector<std::string>& backends,
                                             const std::vector<std::string>& params,
                                             std::chrono::milliseconds peer_timeout,
                                             const ClusterOptions& cluster = {});

}  // namespace kvferry::cli
