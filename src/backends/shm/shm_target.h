// ShmTarget: the target half of the shm backend, on the agent's reactor. The core's
// HostTarget (core/host_target.h) accepts same-host initiators, hands them the memfds of
// registered shared regions and revokes regions on deregistration; what is shm's own is
// here: the control block and eventfd of each initiator's hello, and the notifications
// of the shared rings, served when an initiator rings our eventfd and then polled for
// spin_us after the last record (up to 50 us per reactor call, re-armed at once with a
// zero-delay timer while records keep coming), so that a burst needs no wake-up per record.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "backends/shm/shm_ring.h"
#include "core/backend.h"
#include "core/host_target.h"
#include "core/peer_auth.h"
#include "core/reactor.h"
#include "core/socket_util.h"

namespace kvferry::detail::shm {

struct TargetConfig : HostTargetOptions {
  std::uint32_t spin_us = 50;  // serving the rings again at once for this long after a record
};

class ShmTarget {
 public:
  // `reactor`: the agent's (null: one of our own).
  static Result<std::unique_ptr<ShmTarget>> start(std::shared_ptr<Reactor> reactor, TargetConfig config);
  ~ShmTarget();
  const std::string& socket_name() const { return host_->socket_name(); }
  Status add_region(const RegionInfo& region);
  // Returns once every connected initiator confirmed, or was dropped after the bound.
  Status remove_region(std::uint64_t id) { return host_->remove_region(id); }

 private:
  struct Rings;  // an initiator's control block and eventfd
  ShmTarget() = default;
  Status accept(HostTarget::Peer& peer, std::vector<UniqueFd>& fds, std::vector<int>* answer);
  void serve();        // reactor thread: the rings, then spin or sleep
  bool serve_rings();  // true if any record was handled
  void set_sleeping(bool sleeping);
  bool all_rings_empty();
  static Rings* rings_of(HostTarget::Peer& p);

  TargetConfig cfg_;
  UniqueFd wake_;  // rung by initiators whose records wait while we sleep
  std::unique_ptr<HostTarget> host_;
  Reactor::Id wake_watch_ = 0;
  // Reactor thread only.
  std::vector<std::shared_ptr<HostTarget::Peer>> ready_;
  Reactor::Id spin_ = 0;  // the re-armed serve() while spinning
  bool stopping_ = false;
  Clock::time_point last_activity_{};
};

}  // namespace kvferry::detail::shm
