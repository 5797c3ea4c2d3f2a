// ShmInitiator: the initiator half of the shm backend. It connects to same-host targets
// (handshake, region mappings, the process_vm_* permission probe) and runs one progress
// thread that takes acknowledgements when no waiter is spinning, enforces the peer
// timeout, answers revocations and notices a peer that went away.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "backends/shm/shm_session.h"
#include "core/backend.h"
#include "core/host_link.h"

namespace kvferry::detail::shm {

class ShmInitiator {
 public:
  static Result<std::unique_ptr<ShmInitiator>> start(SessionConfig cfg);
  ~ShmInitiator();
  // Blocks up to `deadline` for the handshake.
  Result<std::shared_ptr<ShmSession>> connect(const PeerEndpoint& peer, const std::string& socket_name,
                                              Deadline deadline);

 private:
  ShmInitiator() = default;
  void run();

  SessionConfig cfg_;
  HostLinkConfig link_;
  UniqueFd epoll_;
  UniqueFd wake_;  // handed to every target: rung when an ack arrives while we sleep
  std::thread thread_;
  std::atomic<bool> running_{true};
  std::mutex mu_;
  std::vector<std::weak_ptr<ShmSession>> sessions_;
  std::set<int> watched_;  // session sockets in epoll_ (guarded by mu_)
};

}  // namespace kvferry::detail::shm
