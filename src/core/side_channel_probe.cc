#include "core/side_channel_probe.h"

#include <netdb.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace kvferry::detail {

// One call's progress; owned by its watch and timer (and the caller's handle).
struct SideChannelCall::State {
  Reactor* reactor = nullptr;  // outlives every handler of ours (they end before it does)
  UniqueFd fd;
  Reactor::Id watch = 0;
  Reactor::Id timer = 0;
  std::unique_ptr<SideCallExchange> exchange;
  bool connected = false;
  std::vector<std::uint8_t> out;
  std::size_t out_sent = 0;
  std::vector<std::uint8_t> in;
  Done done;  // empty once finished or cancelled

  void end() {
    reactor->cancel(watch);  // on the reactor thread: at once, even from the watch's handler
    reactor->cancel(timer);
    watch = timer = 0;
    fd.reset();
  }

  void finish(Result<std::vector<std::uint8_t>> result) {
    if (!done) return;
    Done d = std::exchange(done, nullptr);
    end();
    d(std::move(result));
  }

  void on_event(std::uint32_t events) {
    if (!done) return;
    if (!connected) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0 && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      if (err != 0)
        return finish(Unavailable(exchange->where() + ": connect: " + std::strerror(err)));
      connected = true;
      set_nodelay(fd.get()).ok();  // latency only
    }
    if (!flush()) return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read();
  }

  // Sends what it can of the output; false when finished (failed).
  bool flush() {
    if (out_sent == out.size()) {
      out = exchange->take_output();
      out_sent = 0;
    }
    while (out_sent < out.size()) {
      ssize_t n = ::send(fd.get(), out.data() + out_sent, out.size() - out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        reactor->modify(watch, EPOLLIN | EPOLLOUT).ok();
        return true;
      }
      if (n <= 0) {
        finish(PeerLost(exchange->where() + ": send: " + std::strerror(errno)));
        return false;
      }
      out_sent += static_cast<std::size_t>(n);
    }
    reactor->modify(watch, EPOLLIN).ok();
    return true;
  }

  void read() {
    std::uint8_t buf[16 * 1024];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0)
      return finish(PeerLost(exchange->where() + ": " +
                             (n == 0 ? std::string("closed before replying") : std::string(std::strerror(errno)))));
    in.insert(in.end(), buf, buf + n);
    for (;;) {
      auto frame = next_side_frame(in);
      if (!frame.ok()) return finish(Corrupt(exchange->where() + ": " + frame.status().message()));
      if (!*frame) return;
      auto result = exchange->on_frame((*frame)->type, (*frame)->payload);
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>((*frame)->bytes));
      if (result) return finish(std::move(*result));
      if (!flush()) return;
    }
  }
};

std::shared_ptr<SideChannelCall> SideChannelCall::start(std::shared_ptr<Reactor> reactor, const std::string& host,
                                                        std::uint16_t port, SideFrame type,
                                                        std::span<const std::uint8_t> payload, SideFrame expect,
                                                        Deadline deadline, std::shared_ptr<const SharedSecret> secret,
                                                        Done done) {
  auto s = std::make_shared<State>();
  s->reactor = reactor.get();
  s->done = std::move(done);
  const std::string where = "side channel " + host + ":" + std::to_string(port);
  s->exchange = std::make_unique<SideCallExchange>(type, payload, expect, std::move(secret), where);
  auto call = std::make_shared<SideChannelCall>(s);
  // A failure before the first watch is reported on a later turn, never inside start.
  auto fail = [&](Status why) {
    reactor->post([s, why = std::move(why)] {
      if (s->done) std::exchange(s->done, nullptr)(why);
    });
    return call;
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;  // a resolver would block the loop
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0 || !res)
    return fail(Unavailable(where + ": '" + host + "' is not a numeric address (" + gai_strerror(rc) +
                            "); names are not resolved on the event loop"));
  s->fd = UniqueFd(::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int err = 0;
  if (!s->fd.valid()) err = errno;
  else if (::connect(s->fd.get(), res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) err = errno;
  ::freeaddrinfo(res);
  if (err != 0) return fail(Unavailable(where + ": connect: " + std::strerror(err)));
  auto watch = reactor->watch(s->fd.get(), EPOLLOUT, [s](std::uint32_t events) { s->on_event(events); });
  if (!watch.ok()) return fail(watch.status());
  s->watch = *watch;
  const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
  s->timer = reactor->after(left, [s] {
    s->timer = 0;  // ran: a once-timer is gone
    s->finish(Timeout(s->exchange->where() + ": no reply within the deadline"));
  });
  return call;
}

void SideChannelCall::cancel() {
  if (!state_->done) return;
  state_->done = nullptr;
  state_->end();
}

PeerProbes::PeerProbes(std::shared_ptr<Reactor> reactor, std::shared_ptr<const SharedSecret> secret,
                       std::size_t max_in_flight, std::size_t max_waiters)
    : reactor_(std::move(reactor)), secret_(std::move(secret)), max_in_flight_(max_in_flight),
      max_waiters_(max_waiters) {}

PeerProbes::~PeerProbes() = default;

Status PeerProbes::ask(const std::string& key, const std::string& host, std::uint16_t port, Deadline deadline,
                       Done done) {
  if (stopped_) return Unavailable("probe of " + key + ": stopping");
  if (auto it = probes_.find(key); it != probes_.end()) {
    if (it->second.waiters.size() >= max_waiters_)
      return Unavailable("probe of " + key + ": " + std::to_string(max_waiters_) + " requests already wait for it");
    it->second.waiters.push_back(std::move(done));
    return Status::Ok();
  }
  if (probes_.size() >= max_in_flight_)
    return Unavailable("probe of " + key + ": " + std::to_string(max_in_flight_) +
                       " probes of other peers are in flight; try again shortly");
  Probe& p = probes_[key];
  p.waiters.push_back(std::move(done));
  ++started_;
  p.call = SideChannelCall::start(reactor_, host, port, SideFrame::kFetch, {}, SideFrame::kMetadata, deadline, secret_,
                                  [this, key](Result<std::vector<std::uint8_t>> r) { finish(key, r); });
  return Status::Ok();
}

void PeerProbes::finish(const std::string& key, const Result<std::vector<std::uint8_t>>& result) {
  auto it = probes_.find(key);
  if (it == probes_.end()) return;
  Probe p = std::move(it->second);
  probes_.erase(it);  // before the waiters run: they may ask again
  for (auto& w : p.waiters) w(result);
}

void PeerProbes::stop() {
  stopped_ = true;
  std::map<std::string, Probe> all = std::move(probes_);
  probes_.clear();
  for (auto& [key, p] : all) {
    p.call->cancel();
    for (auto& w : p.waiters) w(Unavailable("probe of " + key + ": the agent is shutting down"));
  }
}

}  // namespace kvferry::detail
