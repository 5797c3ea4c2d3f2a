#include "core/host_sessions.h"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <vector>

namespace kvferry::detail {

struct HostSessions::State {
  std::shared_ptr<Reactor> reactor;
  std::string backend;
  UniqueFd wake;   // eventfd: run a round now
  UniqueFd timer;  // timerfd: the soonest wish of the last round
  Reactor::Id wake_watch = 0, timer_watch = 0, idle_timer = 0;

  std::mutex mu;  // hooks, next_key
  std::map<std::uint64_t, std::function<Wish()>> hooks;
  std::uint64_t next_key = 1;

  // Reactor thread only.
  bool armed = false;
  Clock::time_point armed_due{};

  void arm(std::chrono::nanoseconds in) {
    const auto due = Clock::now() + in;
    if (armed && armed_due <= due) return;
    in = std::max(in, std::chrono::nanoseconds(1000));  // 0 would disarm it
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(in.count() / 1000000000);
    spec.it_value.tv_nsec = static_cast<long>(in.count() % 1000000000);
    if (::timerfd_settime(timer.get(), 0, &spec, nullptr) != 0) return;  // the idle timer still runs
    armed = true;
    armed_due = due;
  }

  void round() {
    std::vector<std::function<Wish()>> batch;
    {
      std::lock_guard lock(mu);
      batch.reserve(hooks.size());
      for (auto& [key, h] : hooks) batch.push_back(h);
    }
    Wish soonest;
    for (auto& h : batch) {
      const Wish w = h();
      if (w && (!soonest || *w < *soonest)) soonest = w;
    }
    if (soonest) arm(*soonest);
  }
};

Result<std::unique_ptr<HostSessions>> HostSessions::start(std::shared_ptr<Reactor> reactor,
                                                          std::string backend,
                                                          std::chrono::milliseconds idle_period) {
  if (!reactor) { KVF_ASSIGN_OR_RETURN(reactor, Reactor::start("kvf-" + backend)); }
  auto state = std::make_shared<State>();
  state->reactor = std::move(reactor);
  state->backend = std::move(backend);
  KVF_ASSIGN_OR_RETURN(state->wake, make_eventfd(state->backend));
  state->timer = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!state->timer.valid()) return IoErrorFromErrno(state->backend + ": timerfd_create", errno);
  std::unique_ptr<HostSessions> s(new HostSessions(state));
  // The handlers hold the state by raw pointer: ~HostSessions cancels them first.
  State* raw = state.get();
  KVF_ASSIGN_OR_RETURN(state->wake_watch,
                       state->reactor->watch(state->wake.get(), EPOLLIN, [raw](std::uint32_t) {
                         std::uint64_t v;
                         [[maybe_unused]] ssize_t rc = ::read(raw->wake.get(), &v, sizeof v);
                         raw->round();
                       }));
  auto timer_watch = state->reactor->watch(state->timer.get(), EPOLLIN, [raw](std::uint32_t) {
    std::uint64_t v;
    [[maybe_unused]] ssize_t rc = ::read(raw->timer.get(), &v, sizeof v);
    raw->armed = false;
    raw->round();
  });
  if (!timer_watch.ok()) {
    state->reactor->cancel(state->wake_watch);
    return timer_watch.status();
  }
  state->timer_watch = *timer_watch;
  state->idle_timer = state->reactor->every(idle_period, [raw] { raw->round(); });
  return s;
}

HostSessions::~HostSessions() {
  for (Reactor::Id id : {state_->idle_timer, state_->timer_watch, state_->wake_watch})
    state_->reactor->cancel(id);
}

Result<HostSessions::Membership> HostSessions::add(int sock, Hooks hooks) {
  std::uint64_t key;
  {
    std::lock_guard lock(state_->mu);
    key = state_->next_key++;
    state_->hooks.emplace(key, std::move(hooks.progress));
  }
  // The handler learns its own id once watch() returned (it may fire before).
  auto self = std::make_shared<std::atomic<Reactor::Id>>(0);
  auto watch = state_->reactor->watch(
      sock, EPOLLIN, [readable = std::move(hooks.readable), self, reactor = state_->reactor.get()](std::uint32_t) {
        readable([&] {
          if (const Reactor::Id id = self->load()) reactor->cancel(id);  // from its own handler: at once
        });
      });
  if (!watch.ok()) {
    std::lock_guard lock(state_->mu);
    state_->hooks.erase(key);
    return watch.status().with_context(state_->backend + ": watching a session's socket");
  }
  self->store(*watch);
  // A round now: the session's first wish (and its deadlines) are taken in at once.
  ring_eventfd(state_->wake.get());
  return Membership(state_, key, *watch);
}

int HostSessions::wake_fd() const { return state_->wake.get(); }
Reactor& HostSessions::reactor() { return *state_->reactor; }

HostSessions::Membership::Membership(std::shared_ptr<State> state, std::uint64_t key, Reactor::Id watch)
    : state_(std::move(state)), key_(key), watch_(watch) {}

HostSessions::Membership& HostSessions::Membership::operator=(Membership&& o) noexcept {
  if (this != &o) {
    reset();
    state_ = std::move(o.state_);
    key_ = std::exchange(o.key_, 0);
    watch_ = std::exchange(o.watch_, 0);
  }
  return *this;
}

void HostSessions::Membership::reset() {
  if (!state_) return;
  state_->reactor->cancel(watch_);
  std::function<Wish()> gone;  // destroyed outside the lock
  {
    std::lock_guard lock(state_->mu);
    if (auto it = state_->hooks.find(key_); it != state_->hooks.end()) {
      gone = std::move(it->second);
      state_->hooks.erase(it);
    }
  }
  state_.reset();
}

}  // namespace kvferry::detail
