#include "core/peer_session.h"

#include <algorithm>
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
  if (!dead()) return Status::Ok();  // the common case, without the lock
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
    req_of_job_.clear();
    counted_locked();
    lost = lost_;
  }
  if (on_lost_) on_lost_();
  for (auto& [req, a] : awaiting) a.job->finish(lost);
  return true;
}

std::shared_ptr<TransferJob> PeerSession::take_locked(std::uint64_t req) {
  auto it = awaiting_.find(req);
  if (it == awaiting_.end()) return nullptr;
  std::shared_ptr<TransferJob> job = std::move(it->second.job);
  awaiting_.erase(it);
  req_of_job_.erase(job.get());
  counted_locked();
  return job;
}

Status PeerSession::refusal_status(std::string_view refusal) const {
  if (refusal.empty()) return Status::Ok();
  return RemoteError("peer '" + peer_ + "' did not keep the notification: " + std::string(refusal));
}

bool PeerSession::announce(const std::shared_ptr<TransferJob>& job, std::uint64_t req) {
  std::lock_guard lock(mu_);
  if (dead_.load(std::memory_order_relaxed)) return false;
  awaiting_[req] = Awaiting{job};
  req_of_job_[job.get()] = req;
  counted_locked();
  return true;
}

void PeerSession::settle(const std::shared_ptr<TransferJob>& job, Status copied, const SendNotification& send) {
  if (!job->notification()) {  // nothing awaits an answer: no lock needed
    if (copied.ok() && dead()) copied = health();
    job->finish(std::move(copied));
    return;
  }
  std::uint64_t req = 0;
  std::shared_ptr<TransferJob> done;
  {
    std::lock_guard lock(mu_);
    if (copied.ok() && dead_.load(std::memory_order_relaxed)) copied = lost_;
    if (auto known = req_of_job_.find(job.get()); known != req_of_job_.end()) {  // announced
      Awaiting& a = awaiting_.at(known->second);
      if (!copied.ok() || a.answered) {
        if (copied.ok()) copied = std::move(a.answer);
        done = take_locked(known->second);
      } else {
        a.deadline = Clock::now() + peer_timeout_;
        Clock::rep d = a.deadline.time_since_epoch().count();
        if (d < earliest_deadline_.load(std::memory_order_relaxed))
          earliest_deadline_.store(d, std::memory_order_relaxed);
        return;  // the answer finishes it
      }
    } else if (copied.ok()) {
      req = new_request();
      const auto deadline = Clock::now() + peer_timeout_;
      awaiting_[req] = Awaiting{job, deadline};
      req_of_job_[job.get()] = req;
      counted_locked();
      Clock::rep d = deadline.time_since_epoch().count();
      if (d < earliest_deadline_.load(std::memory_order_relaxed))
        earliest_deadline_.store(d, std::memory_order_relaxed);
    }
  }
  if (req == 0) {
    job->finish(std::move(copied));
    return;
  }
  Status sent = send(req, *job->notification());
  if (sent.ok()) return;
  {
    std::lock_guard lock(mu_);
    done = take_locked(req);
  }
  if (done) done->finish(std::move(sent));
}

void PeerSession::on_answer(std::uint64_t req, std::string_view refusal) {
  std::shared_ptr<TransferJob> job;
  {
    std::lock_guard lock(mu_);
    auto it = awaiting_.find(req);
    if (it == awaiting_.end()) return;  // cancelled or failed meanwhile
    if (it->second.deadline == Clock::time_point::max()) {  // announced: its bytes are not settled yet
      it->second.answered = true;
      it->second.answer = refusal_status(refusal);
      return;
    }
    job = take_locked(req);
  }
  job->finish(refusal_status(refusal));
}

std::uint64_t PeerSession::forget(const std::shared_ptr<TransferJob>& job) {
  std::lock_guard lock(mu_);
  auto it = req_of_job_.find(job.get());
  if (it == req_of_job_.end()) return 0;
  const std::uint64_t req = it->second;
  take_locked(req);
  return req;
}

void PeerSession::check_deadlines() {
  const auto now = Clock::now();
  if (now.time_since_epoch().count() < earliest_deadline_.load(std::memory_order_relaxed)) return;
  bool overdue = false;
  {
    std::lock_guard lock(mu_);
    Clock::time_point earliest = Clock::time_point::max();
    for (const auto& [req, a] : awaiting_) {
      overdue = overdue || now > a.deadline;
      earliest = std::min(earliest, a.deadline);
    }
    earliest_deadline_.store(earliest.time_since_epoch().count(), std::memory_order_relaxed);
  }
  if (overdue) fail(PeerLost("no acknowledgement for " + std::to_string(peer_timeout_.count()) + " ms"));
}

PeerSession::Activity PeerSession::check_activity(bool busy, Clock::time_point now) {
  const Clock::rep t = now.time_since_epoch().count();
  if (!busy) {  // idle links are not timed
    last_progress_.store(t, std::memory_order_relaxed);
    return Activity::kFine;
  }
  const Clock::duration quiet(t - last_progress_.load(std::memory_order_relaxed));
  if (quiet > peer_timeout_) {
    fail(PeerLost("no progress for " + std::to_string(peer_timeout_.count()) + " ms"));
    return Activity::kLost;
  }
  const Clock::duration since_ping(t - last_ping_.load(std::memory_order_relaxed));
  if (quiet > peer_timeout_ / 4 && since_ping > peer_timeout_ / 4) {
    last_ping_.store(t, std::memory_order_relaxed);
    return Activity::kPingDue;
  }
  return Activity::kFine;
}

}  // namespace kvferry::detail
