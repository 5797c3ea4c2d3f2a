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

  // The link to a loaded peer's pool (published under `key`).
  Result<KvLink> link(Agent& agent, std::string_view peer, std::string_view key = kKvPoolMetadataKey) const;

 private:
  LocalKvPool(KvPool pool, PreparedList blocks) : pool_(std::move(pool)), blocks_(std::move(blocks)) {}
  KvPool pool_;
  PreparedList blocks_;
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
  // The transfer of `plan`, in the direction it was planned for. Usually an index
  // transfer over the prepared lists (the Agent merges contiguous runs). When the
  // plan's runs merge its pairs at least 8-fold, the merged descriptors go to the Agent
  // directly instead: it then validates a few long descriptors rather than merging
  // every pair (a fresh engine's contiguous 32K-token pull: 80 instead of 163,840).
  Result<TransferRequest> create_transfer(Agent& agent, const BlockPlan& plan,
                                          TransferOptions options = {}) const;

 private:
  friend class LocalKvPool;
  Result<TransferRequest> create_merged_transfer(Agent& agent, const BlockPlan& plan,
                                                 TransferOptions options) const;
  KvLink(std::string peer, KvPool local_pool, KvPool remote_pool, BlockPlanner planner,
         PreparedList local_blocks, PreparedList remote_blocks)
      : peer_(std::move(peer)),
        local_pool_(std::move(local_pool)),
        remote_pool_(std::move(remote_pool)),
        planner_(std::move(planner)),
        local_blocks_(std::move(local_blocks)),
        remote_blocks_(std::move(remote_blocks)) {}

  std::string peer_;
  KvPool local_pool_;
  KvPool remote_pool_;
  BlockPlanner planner_;
  PreparedList local_blocks_;
  PreparedList remote_blocks_;
};

}  // namespace kvferry
