// SideChannelServer: the side channel's listener and connections, served on a reactor.
// Everything below the public methods runs on the reactor thread.
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/accept_guard.h"
#include "core/side_channel.h"

namespace kvferry::detail {
namespace {

// Connection slots: per remote address and in total. When full, the oldest connection
// makes room (a real client sends its one frame at once and is served as soon as it
// arrives, so a flood of idle sockets only evicts itself).
constexpr std::size_t kMaxConnectionsPerAddress = 16;
constexpr std::size_t kMaxConnections = 64;
// Frames served per readiness event; a connection with more asks to be called again
// (EPOLLOUT, ready at once) so that other handlers of the reactor run in between.
constexpr int kFramesPerTurn = 16;

std::vector<std::uint8_t> error_frame(const Status& s) {
  std::string msg = s.to_string();
  return make_side_frame(SideFrame::kError, {reinterpret_cast<const std::uint8_t*>(msg.data()), msg.size()});
}

}  // namespace

struct SideChannelServer::Connection {
  UniqueFd fd;
  std::string address;  // remote IP
  Reactor::Id watch = 0;
  std::uint32_t events = EPOLLIN;  // interest now
  std::vector<std::uint8_t> in;
  std::vector<std::uint8_t> out;  // the reply being sent; no frame is served meanwhile
  std::size_t out_sent = 0;
  bool close_after_reply = false;  // a refused request: close once the refusal is sent
  // A frame must be complete (and its reply sent) by then: set at accept and after each
  // served frame, never moved by bytes alone (a byte at a time must not keep a connection
  // alive).
  Clock::time_point frame_deadline;
  // With a secret: the handshake of this connection (after kAuthHello) and the sequence
  // number of its next request.
  std::unique_ptr<TargetAuth> auth;
  std::uint64_t seq = 0;
  std::uint64_t serial = 0;  // names the connection to a deferred reply
  // A push whose answer comes later (the agent probes the peer it would replace): no
  // frame is read or served, and the idle sweep spares it (the agent's probe has its
  // own deadline).
  bool pending = false;
};

SideChannelServer::SideChannelServer() : conns_(std::make_unique<Connections>()) {}

Result<std::unique_ptr<SideChannelServer>> SideChannelServer::start(const std::string& address, std::uint16_t port,
                                                                    SideChannelHandlers handlers,
                                                                    std::chrono::milliseconds idle_timeout,
                                                                    std::shared_ptr<const SharedSecret> secret,
                                                                    std::shared_ptr<Reactor> reactor) {
  std::unique_ptr<SideChannelServer> s(new SideChannelServer());
  KVF_ASSIGN_OR_RETURN(s->listener_, tcp_listen(address, port));
  KVF_ASSIGN_OR_RETURN(s->port_, local_port(s->listener_.get()));
  if (!reactor) {
    KVF_ASSIGN_OR_RETURN(reactor, Reactor::start("kvf-side"));
  }
  s->reactor_ = std::move(reactor);
  s->handlers_ = std::move(handlers);
  s->idle_timeout_ = idle_timeout;
  s->secret_ = std::move(secret);
  s->max_connections_ = descriptor_share(kMaxConnections, 8);
  s->buf_.resize(64 * 1024);
  Status watched = Unavailable("side channel: the reactor stopped");
  s->reactor_->run_sync([&] { watched = s->watch_listener(); });  // ids set before any handler runs
  KVF_RETURN_IF_ERROR(watched);
  return s;
}

SideChannelServer::~SideChannelServer() {
  if (!reactor_) return;
  // On the reactor thread no handler of ours runs meanwhile; cancel there returns at once.
  reactor_->run_sync([this] {
    *alive_ = false;
    reactor_->cancel(listener_watch_);
    reactor_->cancel(sweep_);
    reactor_->cancel(resume_);
    for (Connection& c : *conns_) reactor_->cancel(c.watch);
    conns_->clear();
  });
}

Status SideChannelServer::watch_listener() {
  KVF_ASSIGN_OR_RETURN(listener_watch_, reactor_->watch(listener_.get(), EPOLLIN, [this](std::uint32_t) { on_accept(); }));
  // Idle connections are dropped within a quarter of the timeout.
  const auto period = std::clamp<std::chrono::milliseconds>(idle_timeout_ / 4, std::chrono::milliseconds(10),
                                                            std::chrono::milliseconds(200));
  sweep_ = reactor_->every(period, [this] { sweep(); });
  return Status::Ok();
}

void SideChannelServer::on_accept() {
  for (int k = 0; k < 64; ++k) {  // bounded: then serve the connections we have
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (!out_of_descriptors(errno)) return;
      // Out of descriptors: the oldest connection gives one back; with none to give, stop
      // watching the listener a while (it stays readable: watching it would be a busy loop).
      if (conns_->empty()) {
        reactor_->modify(listener_watch_, 0).ok();
        resume_ = reactor_->after(kAcceptBackoff, [this] {
          resume_ = 0;
          reactor_->modify(listener_watch_, EPOLLIN).ok();
        });
        return;
      }
      drop(&conns_->front());
      continue;
    }
    Connection c;
    c.fd = UniqueFd(fd);
    c.address = peer_address(fd);
    c.frame_deadline = Clock::now() + idle_timeout_;
    c.serial = next_serial_++;
    auto evict = slot_to_free(*conns_, c.address, kMaxConnectionsPerAddress, max_connections_,
                              [](const Connection& held) -> const std::string& { return held.address; });
    if (evict != conns_->end()) drop(&*evict);
    set_nodelay(fd).ok();  // best effort; latency only
    conns_->push_back(std::move(c));
    Connection* nc = &conns_->back();
    auto id = reactor_->watch(fd, EPOLLIN, [this, nc](std::uint32_t events) { on_event(nc, events); });
    if (!id.ok()) {
      conns_->pop_back();
      continue;
    }
    nc->watch = *id;
  }
}

