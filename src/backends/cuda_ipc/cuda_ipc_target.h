// CudaIpcTarget: the target half of the cuda_ipc backend. Exports one CUDA IPC handle
// per registered vram region (for the allocation holding it, plus the region's offset),
// accepts same-host initiators of our user on an abstract Unix socket, hands them the
// handles, delivers their notifications (sent only after the data is visible) and
// revokes regions on deregistration, waiting (bounded) until every initiator confirms.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda_ipc/cuda_ipc_wire.h"
#include "core/backend.h"
#include "core/revocation.h"

namespace kvferry::detail::cuda_ipc {

struct TargetConfig {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::size_t max_notification_bytes = 64 * 1024;
  DeliverNotification deliver;
  std::shared_ptr<const SharedSecret> secret;  // null: initiators are not authenticated
};

struct ExportedRegion {
  RegionInfo info;
  std::uint64_t offset = 0;      // of the region in its allocation
  std::uint64_t alloc_size = 0;  // of that allocation
  std::uint8_t handle[kIpcHandleBytes] = {};
};

class CudaIpcTarget {
 public:
  static Result<std::unique_ptr<CudaIpcTarget>> start(TargetConfig config);
  ~CudaIpcTarget();
  const std::string& socket_name() const { return socket_name_; }
  Status add_region(const RegionInfo& region);
  Status remove_region(std::uint64_t id);

 private:
  struct Session : std::enable_shared_from_this<Session> {
    UniqueFd sock;  // fixed from accept to destruction (drop only shuts it down)
    bool ready = false;
    bool dead = false;
    std::string peer;
    TargetRevocation::LinkId link = 0;  // once ready
    std::unique_ptr<HostLinkAcceptor> acceptor;  // until ready
    Clock::time_point accepted = Clock::now();
  };
  CudaIpcTarget() = default;
  void run();
  void accept_all();
  void on_readable(Session& s);
  void handshake(Session& s, std::vector<std::uint8_t> msg);  // mu_ held
  void drop(Session& s);  // mu_ held
  TargetRevocation::Link revocation_link(Session& s);

  TargetConfig cfg_;
  std::string socket_name_;
  std::shared_ptr<const HostLinkConfig> link_;
  UniqueFd listener_;
  UniqueFd wake_;  // eventfd: stop
  std::thread thread_;
  std::atomic<bool> running_{true};

  std::mutex mu_;  // regions_, sessions_ (the vector and each session's fields)
  std::map<std::uint64_t, ExportedRegion> regions_;
  std::vector<std::shared_ptr<Session>> sessions_;
  // Ready sessions, which hold our regions' handles: deregistration revokes them there.
  std::unique_ptr<TargetRevocation> revocation_;
};

}  // namespace kvferry::detail::cuda_ipc
