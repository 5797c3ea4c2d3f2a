// kvferry/kv/kv_link.h — a local KV pool on an Agent, and its link to one peer's pool.
//
// Typical use (a decode engine pulling a prompt's blocks from a prefill engine):
//   agent->register_memory(pool.tensor_regions());            // once, one per tensor
//   auto local = LocalKvPool::attach(*agent, pool);           // publish + prepare once
//   auto peer = agent->fetch_remote(host, port);              // metadata both ways
//   auto link = local->link(*agent, *peer);                   // check + prepare once
//   BlockPlan plan;                                           // reused per request
//   link->plan(TransferOp::kRead, {prefill_blocks, our_blocks}, plan);
//   auto request = link->create_transfer(*agent, plan, {.notification = "req 42"});
//   request->post();
//
// Contract
// - `LocalKvPool` and `KvLink` are immutable once made: every method is const and
//   thread-safe; copies share their prepared lists. They hold no reference to the
//   Agent; pass the Agent that made them (another agent's transfer is refused).
// - Lifetime: the pool's memory must stay registered while links are used; a link to a
//   peer that was forgotten or reloaded fails its transfers with a clear error (make a
//   new link after the peer restarts).
// - `link()` reads the peer's "kv.pool" entry from its loaded metadata, checks it with
//   check_kv_compatible() (the error names every differing field) and prepares the
//   peer's block descriptors once; per request only index vectors are built.
#pragma once

#include <string>
#include <string_view>

#include "kvferry/agent.h"
#include "kvferry/kv/block_plan.h"
#include "kvferry/kv/kv_handshake.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry {

class KvLink;

class LocalKvPool {
 public:
  // Publishes `pool` under `key` in the agent's metadata and prepares its block
  // descriptors. Its tensor_regions() must already be registered with `agent`.
  static Result<LocalKvPool> attach(Agent& agent, const KvPool& pool,
                                    std::string_view key = kKvPoolMetadataKey);

  const KvPool& pool() const { return pool_; }
  const PreparedList& blocks() const { return blocks_; }
  const PreparedLanes& lanes() const { return lanes_; }

  // The link to a loaded peer's pool (published under `key`).
  Result<KvLink> link(Agent& agent, std::string_view peer, std::string_view key = kKvPoolMetadataKey) const;

 private:
  LocalKvPool(KvPool pool, PreparedList blocks, PreparedLanes lanes)
      : pool_(std::move(pool)), blocks_(std::move(blocks)), lanes_(std::move(lanes)) {}
  KvPool pool_;
  PreparedList blocks_;
  PreparedLanes lanes_;
};

class KvLink {
 public:
  const std::string& peer() const { return peer_; }
  const KvPool& local_pool() const { return local_pool_; }
  const KvPool& remote_pool() const { return remote_pool_; }
  const BlockPlanner& planner() const { return planner_; }

  // BlockPlanner::plan over the two pools.
  Status plan(TransferOp op, const BlockSelection& selection, BlockPlan& out) const {
    return planner_.plan(op, selection, out);
  }
  // The transfer of `plan`, in the direction it was planned for: a strided transfer
  // (block_lanes.h) over the two pools' lanes, prepared once. The Agent checks block id
  // ranges, merges runs of consecutive blocks once for all lanes, and never expands
  // (lane, block) pairs: a 32K-token scattered pull costs O(blocks + lanes), not O(pairs).
  Result<TransferRequest> create_transfer(Agent& agent, const BlockPlan& plan,
                                          TransferOptions options = {}) const;

 private:
  friend class LocalKvPool;
  KvLink(std::string peer, KvPool local_pool, KvPool remote_pool, BlockPlanner planner,
         PreparedList local_blocks, PreparedList remote_blocks, PreparedLanes local_lanes,
         PreparedLanes remote_lanes)
      : peer_(std::move(peer)),
        local_pool_(std::move(local_pool)),
        remote_pool_(std::move(remote_pool)),
        planner_(std::move(planner)),
        local_blocks_(std::move(local_blocks)),
        remote_blocks_(std::move(remote_blocks)),
        local_lanes_(std::move(local_lanes)),
        remote_lanes_(std::move(remote_lanes)) {}

  std::string peer_;
  KvPool local_pool_;
  KvPool remote_pool_;
  BlockPlanner planner_;
  PreparedList local_blocks_;
  PreparedList remote_blocks_;
  PreparedLanes local_lanes_;
  PreparedLanes remote_lanes_;
};

}  // namespace kvferry
