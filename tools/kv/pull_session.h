// pull_session.h — the client side of `kvferry pull`: its own pool and block allocator,
// the handshake with the server, and one measured step (plan, create, post every
// transfer at once, wait, verify every byte).
//
// Handshake: fetch the server's metadata (pushing ours, with our "kv.pool"), say
// "kv.hello" so the server checks our pool, check the server's pool ourselves, then
// wait for the server's verdict. Either side refuses a mismatched geometry with a
// message naming every differing field.
// Not thread-safe: one owner. Members are declared so that the agent stops before the
// pool's memory is unmapped.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/kv_block_allocator.h"
#include "kv/kv_commands.h"
#include "kv/kv_pool_memory.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct PullStep {
  int index = 0;
  bool warmup = false;
  std::uint64_t bytes = 0;
  double ms = 0;  // plan start to the last transfer's completion
  double gbps = 0;
  double plan_us = 0;    // BlockPlanner::plan of every part
  double create_us = 0;  // Agent::create_transfer of every part (validation + merge)
  double post_us = 0;
  std::uint64_t pairs = 0;           // (lane, block) pairs planned
  std::uint64_t merged_planned = 0;  // descriptors after merging, as the plan counts them
  std::uint64_t merged = 0;          // as the agent merged them (telemetry)
  bool verified = false;
  std::string verify_message;
};

class PullSession {
 public:
  static Result<std::unique_ptr<PullSession>> connect(const PullOptions& options);

  const KvLayout& layout() const { return layout_; }
  const std::string& server() const { return server_; }
  Agent& agent() { return *agent_; }
  std::uint32_t blocks_per_step() const { return blocks_; }
  std::uint32_t blocks_moved_per_step() const { return blocks_ - cached_blocks_; }
  std::uint32_t server_pool_blocks() const { return link_->remote_pool().layout().blocks(); }
  const KvPool& server_pool() const { return link_->remote_pool(); }

  // Step `index` (0-based); `last` marks it in its notifications.
  Result<PullStep> run_step(int index, bool last);
  // `kvferry bench`'s method on this connection, the KV layer bypassed (pull_baseline.cc):
  // as many bytes in the same block pattern as step `index` (other server blocks, drawn
  // alike), as one index transfer over flat per-(lane, block) lists, its indices
  // computed before the clock starts, no notification. Verified like a step.
  // Interleaved with the steps, so both meet the same interference on a shared machine.
  Result<PullStep> run_baseline_step(int index);

 private:
  PullSession(const PullOptions& options, const KvLayout& layout, std::uint32_t blocks);
  Status handshake(const std::string& host, std::uint16_t port);
  Status handshake_via_service();
  Status greet();  // hello, pool check, the server's verdict
  Result<bool> wait_for_verdict();
  // The server's block table of step `index`; `for_baseline` draws other blocks, so a
  // baseline step never finds the step's source bytes still in the caches.
  std::vector<std::uint32_t> server_blocks(int index, bool for_baseline = false) const;
  // Sets step.verified or step.verify_message; an error only when the pool's bytes
  // could not be read back (a GPU copy failed).
  Status verify(std::span<const std::uint32_t> source, std::span<const std::uint32_t> destination,
                PullStep& step);

  const PullOptions& options_;
  KvLayout layout_;
  std::unique_ptr<KvPoolMemory> pool_;  // declared before the agent: it outlives it
  std::unique_ptr<Agent> agent_;
  std::optional<LocalKvPool> local_;
  std::optional<KvLink> link_;
  std::string server_;
  std::uint32_t blocks_;         // per step, prompt's whole block table
  std::uint32_t cached_blocks_;  // of them, already present (prefix-cache hit)
  KvBlockAllocator allocator_;
  std::vector<BlockPlan> plans_;   // one per transfer of a step, reused
  std::vector<LayerRange> parts_;  // the layers of each transfer
  PreparedList baseline_remote_;   // the server's flat block list, prepared on first use
};

}  // namespace kvferry::cli
