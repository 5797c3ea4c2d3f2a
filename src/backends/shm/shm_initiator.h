// ShmInitiator: the initiator half of the shm backend. It connects to same-host targets
// (handshake, region mappings, the process_vm_* permission probe); its sessions are
// served by the agent's reactor through the core's HostSessions (core/host_sessions.h):
// acknowledgements are taken when the target rings our eventfd (waiters that spin take
// their own), the peer timeout is checked every 20 ms while acknowledgements are
// awaited, and the socket's revocations and hang-up are handled as they come.
#pragma once

#include <memory>

#include "backends/shm/shm_session.h"
#include "core/backend.h"
#include "core/host_link.h"
#include "core/host_sessions.h"
#include "core/reactor.h"

namespace kvferry::detail::shm {

class ShmInitiator {
 public:
  // `reactor`: the agent's (null: one of our own).
  static Result<std::unique_ptr<ShmInitiator>> start(std::shared_ptr<Reactor> reactor, SessionConfig cfg);
  // Blocks up to `deadline` for the handshake.
  Result<std::shared_ptr<ShmSession>> connect(const PeerEndpoint& peer, const std::string& socket_name,
                                              Deadline deadline);

 private:
  ShmInitiator() = default;

  SessionConfig cfg_;
  HostLinkConfig link_;
  std::unique_ptr<HostSessions> sessions_;  // its eventfd goes to every target
};

}  // namespace kvferry::detail::shm
