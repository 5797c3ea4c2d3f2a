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
//    turns an overdue answer into a loss, so nothing waits without a bound.
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

  // The job no longer awaits an answer (cancel); a late answer is then ignored.
  void forget(const std::shared_ptr<TransferJob>& job);

  // Fails the session when an answer is overdue (call it from the progress loop).
  void check_deadlines();
  bool awaiting() const;

 private:
  struct Awaiting {
    std::shared_ptr<TransferJob> job;
    std::chrono::steady_clock::time_point deadline;
  };

  const std::string backend_;
  const std::string peer_;
  const std::chrono::milliseconds peer_timeout_;
  const std::function<void()> on_lost_;
  const ProcessWatch process_;

  mutable std::mutex mu_;
  std::uint64_t next_req_ = 1;
  std::unordered_map<std::uint64_t, Awaiting> awaiting_;
  Status lost_;
  std::atomic<bool> dead_{false};
};

}  // namespace kvferry::detail
