// bench_target_session.h — the target's side of one bench session.
//
// Sized by the initiator's kSetup: allocates and registers the same pool shape, loads
// the initiator's metadata, answers with its own. Then it mostly idles while the
// initiator's agent reads and writes its pool; it wakes for control messages (verify,
// ceilings) and, while idle, drains its agent's inbox so notifications never pile up.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_protocol.h"
#include "common/control_channel.h"
#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

class TargetSession {
 public:
  TargetSession(ControlChannel& channel, std::map<std::string, std::string> local_params, int serial)
      : channel_(channel), local_params_(std::move(local_params)), serial_(serial) {}

  // Until kBye or the initiator closes the connection (both OK), an error, or a stop
  // signal (Cancelled).
  Status run();

 private:
  Status setup(const nlohmann::json& body);
  Status handle(const ControlMessage& message);
  Status begin_verify(const nlohmann::json& body);
  Status finish_verify();
  bool on_idle();
  void drain_inbox();

  ControlChannel& channel_;
  std::map<std::string, std::string> local_params_;
  int serial_;
  std::optional<HostPool> pool_;  // declared before agent_: the agent goes first
  std::unique_ptr<Agent> agent_;
  std::optional<VerifyPlan> verify_plan_;
  std::vector<std::uint32_t> verify_block_ids_;
  bool verify_notified_ = false;
};

}  // namespace kvferry::cli
