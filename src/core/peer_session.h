// PeerSession: the part of a backend's link to one peer that is the same in every
// backend, kept once in the core (docs/backend_guide.md, "Session layer"):
//
//  - health: OK until the first fail(), then PeerLost naming the backend, the peer and
//    the first cause; it never becomes OK again (a new link is a new session);
//  - requests awaiting the peer's answer: an id per request (never 0, never reused),
//    a deadline (peer_timeout from when it was sent), the answer that finishes the job;
//  - "notify after these bytes": settle() takes a job whose bytes are all in place and
//    either finishes it or sends its notification and keeps it until the peer answers;
//  - peer loss: fail() finishes every awaiting job with the loss, check_deadlines()
//    turns an overdue answer into a loss, so nothing waits without a bound;
//  - activity: for a link whose requests take as long as their bytes do (a stream
//    socket), "no progress from the peer for peer_timeout while busy" is the loss, with
//    a ping due at a quarter of it (note_progress, check_activity; lock-free, for a
//    progress thread that receives many frames a second).
//
// The backend keeps what only it knows: how bytes move, how a notification travels
// (the `send` callback), and when the peer is gone (its socket, its process).
//
// Thread-safe: every method may be called from any thread. No lock is held while a
// job is finished or while `send` runs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/process_watch.h"
#include "core/transfer_job.h"
#include "kvferry/status.h"

namespace kvferry::detail {

class PeerSession {
 public:
  // Sends a job's notification to the peer as request `req`; an error means it did not go.
  using SendNotification = std::function<Status(std::uint64_t req, std::string_view message)>;
  using Clock = std::chrono::steady_clock;

  // `backend` and `peer` name the link in the loss message ("shm peer 'b': ...").
  // `on_lost`, if given, runs once, in the first fail() (also one from
  // check_deadlines()), before the awaiting jobs are finished: a backend closes its
  // socket there so that the peer sees the loss too. `peer_pid`: a same-host peer's
  // process, watched by confirm_alive() (0: none).
  PeerSession(std::string backend, std::string peer, std::chrono::milliseconds peer_timeout,
              std::function<void()> on_lost = {}, pid_t peer_pid = 0);
  PeerSession(const PeerSession&) = delete;
  PeerSession& operator=(const PeerSession&) = delete;

  const std::string& peer() const { return peer_; }
  std::chrono::milliseconds peer_timeout() const { return peer_timeout_; }

  // OK, or the PeerLost of the first fail().
  Status health() const;
  bool dead() const { return dead_.load(std::memory_order_acquire); }
  // Marks the peer lost and finishes every awaiting job with that status. Only the first
  // call does so, and returns true (the caller may then close its own resources).
  bool fail(const Status& why);

  // A job whose copies ended with `copied`. An error, a lost peer or a job without a
  // notification: finished now. Otherwise its notification goes out through `send`
  // (after the bytes: the caller ensures they are visible to the peer) and the job
  // finishes on the peer's answer (on_answer), or with the loss, or with send's error.
  void settle(const std::shared_ptr<TransferJob>& job, Status copied, const SendNotification& send);

  // `copied`, unless it is OK while the watched peer process is gone: then the session
  // fails and its loss is returned. Copies through shared or IPC mappings complete even
  // after the peer was killed (the mappings keep its pages), and its socket hangs up only
  // later: only its process can say whether it is still there to own them.
  Status confirm_alive(Status copied);

  // The peer's answer to request `req`: an empty `refusal` means it kept the
  // notification; otherwise the text says why not. Unknown ids (cancelled, already
  // failed) are ignored.
  void on_answer(std::uint64_t req, std::string_view refusal);

  // The job no longer awaits an answer (cancel); a late answer is then ignored. Returns
  // the request id it awaited (0: none), so the backend can drop a notification not sent yet.
  std::uint64_t forget(const std::shared_ptr<TransferJob>& job);

  // Request ids for a backend that sends requests of its own under ids (tcp's writes and
  // reads): one id space with the notifications', so that answers of every kind are told
  // apart on one wire. Never 0, never reused. Lock-free.
  std::uint64_t new_request() { return next_req_.fetch_add(1, std::memory_order_relaxed); }

  // A notification that travels ahead of its bytes, for a link whose peer holds it back
  // until every byte sent before it under the same id has landed (tcp's target counts
  // them): the backend sends it with the bytes, as request `req` (from new_request()).
  // The job then finishes once both settle() and on_answer() came, in either order: with
  // settle's error if it has one, else with the answer. Until settle() the answer has no
  // deadline of its own (the bytes are still moving: check_activity bounds that); after
  // it, peer_timeout. False (nothing registered) once the peer is lost.
  bool announce(const std::shared_ptr<TransferJob>& job, std::uint64_t req);

  // Fails the session when an answer is overdue (call it from the progress loop; it
  // takes no lock while no deadline has passed).
  void check_deadlines();
  // Whether any job awaits an answer (lock-free).
  bool awaiting() const { return awaiting_count_.load(std::memory_order_relaxed) > 0; }

  // Activity. The peer made progress (we received from it). Lock-free.
  void note_progress(Clock::time_point now = Clock::now()) {
    last_progress_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
  enum class Activity { kFine, kPingDue, kLost };
  // Call it from the progress loop with whether the link has work outstanding (requests
  // in flight, bytes queued, answers awaited). Idle links are not timed: the clock
  // restarts. Busy with no progress for peer_timeout: the session fails ("no progress for
  // N ms") and kLost is returned. No progress for a quarter of it, and no ping for as
  // long: kPingDue (the backend sends one; its answer is progress). Lock-free.
  Activity check_activity(bool busy, Clock::time_point now = Clock::now());

 private:
  struct Awaiting {
    std::shared_ptr<TransferJob> job;
    Clock::time_point deadline = Clock::time_point::max();  // max: announced, not settled yet
    bool answered = false;  // an announced job's answer came before its settle()
    Status answer;
  };
  // With mu_ held: removes request `req` (and its job's index entry).
  std::shared_ptr<TransferJob> take_locked(std::uint64_t req);
  void counted_locked() { awaiting_count_.store(awaiting_.size(), std::memory_order_relaxed); }
  Status refusal_status(std::string_view refusal) const;

  const std::string backend_;
  const std::string peer_;
  const std::chrono::milliseconds peer_timeout_;
  const std::function<void()> on_lost_;
  const ProcessWatch process_;

  std::atomic<std::uint64_t> next_req_{1};
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, Awaiting> awaiting_;
  std::unordered_map<const TransferJob*, std::uint64_t> req_of_job_;
  Status lost_;
  std::atomic<bool> dead_{false};
  std::atomic<std::size_t> awaiting_count_{0};
  // No deadline of awaiting_ is earlier (a lower bound: check_deadlines skips the lock
  // before it). Clock ticks since the epoch.
  std::atomic<Clock::rep> earliest_deadline_{Clock::time_point::max().time_since_epoch().count()};
  std::atomic<Clock::rep> last_progress_{Clock::now().time_since_epoch().count()};
  std::atomic<Clock::rep> last_ping_{Clock::now().time_since_epoch().count()};
};

}  // namespace kvferry::detail
