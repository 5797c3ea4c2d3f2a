#include "bench/bench_session.h"

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "bench/bench_protocol.h"
#include "common/block_choice.h"

namespace kvferry::cli {

Result<std::unique_ptr<InitiatorSession>> InitiatorSession::start(const BenchOptions& options,
                                                                  ControlChannel& channel) {
  std::map<std::string, std::string> params = options.shared_params;
  for (const auto& [key, value] : options.local_params) params[key] = value;
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent,
                       make_single_backend_agent(unique_agent_name("bench-initiator"),
                                                 options.backend, std::move(params), options.metadata));
  KVF_ASSIGN_OR_RETURN(HostPool pool, HostPool::allocate(options.pool_shape(), 0,
                                                         wants_shared_pool(options.backend) ? agent.get() : nullptr));
  std::unique_ptr<InitiatorSession> session(new InitiatorSession(options, channel, std::move(pool)));
  session->agent_ = std::move(agent);
  KVF_RETURN_IF_ERROR(session->agent_->register_memory(session->pool_.region())
                          .with_context("registering the initiator pool"));
  KVF_RETURN_IF_ERROR(session->exchange_metadata());
  return session;
}

Status InitiatorSession::exchange_metadata() {
  std::vector<std::uint8_t> metadata;  // through the metadata service when there is one
  if (options_.metadata.empty()) {
    KVF_ASSIGN_OR_RETURN(metadata, agent_->local_metadata());
  } else {
    KVF_RETURN_IF_ERROR(agent_->sync_metadata(std::chrono::seconds(10)));
  }
  SessionSetup setup{options_.backend, options_.shared_params, options_.pool_shape(), std::move(metadata),
                     options_.metadata, agent_->name()};
  KVF_RETURN_IF_ERROR(channel_.send(ControlType::kSetup, to_json(setup)));
  KVF_ASSIGN_OR_RETURN(nlohmann::json body, channel_.expect(ControlType::kSetupReply));
  KVF_ASSIGN_OR_RETURN(SetupReply reply, parse_setup_reply(body));
  remote_pool_address_ = reply.pool_address;
  if (options_.metadata.empty()) {
    KVF_ASSIGN_OR_RETURN(peer_, agent_->load_remote(reply.metadata));
  } else {
    KVF_RETURN_IF_ERROR(wait_for_named_peer(*agent_, reply.agent, std::chrono::seconds(10)));
    peer_ = reply.agent;
  }

  // The target's pool has our layout (the setup carried it) at the address it reported.
  KVF_ASSIGN_OR_RETURN(const KvPool remote_pool,
                       KvPool::create_contiguous(pool_.layout(), MemoryKind::kDram, remote_pool_address_));
  KVF_ASSIGN_OR_RETURN(local_blocks_, agent_->prepare_local(pool_.block_descriptors()));
  KVF_ASSIGN_OR_RETURN(remote_blocks_, agent_->prepare_remote(peer_, remote_pool.block_descriptors()));
  KVF_ASSIGN_OR_RETURN(local_lanes_, agent_->prepare_local_lanes(pool_.block_lanes()));
  KVF_ASSIGN_OR_RETURN(remote_lanes_, agent_->prepare_remote_lanes(peer_, remote_pool.block_lanes()));
  return Status::Ok();
}

Result<TransferRequest> InitiatorSession::create_request(TransferOp op, std::span<const std::uint32_t> local_ids,
                                                         std::span<const std::uint32_t> remote_ids,
                                                         TransferOptions transfer) const {
  if (options_.index_form) {
    const std::uint32_t pool_blocks = pool_.layout().blocks();
    const std::vector<std::uint32_t> l(local_ids.begin(), local_ids.end()), r(remote_ids.begin(), remote_ids.end());
    return agent_->create_transfer(op, local_blocks_, indices_in_every_layer(l, options_.layers, pool_blocks),
                                   remote_blocks_, indices_in_every_layer(r, options_.layers, pool_blocks),
                                   std::move(transfer));
  }
  LaneTransfer t;
  t.local_blocks = local_ids;
  t.remote_blocks = remote_ids;
  t.lane_count = options_.layers;
  return agent_->create_transfer(op, local_lanes_, remote_lanes_, t, std::move(transfer));
}

TransferOptions InitiatorSession::transfer_options(std::optional<std::string> notification) const {
  TransferOptions transfer;
  transfer.backend = options_.backend;
  transfer.notification = std::move(notification);
  return transfer;
}

void InitiatorSession::finish() { (void)channel_.send(ControlType::kBye, nlohmann::json::object()); }

}  // namespace kvferry::cli
