// ShmTarget: the target half of the shm backend. One thread accepts same-host
// initiators on an abstract Unix socket, hands them the memfds of registered shared
// regions, serves notifications from the shared rings (spinning briefly after activity,
// then sleeping in epoll until an initiator rings its eventfd), and revokes regions on
// deregistration, waiting (bounded) until every initiator confirms it stopped using them.
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

#include "backends/shm/shm_ring.h"
#include "core/backend.h"
#include "core/host_link.h"
#include "core/peer_auth.h"
#include "core/revocation.h"
#include "core/socket_util.h"

namespace kvferry::detail::shm {

struct TargetConfig {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::uint32_t spin_us = 50;
  std::size_t max_notification_bytes = 64 * 1024;
  DeliverNotification deliver;
  std::shared_ptr<const SharedSecret> secret;  // null: initiators are not authenticated
};

class ShmTarget {
 public:
  static Result<std::unique_ptr<ShmTarget>> start(TargetConfig config);
  ~ShmTarget();
  const std::string& socket_name() const { return socket_name_; }
  Status add_region(const RegionInfo& region);
  // Returns once every connected initiator confirmed, or was dropped after the bound.
  Status remove_region(std::uint64_t id);

 private:
  struct Session;
  ShmTarget() = default;
  void run();
  void accept_all();
  void on_session_readable(Session& s);
  void handshake(Session& s, std::vector<std::uint8_t>& msg, std::vector<UniqueFd>& fds);
  bool serve_rings();  // true if any record was handled
  void drop(Session& s, const std::string& why);
  TargetRevocation::Link revocation_link(Session& s);
  bool all_rings_empty();
  void set_sleeping(bool sleeping);

  TargetConfig cfg_;
  std::string socket_name_;
  std::shared_ptr<const HostLinkConfig> link_;
  UniqueFd listener_;
  UniqueFd epoll_;
  UniqueFd wake_;  // rung by initiators (and by us to stop / run commands)
  std::thread thread_;
  std::atomic<bool> running_{true};

  std::mutex mu_;  // regions_, sessions_ (the vector), commands
  std::map<std::uint64_t, std::pair<RegionInfo, std::shared_ptr<UniqueFd>>> regions_;
  std::vector<std::function<void()>> commands_;
  // Engine-thread state (changed under mu_; revocation's operations read it under mu_).
  std::vector<std::shared_ptr<Session>> sessions_;
  // Ready sessions, which hold our regions: deregistration revokes them there.
  std::unique_ptr<TargetRevocation> revocation_;
};

}  // namespace kvferry::detail::shm
