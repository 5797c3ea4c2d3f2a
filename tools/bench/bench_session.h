// bench_session.h — the initiator's side of one bench session with one target.
//
// Owns the initiator's pool and agent; exchanges metadata with the target over the
// control channel (kSetup / kSetupReply); prepares the whole-pool descriptor lists of
// both sides once, so every request of every case is an index transfer against them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "bench/bench_options.h"
#include "common/control_channel.h"
#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

// Bound on one request's wait: long enough for hundreds of MiB on a slow path, short
// enough that a broken peer does not hang the bench.
inline constexpr std::chrono::seconds kTransferTimeout{60};

class InitiatorSession {
 public:
  static Result<std::unique_ptr<InitiatorSession>> start(const BenchOptions& options,
                                                         ControlChannel& channel);

  const BenchOptions& options() const { return options_; }
  ControlChannel& channel() { return channel_; }
  Agent& agent() { return *agent_; }
  const HostPool& pool() const { return pool_; }
  const std::string& peer() const { return peer_; }
  std::uint64_t remote_pool_address() const { return remote_pool_address_; }
  const PreparedList& local_blocks() const { return local_blocks_; }
  const PreparedList& remote_blocks() const { return remote_blocks_; }
  const PreparedLanes& local_lanes() const { return local_lanes_; }
  const PreparedLanes& remote_lanes() const { return remote_lanes_; }
  // The request moving local blocks `local_ids` <-> remote blocks `remote_ids` of every
  // layer: a strided transfer (lanes x block ids), or with --index-form the index
  // transfer of the expanded (layer, block) pairs.
  Result<TransferRequest> create_request(TransferOp op, std::span<const std::uint32_t> local_ids,
                                         std::span<const std::uint32_t> remote_ids,
                                         TransferOptions transfer) const;
  // Forces the bench's backend; `notification` optional.
  TransferOptions transfer_options(std::optional<std::string> notification = std::nullopt) const;

  // Tells the target the session is over (best effort).
  void finish();

 private:
  InitiatorSession(const BenchOptions& options, ControlChannel& channel, HostPool pool)
      : options_(options), channel_(channel), pool_(std::move(pool)) {}
  Status exchange_metadata();

  const BenchOptions& options_;
  ControlChannel& channel_;
  HostPool pool_;                  // declared before agent_: the agent goes first
  std::unique_ptr<Agent> agent_;
  std::string peer_;
  std::uint64_t remote_pool_address_ = 0;
  PreparedList local_blocks_;
  PreparedList remote_blocks_;
  PreparedLanes local_lanes_;
  PreparedLanes remote_lanes_;
};

}  // namespace kvferry::cli
