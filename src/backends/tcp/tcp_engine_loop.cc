// TcpEngine: the event loop (epoll over the listener, every stream and the command
// eventfd) and accepting streams, capped before their hello.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_session.h"
#include "core/accept_guard.h"

namespace kvferry::detail::tcp {
namespace {

constexpr std::size_t kMaxPendingPerAddress = 64;  // accepted streams before their hello
constexpr std::size_t kMaxPending = 256;

}  // namespace

void TcpEngine::loop() {
  epoll_event events[64];
  bool busy = false;  // requests or answers outstanding as of the last iteration
  while (running_) {
    const bool paused = accept_paused_until_ != Clock::time_point{};
    int timeout_ms = busy ? 50 : (paused ? 100 : (pending_.empty() ? 1000 : 200));
    // While requests are outstanding, poll without sleeping for a short window: a reply
    // is usually microseconds away, and a sleeping thread costs a wake-up to reach.
    int n = 0;
    if (busy && cfg_.spin_us > 0) {
      const auto spin_until = Clock::now() + std::chrono::microseconds(cfg_.spin_us);
      while ((n = ::epoll_wait(epoll_.get(), events, 64, 0)) == 0 && Clock::now() < spin_until) {
      }
    }
    if (n == 0) n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    std::lock_guard engine(engine_mu_);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
        run_commands();
        continue;
      }
      if (fd == listener_.get()) {
        on_accept();
        continue;
      }
      auto it = by_fd_.find(fd);
      if (it == by_fd_.end()) continue;
      Stream* s = it->second;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(*s);
      it = by_fd_.find(fd);
      if (it == by_fd_.end() || it->second != s) continue;
      if (events[i].events & EPOLLOUT) on_writable(*s);
    }
    check_timeouts();
    for (std::uint64_t key : dead_sessions_) sessions_.erase(key);
    dead_sessions_.clear();
    busy = false;
    for (auto& [key, ss] : sessions_) busy = busy || !ss->requests.empty() || ss->peer_session->awaiting();
  }
  std::lock_guard engine(engine_mu_);
  std::lock_guard lock(cmd_mu_);
  stopping_ = true;
  for (auto& c : commands_) c();  // posts fail (sessions gone); syncs are answered
  commands_.clear();
}

void TcpEngine::run_commands() {
  std::vector<Command> cmds;
  {
    std::lock_guard lock(cmd_mu_);
    cmds.swap(commands_);
  }
  for (auto& c : cmds) c();
}

void TcpEngine::on_accept() {
  // Streams before their hello are untrusted: capped per remote address and in total,
  // the oldest making room (a real initiator sends its hello at once).
  auto evict_pending = [&](std::vector<std::unique_ptr<Stream>>::iterator it) {
    close_stream(**it);
    pending_.erase(it);
  };
  for (int k = 0; k < 64; ++k) {  // bounded: then serve the streams we have
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (!out_of_descriptors(errno)) return;
      // Out of descriptors: a silent stream gives one back; with none, stop watching the
      // listener a while (it stays readable: watching it would be a busy loop).
      std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
      if (!pending_.empty()) {
        evict_pending(pending_.begin());
        continue;
      }
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
      accept_paused_until_ = Clock::now() + kAcceptBackoff;
      return;
    }
    set_nodelay(fd).ok();  // latency only
    std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
    std::string address = peer_address(fd);
    static const std::size_t max_pending = descriptor_share(kMaxPending, 4);
    auto evict = slot_to_free(pending_, address, kMaxPendingPerAddress, max_pending,
                              [](const std::unique_ptr<Stream>& p) -> const std::string& { return p->address; });
    if (evict != pending_.end()) evict_pending(evict);
    auto st = std::make_unique<Stream>();
    st->address = std::move(address);
    st->fd = UniqueFd(fd);
    epoll_event ev{};
    ev.events = st->events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
    by_fd_[fd] = st.get();
    pending_.push_back(std::move(st));
  }
}

}  // namespace kvferry::detail::tcp
