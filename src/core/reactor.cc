#include "core/reactor.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/socket_util.h"

namespace kvferry::detail {

namespace {
constexpr Reactor::Id kWakeId = 0;  // the eventfd's epoll data; never a watch's id
}  // namespace

struct Reactor::State {
  struct Entry {
    int fd = -1;                       // -1: a timer
    std::shared_ptr<FdHandler> on_fd;  // shared: a dispatch keeps its copy outside the lock
    std::shared_ptr<Task> on_time;
    std::chrono::nanoseconds period{0};  // 0: runs once
  };
  using TimerSlot = std::pair<Clock::time_point, Id>;

  UniqueFd epoll;
  UniqueFd wake;
  std::atomic<std::thread::id> thread_id{};

  std::mutex mu;
  std::condition_variable idle;  // a handler or task finished, or the loop exited
  std::unordered_map<Id, Entry> entries;
  std::priority_queue<TimerSlot, std::vector<TimerSlot>, std::greater<>> timers;
  std::deque<Task> tasks;
  Id next_id = 1;
  Id running = 0;  // the watch or timer whose handler runs now
  bool stopping = false;
  bool exited = false;
  // The loop's thread, joined by ~Reactor (detached only when ~Reactor runs on it). Why
  // joined: a detached thread may still be exiting (its thread-local destructors, e.g.
  // OpenSSL's per-thread state after a handshake) when the process ends.
  std::thread thread;

  bool on_thread() const { return std::this_thread::get_id() == thread_id.load(std::memory_order_relaxed); }

  // Handler run times (written by the loop only; read by stats() from any thread).
  std::atomic<std::uint64_t> runs{0};
  std::atomic<std::uint64_t> slow{0};
  std::atomic<std::int64_t> longest_ns{0};
  // Runs `fn` and accounts for its time.
  template <typename F>
  void timed(F&& fn) {
    const auto t0 = Clock::now();
    fn();
    const std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
    runs.fetch_add(1, std::memory_order_relaxed);
    if (ns > std::chrono::duration_cast<std::chrono::nanoseconds>(kSlow).count()) slow.fetch_add(1, std::memory_order_relaxed);
    if (ns > longest_ns.load(std::memory_order_relaxed)) longest_ns.store(ns, std::memory_order_relaxed);
  }

  void wake_up() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t rc = ::write(wake.get(), &one, sizeof one);
  }

  void finished(Id id) {
    {
      std::lock_guard lock(mu);
      if (running == id) running = 0;
    }
    idle.notify_all();
  }

  // Milliseconds epoll may sleep: 0 with tasks queued, until the next timer, or forever.
  int sleep_ms_locked() {
    if (!tasks.empty()) return 0;
    while (!timers.empty() && !entries.contains(timers.top().second)) timers.pop();  // cancelled
    if (timers.empty()) return -1;
    const auto left = timers.top().first - Clock::now();
    if (left <= std::chrono::nanoseconds::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
  }

  void dispatch(Id id, std::uint32_t events) {
    std::shared_ptr<FdHandler> handler;
    {
      std::lock_guard lock(mu);
      auto it = entries.find(id);
      if (it == entries.end() || !it->second.on_fd) return;  // cancelled after epoll reported it
      handler = it->second.on_fd;
      running = id;
    }
    timed([&] { (*handler)(events); });
    finished(id);
  }

  void run_timers() {
    const auto now = Clock::now();
    for (;;) {
      std::shared_ptr<Task> task;
      std::optional<Entry> done_once;  // destroyed outside the lock
      Id id = 0;
      {
        std::lock_guard lock(mu);
        while (!timers.empty() && !entries.contains(timers.top().second)) timers.pop();
        if (stopping || timers.empty() || timers.top().first > now) return;
        const auto [due, tid] = timers.top();
        timers.pop();
        id = tid;
        auto it = entries.find(id);
        task = it->second.on_time;
        if (it->second.period > std::chrono::nanoseconds::zero()) {
          auto next = due + it->second.period;
          if (next <= now) next = now + it->second.period;  // overran: no catching up
          timers.emplace(next, id);
        } else {
          done_once = std::move(it->second);
          entries.erase(it);
        }
        running = id;
      }
      timed([&] { (*task)(); });
      finished(id);
    }
  }

  void run_tasks() {
    std::deque<Task> batch;
    {
      std::lock_guard lock(mu);
      batch.swap(tasks);
    }
    for (auto& t : batch) timed(t);
    if (!batch.empty()) idle.notify_all();
  }

  void run() {
    epoll_event events[64];
    for (;;) {
      int sleep_ms;
      {
        std::lock_guard lock(mu);
        if (stopping) break;
        sleep_ms = sleep_ms_locked();
      }
      const int n = ::epoll_wait(epoll.get(), events, 64, sleep_ms);
      for (int i = 0; i < n; ++i) {
        const Id id = events[i].data.u64;
        if (id == kWakeId) {
          std::uint64_t v;
          [[maybe_unused]] ssize_t rc = ::read(wake.get(), &v, sizeof v);
          continue;
        }
        dispatch(id, events[i].events);
      }
      run_timers();
      run_tasks();
    }
    // Handlers and tasks are destroyed here, on this thread, outside the lock: their
    // captures may call back into the reactor.
    std::unordered_map<Id, Entry> dropped_entries;
    std::deque<Task> dropped_tasks;
    {
      std::lock_guard lock(mu);
      dropped_entries.swap(entries);
      dropped_tasks.swap(tasks);
      exited = true;
    }
    idle.notify_all();
  }
};

Result<std::shared_ptr<Reactor>> Reactor::start(const std::string& name) {
  auto state = std::make_shared<State>();
  state->epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!state->epoll.valid()) return IoErrorFromErrno("reactor: epoll_create1", errno);
  state->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!state->wake.valid()) return IoErrorFromErrno("reactor: eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeId;
  if (::epoll_ctl(state->epoll.get(), EPOLL_CTL_ADD, state->wake.get(), &ev) != 0) {
    return IoErrorFromErrno("reactor: epoll_ctl", errno);
  }
  std::shared_ptr<Reactor> reactor(new Reactor(state));
  std::thread thread([state] { state->run(); });  // the thread keeps the state alive
  state->thread_id.store(thread.get_id());
  ::pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
  {
    std::lock_guard lock(state->mu);
    state->thread = std::move(thread);  // ~Reactor joins it (or detaches it when run on it)
  }
  return reactor;
}