void SideChannelServer::drop(Connection* c) {
  reactor_->cancel(c->watch);  // on the reactor thread: at once, even from c's own handler
  conns_->remove_if([c](const Connection& held) { return &held == c; });
}

void SideChannelServer::sweep() {
  const auto now = Clock::now();
  std::vector<Connection*> late;
  for (Connection& c : *conns_)
    if (now > c.frame_deadline && !c.pending) late.push_back(&c);
  for (Connection* c : late) drop(c);
}

void SideChannelServer::want(Connection& c, std::uint32_t events) {
  if (c.events == events) return;
  c.events = events;
  reactor_->modify(c.watch, events).ok();
}

void SideChannelServer::on_event(Connection* c, std::uint32_t events) {
  if (c->pending) {  // nothing is read meanwhile; a reset connection has nobody to answer
    if (events & (EPOLLHUP | EPOLLERR)) return drop(c);
    want(*c, 0);
    return;
  }
  if (!c->out.empty() || (events & EPOLLOUT)) {
    if (!flush(*c)) return drop(c);
    if (!c->out.empty()) return;  // the rest when the socket drains
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    ssize_t n = ::recv(c->fd.get(), buf_.data(), buf_.size(), 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return drop(c);
    if (n > 0) c->in.insert(c->in.end(), buf_.data(), buf_.data() + n);
  }
  if (!serve(*c)) drop(c);
}

bool SideChannelServer::serve(Connection& c) {
  for (int turn = 0; c.out.empty(); ++turn) {
    auto frame = next_side_frame(c.in);
    if (!frame.ok()) return false;
    if (!*frame) break;
    if (turn == kFramesPerTurn) {  // more frames buffered: again on the reactor's next turn
      want(c, EPOLLOUT);
      return true;
    }
    bool refused = false, pending = false;
    std::vector<std::uint8_t> reply = answer(c, **frame, refused, pending);
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>((*frame)->bytes));
    if (pending) {
      c.pending = true;
      want(c, 0);
      return true;
    }
    if (reply.empty()) return false;
    c.out = std::move(reply);
    c.out_sent = 0;
    c.close_after_reply = refused;
    c.frame_deadline = Clock::now() + idle_timeout_;
    if (!flush(c)) return false;
  }
  if (c.out.empty()) want(c, EPOLLIN);
  return true;
}

bool SideChannelServer::flush(Connection& c) {
  while (c.out_sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      want(c, EPOLLOUT);  // reads wait too: one request is answered at a time
      return true;
    }
    if (n <= 0) return false;
    c.out_sent += static_cast<std::size_t>(n);
  }
  c.out.clear();
  c.out_sent = 0;
  return !c.close_after_reply;
}

