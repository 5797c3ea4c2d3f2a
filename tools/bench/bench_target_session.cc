#include "bench/bench_target_session.h"

#include <chrono>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "bench/bench_ceiling.h"
#include "bench/bench_verify_data.h"
#include "common/cli_util.h"
#include "common/stop_signal.h"

namespace kvferry::cli {
namespace {

// The initiator may spend minutes in timed transfers that need nothing from us.
constexpr std::chrono::minutes kSessionIdleLimit{10};
constexpr std::chrono::milliseconds kIdleSlice{200};
constexpr std::chrono::seconds kNotificationWait{30};

}  // namespace

Status TargetSession::run() {
  KVF_ASSIGN_OR_RETURN(ControlMessage first, channel_.receive());
  if (first.type != ControlType::kSetup) return Corrupt("expected a setup message first");
  if (Status status = setup(first.body); !status.ok()) {
    channel_.send_error(status);
    return status;
  }
  while (true) {
    Result<ControlMessage> next = channel_.receive_when_ready(kSessionIdleLimit, kIdleSlice,
                                                       [this] { return on_idle(); });
    if (!next.ok()) {
      // The initiator closing its end is how a session normally ends, too.
      if (next.status().code() == StatusCode::kPeerLost) return Status::Ok();
      return next.status();
    }
    if (next->type == ControlType::kBye) return Status::Ok();
    if (Status status = handle(*next); !status.ok()) {
      channel_.send_error(status);
      return status;
    }
  }
}

Status TargetSession::setup(const nlohmann::json& body) {
  KVF_ASSIGN_OR_RETURN(SessionSetup setup, parse_session_setup(body));
  std::map<std::string, std::string> params = setup.backend_params;
  for (const auto& [key, value] : local_params_) params[key] = value;
  KVF_ASSIGN_OR_RETURN(agent_, make_single_backend_agent(unique_agent_name("bench-target", serial_),
                                                         setup.backend, std::move(params), setup.metadata_service));
  KVF_ASSIGN_OR_RETURN(HostPool pool, HostPool::allocate(setup.shape, 0,
                                                         wants_shared_pool(setup.backend) ? agent_.get() : nullptr));
  pool_.emplace(std::move(pool));
  KVF_RETURN_IF_ERROR(agent_->register_memory(pool_->region()).with_context("registering the target pool"));
  if (!setup.metadata_service.empty()) {  // the initiator's metadata comes from the service
    KVF_RETURN_IF_ERROR(agent_->sync_metadata(std::chrono::seconds(10)));  // our pool, before we answer
    KVF_RETURN_IF_ERROR(wait_for_named_peer(*agent_, setup.agent, std::chrono::seconds(10)));
    return channel_.send(ControlType::kSetupReply, to_json(SetupReply{{}, pool_->address(), agent_->name()}));
  }
  KVF_RETURN_IF_ERROR(agent_->load_remote(setup.metadata).status().with_context("loading initiator metadata"));
  KVF_ASSIGN_OR_RETURN(std::vector<std::uint8_t> metadata, agent_->local_metadata());
  return channel_.send(ControlType::kSetupReply,
                       to_json(SetupReply{std::move(metadata), pool_->address(), agent_->name()}));
}

Status TargetSession::handle(const ControlMessage& message) {
  switch (message.type) {
    case ControlType::kVerifyBegin:
      return begin_verify(message.body);
    case ControlType::kVerifyCheck:
      return finish_verify();
    case ControlType::kStreamBegin: {
      KVF_ASSIGN_OR_RETURN(StreamPlan plan, parse_stream_plan(message.body));
      return serve_stream(channel_, *pool_, plan);
    }
    case ControlType::kPingPongBegin: {
      const auto count = message.body.find("count");
      if (count == message.body.end() || !count->is_number_unsigned()) {
        return Corrupt("ping-pong message without a count");
      }
      return serve_ping_pong(channel_, count->get<std::uint32_t>());
    }
    default:
      return Corrupt("unexpected control message " + control_type_name(static_cast<std::uint32_t>(message.type)));
  }
}

Status TargetSession::begin_verify(const nlohmann::json& body) {
  KVF_ASSIGN_OR_RETURN(VerifyPlan plan, parse_verify_plan(body));
  const std::uint32_t pool_blocks = pool_->layout().blocks();
  if (plan.blocks == 0 || plan.blocks > pool_blocks) return InvalidArgument("verify: bad block count");
  verify_block_ids_ = choose_block_ids(plan.pattern, plan.remote_seed, pool_blocks, plan.blocks);
  drain_inbox();
  verify_notified_ = false;
  if (plan.op == TransferOp::kWrite) {
    poison_pool(*pool_);
  } else {
    fill_request_blocks(*pool_, verify_block_ids_, plan.data_seed);
  }
  verify_plan_ = plan;
  return channel_.send(ControlType::kVerifyReady, nlohmann::json::object());
}

Status TargetSession::finish_verify() {
  if (!verify_plan_ || verify_plan_->op != TransferOp::kWrite) {
    return FailedPrecondition("verify check without a verified write in progress");
  }
  const auto deadline = Clock::now() + kNotificationWait;
  drain_inbox();
  while (!verify_notified_ && Clock::now() < deadline && !stop_requested()) {
    agent_->wait_for_notifications(std::chrono::milliseconds(200));
    drain_inbox();
  }
  VerifyOutcome outcome;
  if (!verify_notified_) {
    outcome.message = "the verified write's notification did not arrive within 30 s";
  } else {
    outcome = check_request_blocks(*pool_, verify_block_ids_, verify_plan_->data_seed);
  }
  verify_plan_.reset();
  return channel_.send(ControlType::kVerifyResult, to_json(outcome));
}

bool TargetSession::on_idle() {
  drain_inbox();
  return !stop_requested();
}

void TargetSession::drain_inbox() {
  if (!agent_) return;
  for (const Notification& notification : agent_->take_notifications()) {
    if (notification.message == kVerifyNotification) verify_notified_ = true;
  }
}

}  // namespace kvferry::cli