Reactor::Reactor(std::shared_ptr<State> state) : state_(std::move(state)) {}

Reactor::~Reactor() {
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
  }
  state_->wake_up();
  if (state_->on_thread()) {
    // Dropped by a handler: the loop exits after it returns; nobody can join it.
    std::lock_guard lock(state_->mu);
    if (state_->thread.joinable()) state_->thread.detach();
    return;
  }
  std::thread thread;
  {
    std::unique_lock lock(state_->mu);
    state_->idle.wait(lock, [&] { return state_->exited; });
    thread = std::move(state_->thread);
  }
  if (thread.joinable()) thread.join();
}

Result<Reactor::Id> Reactor::watch(int fd, std::uint32_t events, FdHandler handler) {
  if (fd < 0) return InvalidArgument("reactor: watch of fd " + std::to_string(fd));
  std::lock_guard lock(state_->mu);
  const Id id = state_->next_id++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  if (::epoll_ctl(state_->epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return IoErrorFromErrno("reactor: watch of fd " + std::to_string(fd), errno);
  }
  state_->entries.emplace(id, State::Entry{fd, std::make_shared<FdHandler>(std::move(handler)), nullptr, {}});
  return id;
}

Status Reactor::modify(Id id, std::uint32_t events) {
  std::lock_guard lock(state_->mu);
  auto it = state_->entries.find(id);
  if (it == state_->entries.end() || it->second.fd < 0) {
    return NotFound("reactor: no watch " + std::to_string(id));
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  if (::epoll_ctl(state_->epoll.get(), EPOLL_CTL_MOD, it->second.fd, &ev) != 0) {
    return IoErrorFromErrno("reactor: modify of fd " + std::to_string(it->second.fd), errno);
  }
  return Status::Ok();
}

Reactor::Id Reactor::every(std::chrono::nanoseconds period, Task fn) {
  if (period <= std::chrono::nanoseconds::zero()) period = std::chrono::nanoseconds(1);
  std::lock_guard lock(state_->mu);
  const Id id = state_->next_id++;
  state_->entries.emplace(id, State::Entry{-1, nullptr, std::make_shared<Task>(std::move(fn)), period});
  state_->timers.emplace(Clock::now() + period, id);
  state_->wake_up();  // the loop may sleep past this timer's first turn
  return id;
}

Reactor::Id Reactor::after(std::chrono::nanoseconds delay, Task fn) {
  std::lock_guard lock(state_->mu);
  const Id id = state_->next_id++;
  state_->entries.emplace(id, State::Entry{-1, nullptr, std::make_shared<Task>(std::move(fn)), {}});
  state_->timers.emplace(Clock::now() + delay, id);
  state_->wake_up();
  return id;
}

void Reactor::cancel(Id id) {
  std::optional<State::Entry> gone;  // its handler is destroyed outside the lock
  std::unique_lock lock(state_->mu);
  auto it = state_->entries.find(id);
  if (it != state_->entries.end()) {
    if (it->second.fd >= 0) ::epoll_ctl(state_->epoll.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
    gone = std::move(it->second);
    state_->entries.erase(it);
  }
  if (!state_->on_thread()) {
    state_->idle.wait(lock, [&] { return state_->running != id || state_->exited; });
  }
  lock.unlock();
}

bool Reactor::post(Task fn) {
  bool first;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopping) return false;
    first = state_->tasks.empty();
    state_->tasks.push_back(std::move(fn));
  }
  // Later ones find the loop already woken; one posted from the loop's own thread (a
  // handler re-posting itself) is seen before the loop sleeps again: no eventfd write
  // and read per re-post.
  if (first && !state_->on_thread()) state_->wake_up();
  return true;
}

bool Reactor::run_sync(const Task& fn) {
  if (state_->on_thread()) {
    fn();
    return true;
  }
  auto done = std::make_shared<bool>(false);  // guarded by state_->mu
  auto state = state_;
  if (!post([&fn, done, state] {
        fn();
        std::lock_guard lock(state->mu);
        *done = true;
      })) {
    return false;
  }
  std::unique_lock lock(state_->mu);
  state_->idle.wait(lock, [&] { return *done || state_->exited; });
  return *done;
}

bool Reactor::in_reactor_thread() const { return state_->on_thread(); }

Reactor::Stats Reactor::stats() const {
  return Stats{state_->runs.load(std::memory_order_relaxed), state_->slow.load(std::memory_order_relaxed),
               std::chrono::nanoseconds(state_->longest_ns.load(std::memory_order_relaxed))};
}

}  // namespace kvferry::detail
