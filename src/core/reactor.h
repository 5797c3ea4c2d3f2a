// Reactor: one event loop per agent. Every backend's sockets, wake-ups and periodic checks
// (session health, deadlines, acknowledgements) are served by this one thread instead of a
// loop per backend and per session: the thread count of an agent does not grow with its
// backends or peers, and "who runs when" is the same for every backend.
//
// Handlers run on the reactor thread, one at a time, and must not block: do socket I/O
// non-blocking, hand copies to a worker pool, and never wait on another handler. The
// bounded waits that a caller's thread needs (connect, revoke) stay on the caller's thread.
//
// Threading: every method is thread-safe and may be called from a handler. Ownership: the
// agent creates the reactor and hands a shared_ptr to each backend (BackendContext::reactor);
// the last owner's destructor stops the thread. A handler may drop the last reference to the
// reactor (the thread then finishes the handler and exits on its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvferry/status.h"

namespace kvferry::detail {

class Reactor {
 public:
  // Names a watch or a timer; 0 is never used.
  using Id = std::uint64_t;
  using FdHandler = std::function<void(std::uint32_t events)>;  // epoll events that are ready
  using Task = std::function<void()>;

  // Starts the thread; `name` (at most 15 characters shown) names it for top -H and perf.
  static Result<std::shared_ptr<Reactor>> start(const std::string& name);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Serves `events` (EPOLLIN, EPOLLOUT, ...; level-triggered unless EPOLLET) of `fd`. The fd
  // must stay open until cancel(id) has returned; one watch per fd.
  Result<Id> watch(int fd, std::uint32_t events, FdHandler handler);
  // Changes the events a watch serves.
  Status modify(Id id, std::uint32_t events);

  // Runs `fn` every `period`, the first time one period from now, until cancelled. A handler
  // that overruns is not called twice to catch up.
  Id every(std::chrono::nanoseconds period, Task fn);
  // Runs `fn` once, `delay` from now, unless cancelled first.
  Id after(std::chrono::nanoseconds delay, Task fn);

  // Ends a watch or a timer. When cancel returns, its handler is not running and will not run
  // again; called from that handler itself, it returns at once and the handler is not called
  // again. Unknown or already cancelled ids are ignored. Do not call it while holding a lock
  // that the handler takes: it waits for the handler to return.
  void cancel(Id id);

  // Runs `fn` soon on the reactor thread; tasks run in the order they were posted. Returns
  // false (and drops fn) once the reactor is stopping.
  bool post(Task fn);
  // Runs `fn` on the reactor thread and returns when it has run (inline on that thread).
  // Returns false when the reactor stopped before it ran.
  bool run_sync(const Task& fn);

  bool in_reactor_thread() const;

  // How long handlers, timers and tasks ran (wall time, so a handler that blocks shows):
  // how many ran, how many ran longer than kSlow, the longest. A loop that serves every
  // backend must never be held; tests assert on these, users see them in the metrics.
  static constexpr std::chrono::milliseconds kSlow{50};
  struct Stats {
    std::uint64_t runs = 0;
    std::uint64_t slow = 0;
    std::chrono::nanoseconds longest{0};
  };
  Stats stats() const;

  struct State;  // the loop's data, shared with its thread

 private:
  explicit Reactor(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace kvferry::detail
