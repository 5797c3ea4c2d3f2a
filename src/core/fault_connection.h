// FaultConnection: fault injection around any backend's connection (settings "fault.*"
// of AgentOptions::backend_params), to prove that failures are handled the same on every
// backend. Per job it may, by a seeded policy:
//   delay     hold the job `delay_us` before it starts (always, when set)
//   fail      fail it before any byte moves (RemoteError)
//   truncate  move only the first half of its bytes, then fail it (RemoteError); no
//             notification is sent
//   stall     let it complete, then report nothing until the peer timeout, and fail it
//             (PeerLost), as a backend does for a peer that stopped answering
//   kill      drop the connection: jobs in flight are cancelled and fail (PeerLost), and
//             the connection stays lost until the peer is loaded again
// Settings: fault.seed (1), fault.delay_us (0), fault.fail / truncate / stall / kill (per
// mille, 0..1000: the chance per job), fault.every (0: by chance; N: every N-th job gets
// a fault, the enabled kinds in turn), fault.backends (comma list; empty: every backend).
// Whatever the fault, the wrapped job keeps the backend contract: once it is finished (or
// cancel returned) no byte of its local memory is touched.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "core/backend.h"

namespace kvferry::detail {

struct FaultConfig {
  std::uint64_t seed = 1;
  std::uint64_t delay_us = 0;
  std::uint32_t fail = 0, truncate = 0, stall = 0, kill = 0;  // per mille
  std::uint64_t every = 0;
  std::set<std::string> backends;  // empty: all
  bool enabled() const { return delay_us || fail || truncate || stall || kill; }
  bool applies_to(const std::string& backend) const { return enabled() && (backends.empty() || backends.count(backend)); }
};

// "fault.<key>" settings (prefix stripped) -> config; unknown keys are an error.
Result<FaultConfig> parse_fault_settings(const std::map<std::string, std::string>& settings);

class FaultConnection final : public BackendConnection {
 public:
  FaultConnection(std::shared_ptr<BackendConnection> inner, FaultConfig config, std::chrono::milliseconds peer_timeout);
  ~FaultConnection() override;

  Status post(const std::shared_ptr<TransferJob>& job) override;
  void cancel(const std::shared_ptr<TransferJob>& job) override;
  Status notify(std::string_view message) override;
  Status health() const override;

  class State;  // shared with the jobs' hooks and the timer (fault_connection.cc)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kvferry::detail
