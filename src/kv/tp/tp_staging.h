// tp_staging.h — the staging arenas of one TP endpoint: host (pinned when the pool is on
// a GPU) and device (on the pool's GPU), each made on first use and registered with the
// Agent, deregistered when the endpoint goes. Not thread-safe: the endpoint's lock guards it.
#pragma once

#include <memory>

#include "kvferry/agent.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/staging_slots.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry::tp {

class StagingArenas {
 public:
  StagingArenas(Agent& agent, const TpStagingOptions& options, MemoryKind pool_kind, std::uint32_t pool_device)
      : agent_(agent), options_(options), pool_kind_(pool_kind), pool_device_(pool_device) {}
  ~StagingArenas();
  StagingArenas(const StagingArenas&) = delete;
  StagingArenas& operator=(const StagingArenas&) = delete;

  // The arena of `kind` (dram: host staging; vram: device staging), made and registered
  // on first use.
  Result<StagingSlots*> arena(MemoryKind kind);
  // Bytes one acquire() of `kind` can hold at most.
  std::uint64_t capacity(MemoryKind kind) const;
  const TpStagingOptions& options() const { return options_; }

 private:
  Agent& agent_;
  TpStagingOptions options_;
  MemoryKind pool_kind_;
  std::uint32_t pool_device_;
  std::unique_ptr<StagingSlots> host_;
  std::unique_ptr<StagingSlots> device_;
};

// Host staging of a GPU pool through a device bounce slot of `arenas` (when
// TpStagingOptions::host_via_device and one is free now), else straight into / out of the
// pinned `host` staging. Blocking, like gather_kv_heads / scatter_kv_heads.
Status gather_to_host(StagingArenas& arenas, const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                      const KvStaging& host);
Status scatter_from_host(StagingArenas& arenas, const KvStaging& host, const KvPool& pool,
                         const KvTokenWindow& window, HeadRange heads);

}  // namespace kvferry::tp
