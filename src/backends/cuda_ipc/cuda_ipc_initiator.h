// CudaIpcInitiator: the initiator half of the cuda_ipc backend. It connects to
// same-host targets (handshake, the regions and their IPC handles, all validated against
// the peer's metadata); its sessions are served by the agent's reactor through the
// core's HostSessions (core/host_sessions.h): the CUDA events of jobs in flight are
// polled every 10 us while copies run (a timerfd; posts wake it at once), and the
// socket's acknowledgements, revocations and hang-up are handled as they come.
#pragma once

#include <memory>
#include <string>

#include "backends/cuda_ipc/cuda_ipc_session.h"
#include "core/host_sessions.h"
#include "core/reactor.h"

namespace kvferry::detail::cuda_ipc {

class CudaIpcInitiator {
 public:
  // `reactor`: the agent's (null: one of our own).
  static Result<std::unique_ptr<CudaIpcInitiator>> start(std::shared_ptr<Reactor> reactor, SessionConfig cfg,
                                                         std::string process_id);
  Result<std::shared_ptr<CudaIpcSession>> connect(const PeerEndpoint& peer, const std::string& socket_name,
                                                  Deadline deadline);

 private:
  CudaIpcInitiator() = default;

  SessionConfig cfg_;
  std::string process_id_;
  std::unique_ptr<HostSessions> sessions_;
};

}  // namespace kvferry::detail::cuda_ipc
