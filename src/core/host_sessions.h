// HostSessions: the initiator side of the same-host backends (shm, cuda_ipc) on the
// agent's reactor (core/reactor.h), kept once in the core. Each session's socket is a
// watch (the target's revokes and answers, its hang-up); one eventfd, handed to targets
// or rung by posts, and a timer run every session's progress: take what completed
// (acknowledgements, GPU events), check deadlines. No thread of its own, none per
// session.
//
// Progress scheduling: a session's progress returns how soon it wants to run again
// while it waits for something (shm: 20 ms while acknowledgements are awaited;
// cuda_ipc: 10 us while GPU copies run); the soonest wish arms a timerfd (microsecond
// precision, unlike epoll's millisecond timeouts). Idle sessions run every
// `idle_period` (deadlines, the peer process's watch) or when woken.
//
// Threading: add() and wake() from any thread; hooks run on the reactor thread, one at a
// time. Hooks must hold their session weakly (a weak_ptr): a round may call a hook whose
// membership is being dropped on another thread. Ownership: a Membership (kept by the
// session, declared after its socket) ends the watch of the socket when destroyed, so no
// handler touches the socket after it closes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/reactor.h"
#include "core/socket_util.h"

namespace kvferry::detail {

class HostSessions {
 public:
  using Wish = std::optional<std::chrono::nanoseconds>;  // run again within; nullopt: idle
  struct Hooks {
    // The socket is readable or hung up. A session that is done (lost, closed) calls
    // `stop` while it still holds itself: its socket is not watched any more (it would
    // stay readable at its end), and the watch ends before the socket can close.
    std::function<void(const std::function<void()>& stop)> readable;
    std::function<Wish()> progress;  // take what completed, check deadlines
  };
  struct State;  // shared with the reactor's handlers and the memberships

  class Membership {
   public:
    Membership() = default;
    Membership(std::shared_ptr<State> state, std::uint64_t key, Reactor::Id watch);
    Membership(Membership&& o) noexcept { *this = std::move(o); }
    Membership& operator=(Membership&& o) noexcept;
    ~Membership() { reset(); }
    // Ends the watch (waits for a running handler unless called on the reactor thread).
    void reset();

   private:
    std::shared_ptr<State> state_;
    std::uint64_t key_ = 0;
    Reactor::Id watch_ = 0;
  };

  // `reactor`: the agent's; null starts one of our own (backends made without an agent).
  // `backend` prefixes errors.
  static Result<std::unique_ptr<HostSessions>> start(std::shared_ptr<Reactor> reactor, std::string backend,
                                                     std::chrono::milliseconds idle_period);
  ~HostSessions();
  HostSessions(const HostSessions&) = delete;
  HostSessions& operator=(const HostSessions&) = delete;

  // Watches `sock` (which must stay open until the membership is reset) and runs `hooks`
  // from the next round on.
  Result<Membership> add(int sock, Hooks hooks);
  // The eventfd that runs a round when rung (kept open while we live).
  int wake_fd() const;
  Reactor& reactor();

 private:
  explicit HostSessions(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace kvferry::detail
