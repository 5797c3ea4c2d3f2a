#include "kvferry/kv/kv_link.h"

namespace kvferry {

Result<LocalKvPool> LocalKvPool::attach(Agent& agent, const KvPool& pool, std::string_view key) {
  KVF_RETURN_IF_ERROR(publish_kv_pool(agent, pool, key));
  Result<PreparedList> blocks = agent.prepare_local(pool.block_descriptors());
  if (!blocks.ok()) {
    return blocks.status().with_context(
        "preparing the local KV pool's blocks (register its tensor_regions() first)");
  }
  return LocalKvPool(pool, std::move(blocks).value());
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
  return KvLink(std::string(peer), pool_, std::move(remote), std::move(planner), blocks_,
                std::move(remote_blocks).value());
}

Result<TransferRequest> KvLink::create_transfer(Agent& agent, const BlockPlan& plan,
                                                TransferOptions options) const {
  if (plan.pairs() == 0) return InvalidArgument("kv link: the block plan is empty (nothing to move)");
  // Consecutive blocks of a lane are adjacent in memory in every arrangement so far;
  // the check keeps the shortcut honest if a future one (head slices) is not.
  const KvLayout& layout = local_pool_.layout();
  const bool runs_are_contiguous = layout.block_stride() == layout.segment_bytes();
  if (runs_are_contiguous && plan.merged_descriptors() * 8 <= plan.pairs()) {
    return create_merged_transfer(agent, plan, std::move(options));
  }
  return agent.create_transfer(plan.op(), local_blocks_, plan.local_indices(), remote_blocks_,
                               plan.remote_indices(), std::move(options));
}

Result<TransferRequest> KvLink::create_merged_transfer(Agent& agent, const BlockPlan& plan,
                                                       TransferOptions options) const {
  const std::uint64_t segment = local_pool_.layout().segment_bytes();
  DescriptorList local(local_pool_.kind());
  DescriptorList remote(remote_pool_.kind());
  local.reserve(plan.merged_descriptors());
  remote.reserve(plan.merged_descriptors());
  for (std::uint32_t lane = plan.first_lane(); lane < plan.end_lane(); ++lane) {
    for (const BlockRun& run : plan.runs()) {
      local.add(local_pool_.segment_address(lane, run.local_first), run.count * segment,
                local_pool_.device());
      remote.add(remote_pool_.segment_address(lane, run.remote_first), run.count * segment,
                 remote_pool_.device());
    }
  }
  return agent.create_transfer(plan.op(), local, peer_, remote, std::move(options));
}

}  // namespace kvferry
