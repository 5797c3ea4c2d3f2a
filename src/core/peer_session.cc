#include "core/peer_session.h"

#include <utility>
#include <vector>

namespace kvferry::detail {

PeerSession::PeerSession(std::string backend, std::string peer, std::chrono::milliseconds peer_timeout,
                         std::function<void()> on_lost, pid_t peer_pid)
    : backend_(std::move(backend)),
      peer_(std::move(peer)),
      peer_timeout_(peer_timeout),
      on_lost_(std::move(on_lost)),
      process_(peer_pid == 0 ? ProcessWatch() : ProcessWatch(peer_pid)) {}

Status PeerSession::confirm_alive(Status copied) {
  if (!copied.ok() || dead() || !process_.gone()) return copied;
  fail(PeerLost("the peer process was killed or exited"));
  return health();
}

Status PeerSession::health() const {
  std::lock_guard lock(mu_);
  return lost_;
}

bool PeerSession::fail(const Status& why) {
  std::unordered_map<std::uint64_t, Awaiting> awaiting;
  Status lost;
  {
    // dead_ and lost_ change under mu_, so settle() either sees the loss or registers
    // its job before the swap below (never a job left awaiting on a dead session).
    std::lock_guard lock(mu_);
    if (dead_.load(std::memory_order_relaxed)) return false;
    lost_ = PeerLost(backend_ + " peer '" + peer_ + "': " + why.message());
    dead_.store(true, std::memory_order_release);
    awaiting.swap(awaiting_);
    lost = lost_;
  }
  if (on_lost_) on_lost_();
  for (auto& [req, a] : awaiting) a.job->finish(lost);
  return true;
}

void PeerSession::settle(const std::shared_ptr<TransferJob>& job, Status copied, const SendNotification& send) {
  std::uint64_t req = 0;
  {
    std::lock_guard lock(mu_);
    if (copied.ok() && dead_.load(std::memory_order_relaxed)) copied = lost_;
    if (copied.ok() && job->notification()) {
      req = next_req_++;
      awaiting_[req] = Awaiting{job, std::chrono::steady_clock::now() + peer_timeout_};
    }
  }
  if (req == 0) {
    job->finish(std::move(copied));
    return;
  }
  Status sent = send(req, *job->notification());
  if (sent.ok()) return;
  bool mine;
  {
    std::lock_guard lock(mu_);
    mine = awaiting_.erase(req) > 0;
  }
  if (mine) job->finish(std::move(sent));
}

void PeerSession::on_answer(std::uint64_t req, std::string_view refusal) {
  std::shared_ptr<TransferJob> job;
  {
    std::lock_guard lock(mu_);
    auto it = awaiting_.find(req);
    if (it == awaiting_.end()) return;  // cancelled or failed meanwhile
    job = std::move(it->second.job);
    awaiting_.erase(it);
  }
  job->finish(refusal.empty() ? Status::Ok()
                              : RemoteError("peer '" + peer_ + "' did not keep the notification: " +
                                            std::string(refusal)));
}

void PeerSession::forget(const std::shared_ptr<TransferJob>& job) {
  std::lock_guard lock(mu_);
  for (auto it = awaiting_.begin(); it != awaiting_.end(); ++it) {
    if (it->second.job == job) {
      awaiting_.erase(it);
      return;
    }
  }
}

void PeerSession::check_deadlines() {
  const auto now = std::chrono::steady_clock::now();
  bool overdue = false;
  {
    std::lock_guard lock(mu_);
    for (const auto& [req, a] : awaiting_) overdue = overdue || now > a.deadline;
  }
  if (overdue) fail(PeerLost("no acknowledgement for " + std::to_string(peer_timeout_.count()) + " ms"));
}

bool PeerSession::awaiting() const {
  std::lock_guard lock(mu_);
  return !awaiting_.empty();
}

}  // namespace kvferry::detail