void SideChannelServer::resume(std::uint64_t serial, const Status& loaded) {
  auto it = std::find_if(conns_->begin(), conns_->end(), [&](const Connection& c) { return c.serial == serial; });
  if (it == conns_->end() || !it->pending) return;
  Connection& c = *it;
  c.pending = false;
  c.out = fetch_reply(c, loaded);
  c.out_sent = 0;
  c.frame_deadline = Clock::now() + idle_timeout_;
  if (!flush(c) || !serve(c)) drop(&c);
}

std::vector<std::uint8_t> SideChannelServer::fetch_reply(Connection& c, const Status& loaded) {
  std::vector<std::uint8_t> reply;
  auto md = loaded.ok() ? handlers_.local_metadata() : Result<std::vector<std::uint8_t>>(loaded);
  reply = md.ok() ? make_side_frame(SideFrame::kMetadata, *md) : error_frame(md.status());
  seal(c, reply);
  return reply;
}

void SideChannelServer::seal(Connection& c, std::vector<std::uint8_t>& reply) {
  if (!secret_) return;
  auto view = next_side_frame(reply);
  const AuthTag tag = c.auth->frame_tag("reply", c.seq++, side_frame_tagged_bytes((*view)->type, (*view)->payload));
  const std::uint32_t len = static_cast<std::uint32_t>((*view)->payload.size() + kAuthTagBytes);
  reply.insert(reply.end(), tag.begin(), tag.end());
  std::memcpy(reply.data() + 8, &len, sizeof len);
}

std::vector<std::uint8_t> SideChannelServer::answer(Connection& c, const SideFrameView& frame, bool& refused,
                                                    bool& pending) {
  std::span<const std::uint8_t> payload = frame.payload;
  const auto type = static_cast<SideFrame>(frame.type);
  std::vector<std::uint8_t> reply;
  // Authentication first (core/peer_auth.h): the handshake, then every request checked
  // against its tag, which is stripped from the payload.
  if (type == SideFrame::kAuthHello) {
    if (payload.size() != kAuthNonceBytes || c.auth) return {};
    if (!secret_) {
      refused = true;
      return error_frame(auth_agreement(false, true, "side channel"));
    }
    c.auth = std::make_unique<TargetAuth>(secret_, "side");
    return make_side_frame(SideFrame::kChallenge, c.auth->challenge(payload, payload));
  }
  if (secret_) {
    if (!c.auth) {
      refused = true;
      return error_frame(auth_agreement(true, false, "side channel"));
    }
    if (payload.size() < kAuthTagBytes ||
        !SharedSecret::same_tag(
            c.auth->frame_tag("request", c.seq,
                              side_frame_tagged_bytes(frame.type, payload.first(payload.size() - kAuthTagBytes))),
            payload.last(kAuthTagBytes))) {
      refused = true;
      return error_frame(FailedPrecondition(
          "side channel: authentication failed: the request's tag does not match this agent's shared secret "
          "(a different secret, or a replayed frame)"));
    }
    payload = payload.first(payload.size() - kAuthTagBytes);
  }
  switch (type) {
    case SideFrame::kFetch: {
      if (payload.empty()) return fetch_reply(c, Status::Ok());
      // The answer may come later, from any thread: it is brought back to this thread,
      // where the server (if still alive) finds the connection by its serial.
      SideChannelHandlers::Later later = [this, alive = alive_, reactor = reactor_,
                                          serial = c.serial](Status loaded) {
        auto deliver = [this, alive, serial, loaded = std::move(loaded)] {
          if (*alive) resume(serial, loaded);
        };
        if (reactor->in_reactor_thread()) deliver();
        else reactor->post(std::move(deliver));
      };
      std::optional<Status> now = handlers_.load_remote(payload, std::move(later));
      if (!now) {
        pending = true;
        return {};
      }
      return fetch_reply(c, *now);
    }
    case SideFrame::kNotify: {
      auto note = parse_notify_payload(payload);
      Status s = note.ok() ? handlers_.notify(std::move(note->first), std::move(note->second)) : note.status();
      reply = s.ok() ? make_side_frame(SideFrame::kOk, {}) : error_frame(s);
      break;
    }
    default:
      return {};
  }
  // An authenticated reply carries its tag, bound to the request's sequence number.
  seal(c, reply);
  return reply;
}

}  // namespace kvferry::detail
