// TcpEngine on the agent's reactor: start, the command queue, stream watches, the tick,
// settling closed streams, the spin window, and accepting streams (capped before their hello).
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_serving.h"
#include "backends/tcp/tcp_session.h"
#include "core/accept_guard.h"

namespace kvferry::detail::tcp {
namespace {

constexpr std::size_t kMaxPendingPerAddress = 64;  // accepted streams before their hello
constexpr std::size_t kMaxPending = 256;

}  // namespace

Result<std::shared_ptr<TcpEngine>> TcpEngine::start(EngineConfig config, UniqueFd listener,
                                                    std::shared_ptr<Reactor> reactor) {
  if (!reactor) {  // a backend made without an agent (tests): a reactor of its own
    KVF_ASSIGN_OR_RETURN(reactor, Reactor::start("kvf-tcp"));
  }
  auto e = std::make_shared<TcpEngine>(std::move(config), std::move(listener), std::move(reactor));
  TcpEngine* raw = e.get();
  std::lock_guard engine(e->engine_mu_);  // the handlers wait until the ids are set
  auto id = e->reactor_->watch(e->listener_.get(), EPOLLIN, [raw](std::uint32_t) {
    std::lock_guard lock(raw->engine_mu_);
    Serving serving(raw);
    raw->on_accept();
    raw->settle();
  });
  if (!id.ok()) return id.status().with_context("tcp: serving the listening socket");
  e->listener_watch_ = *id;
  // Peer sessions' pings and deadlines, silent accepted streams, the accept back-off.
  const auto period = std::clamp<std::chrono::milliseconds>(e->cfg_.peer_timeout / 8, std::chrono::milliseconds(5),
                                                            std::chrono::milliseconds(50));
  e->tick_ = e->reactor_->every(period, [raw] { raw->on_tick(); });
  return e;
}

TcpEngine::TcpEngine(EngineConfig config, UniqueFd listener, std::shared_ptr<Reactor> reactor)
    : cfg_(std::move(config)), listener_(std::move(listener)), reactor_(std::move(reactor)) {
  scratch_.resize(1u << 20);
}

TcpEngine::~TcpEngine() {
  // On the reactor thread, so no handler of ours runs meanwhile; once it returns none is
  // left that could run (posted tasks hold only a weak reference, now expired).
  reactor_->run_sync([this] {
    std::lock_guard engine(engine_mu_);
    run_commands();
    for (auto& [key, ss] : sessions_) fail_session(*ss, PeerLost("tcp backend shut down"));
    for (auto& p : pending_) close_stream(*p);
    reactor_->cancel(listener_watch_);
    reactor_->cancel(tick_);
    running_ = false;
    settle();
    pending_.clear();
    std::lock_guard lock(cmd_mu_);
    stopping_ = true;
    for (auto& c : commands_) c();  // posts fail (sessions gone); syncs are answered
    commands_.clear();
  });
  if (zeros_) ::munmap(zeros_, kMaxChunkBytes);
}

void TcpEngine::enqueue(Command cmd) {
  bool first;
  {
    std::lock_guard lock(cmd_mu_);
    first = commands_.empty();
    commands_.push_back(std::move(cmd));
  }
  // One task drains the queue; a later command finds it queued already.
  if (first) {
    reactor_->post([weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self) return;
      std::lock_guard engine(self->engine_mu_);
      Serving serving(self.get());
      if (!self->running_) return;
      self->run_commands();
      self->settle();
    });
  }
}

void TcpEngine::request_settle() {
  if (settle_requested_) return;
  settle_requested_ = true;
  reactor_->post([weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    std::lock_guard engine(self->engine_mu_);
    Serving serving(self.get());
    self->settle();
  });
}

Status TcpEngine::run_sync(std::function<Status()> fn) {
  if (t_serving == this) return Internal("tcp engine called from its own handler (it would wait for itself)");
  if (reactor_->in_reactor_thread()) {
    std::lock_guard engine(engine_mu_);
    Serving serving(this);
    if (!running_) return Unavailable("tcp backend is shut down");
    run_commands();  // whatever was queued first
    Status s = fn();
    settle();
    return s;
  }
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  {
    std::lock_guard lock(cmd_mu_);
    if (stopping_) return Unavailable("tcp backend is shut down");
  }
  enqueue([promise, fn = std::move(fn)] { promise->set_value(fn()); });
  // The reactor answers within one turn; the bound only guards against bugs.
  if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    return Internal("tcp engine did not answer a command within 30 s");
  return future.get();
}

bool TcpEngine::watch_stream(Stream& s) {
  s.events = EPOLLIN;
  auto id = reactor_->watch(s.fd.get(), EPOLLIN, [this, st = &s](std::uint32_t events) { on_stream_event(st, events); });
  if (!id.ok()) {
    close_stream(s);
    return false;
  }
  s.watch = *id;
  return true;
}

void TcpEngine::on_stream_event(Stream* s, std::uint32_t events) {
  std::lock_guard engine(engine_mu_);
  Serving serving(this);
  // A stream closed meanwhile (its watch is retired by settle) is left alone; the Stream
  // itself lives until then.
  if (s->fd.valid() && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(*s);
  if (s->fd.valid() && (events & EPOLLOUT)) on_writable(*s);
  settle();
}

void TcpEngine::on_tick() {
  std::lock_guard engine(engine_mu_);
  Serving serving(this);
  if (!running_) return;
  check_timeouts();
  settle();
}

void TcpEngine::settle() {
  settle_requested_ = false;
  for (auto& [watch, fd] : retired_) reactor_->cancel(watch);  // on the reactor thread: at once
  retired_.clear();                                           // then the sockets close
  for (std::uint64_t key : dead_sessions_) sessions_.erase(key);
  dead_sessions_.clear();
  if (cfg_.spin_us == 0 || !running_) return;
  spin_busy_ = false;
  for (auto& [key, ss] : sessions_) spin_busy_ = spin_busy_ || !ss->requests.empty() || ss->peer_session->awaiting();
  if (!spin_busy_) return;
  spin_until_ = Clock::now() + std::chrono::microseconds(cfg_.spin_us);
  if (spinning_) return;
  spinning_ = true;
  reactor_->post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->spin_turn();
  });
}

void TcpEngine::spin_turn() {
  // One turn of the spin window: the reactor polls its fds without sleeping between turns
  // (a task is queued), and every other handler still runs between them. Reactor-thread
  // state only (settle keeps it), so a caller's post() is never kept from the engine lock.
  if (!running_ || !spin_busy_ || Clock::now() >= spin_until_) {
    spinning_ = false;
    return;
  }
  reactor_->post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->spin_turn();
  });
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
      reactor_->modify(listener_watch_, 0).ok();
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
    if (!watch_stream(*st)) continue;  // closed: retired by settle
    pending_.push_back(std::move(st));
  }
}

}  // namespace kvferry::detail::tcp
