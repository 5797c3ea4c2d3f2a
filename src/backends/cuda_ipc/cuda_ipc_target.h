// CudaIpcTarget: the target half of the cuda_ipc backend, on the agent's reactor. The
// core's HostTarget (core/host_target.h) accepts same-host initiators of our user, hands
// them our regions and revokes regions on deregistration; what is cuda_ipc's own is
// here: one CUDA IPC handle per registered vram region (for the allocation holding it,
// plus the region's offset), and the delivery of the initiators' notifications (sent
// only after the data is visible) with their acknowledgements.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "backends/cuda_ipc/cuda_ipc_wire.h"
#include "core/backend.h"
#include "core/host_target.h"
#include "core/reactor.h"

namespace kvferry::detail::cuda_ipc {

using TargetConfig = HostTargetOptions;

class CudaIpcTarget {
 public:
  // `reactor`: the agent's (null: one of our own).
  static Result<std::unique_ptr<CudaIpcTarget>> start(std::shared_ptr<Reactor> reactor, TargetConfig config);
  const std::string& socket_name() const { return host_->socket_name(); }
  Status add_region(const RegionInfo& region);
  // Bounded: peer_timeout, then an initiator that did not confirm is cut off (its jobs
  // fail with PeerLost).
  Status remove_region(std::uint64_t id) { return host_->remove_region(id); }

 private:
  CudaIpcTarget() = default;
  Status on_message(HostTarget::Peer& peer, std::span<const std::uint8_t> msg);  // reactor thread

  TargetConfig cfg_;
  std::unique_ptr<HostTarget> host_;
};

}  // namespace kvferry::detail::cuda_ipc
