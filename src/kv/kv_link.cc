#include "kvferry/kv/kv_link.h"

namespace kvferry {

Result<LocalKvPool> LocalKvPool::attach(Agent& agent, const KvPool& pool, std::string_view key) {
  KVF_RETURN_IF_ERROR(publish_kv_pool(agent, pool, key));
  Result<PreparedList> blocks = agent.prepare_local(pool.block_descriptors());
  if (!blocks.ok()) {
    return blocks.status().with_context(
        "preparing the local KV pool's blocks (register its tensor_regions() first)");
  }
  Result<PreparedLanes> lanes = agent.prepare_local_lanes(pool.block_lanes());
  if (!lanes.ok()) return lanes.status().with_context("preparing the local KV pool's lanes");
  return LocalKvPool(pool, std::move(blocks).value(), std::move(lanes).value());
}

Result<KvLink> LocalKvPool::link(Agent& agent, std::string_view peer, std::string_view key) const {
  KVF_ASSIGN_OR_RETURN(KvPool remote, remote_kv_pool(agent, peer, key));
  KVF_RETURN_IF_ERROR(check_kv_compatible(pool_.layout(), remote.layout(), peer));
  KVF_ASSIGN_OR_RETURN(BlockPlanner planner, BlockPlanner::create(pool_.layout(), remote.layout()));
  Result<PreparedList> remote_blocks = agent.prepare_remote(peer, remote.block_descriptors());
  if (!remote_blocks.ok()) {
    return remote_blocks.status().with_context(
        "preparing peer '" + std::string(peer) +
        "'s KV pool blocks (its pool lies outside the memory it registered)");
  }
  Result<PreparedLanes> remote_lanes = agent.prepare_remote_lanes(peer, remote.block_lanes());
  if (!remote_lanes.ok())
    return remote_lanes.status().with_context("preparing peer '" + std::string(peer) + "'s KV pool lanes");
  return KvLink(std::string(peer), pool_, std::move(remote), std::move(planner), blocks_,
                std::move(remote_blocks).value(), lanes_, std::move(remote_lanes).value());
}

Result<TransferRequest> KvLink::create_transfer(Agent& agent, const BlockPlan& plan,
                                                TransferOptions options) const {
  if (plan.pairs() == 0) return InvalidArgument("kv link: the block plan is empty (nothing to move)");
  LaneTransfer t;
  t.local_blocks = plan.local_blocks();
  t.remote_blocks = plan.remote_blocks();
  t.first_lane = plan.first_lane();
  t.lane_count = plan.end_lane() - plan.first_lane();
  return agent.create_transfer(plan.op(), local_lanes_, remote_lanes_, t, std::move(options));
}

}  // namespace kvferry
