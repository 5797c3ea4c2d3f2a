#include "core/host_target.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>

#include "core/fd_passing.h"
#include "core/unix_socket.h"

namespace kvferry::detail {

struct HostTarget::Conn : Peer {
  Reactor::Id watch = 0;
  bool ready = false;                          // hello done (reactor thread)
  TargetRevocation::LinkId link = 0;           // once ready
  std::unique_ptr<HostLinkAcceptor> acceptor;  // until ready
  Clock::time_point accepted = Clock::now();
};

Result<std::unique_ptr<HostTarget>> HostTarget::start(std::shared_ptr<Reactor> reactor, HostLinkConfig link,
                                                      const std::string& socket_prefix, Hooks hooks) {
  if (!reactor) { KVF_ASSIGN_OR_RETURN(reactor, Reactor::start("kvf-" + link.backend)); }
  std::unique_ptr<HostTarget> t(new HostTarget());
  t->reactor_ = std::move(reactor);
  t->revocation_ = std::make_unique<TargetRevocation>(link.backend, link.peer_timeout);
  t->link_ = std::make_shared<HostLinkConfig>(std::move(link));
  t->hooks_ = std::move(hooks);
  if (!t->hooks_.receive) {
    t->hooks_.receive = [who = t->link_->backend](int sock, std::vector<std::uint8_t>* msg,
                                                  std::vector<UniqueFd>* fds) {
      return recv_message(sock, msg, fds, Clock::now(), who);
    };
  }
  t->socket_name_ = unique_abstract_name(socket_prefix);
  KVF_ASSIGN_OR_RETURN(t->listener_, listen_abstract(t->socket_name_, t->link_->backend));
  HostTarget* raw = t.get();  // the destructor cancels both before anything goes
  KVF_ASSIGN_OR_RETURN(t->listen_watch_, t->reactor_->watch(t->listener_.get(), EPOLLIN,
                                                            [raw](std::uint32_t) { raw->accept_all(); }));
  // A hello that never comes is dropped within a fifth of the bound after it.
  const auto period =
      std::max<std::chrono::milliseconds>(t->link_->peer_timeout / 5, std::chrono::milliseconds(10));
  t->reap_timer_ = t->reactor_->every(period, [raw] { raw->reap(); });
  return t;
}

HostTarget::~HostTarget() {
  reactor_->cancel(listen_watch_);
  reactor_->cancel(reap_timer_);
  std::vector<std::shared_ptr<Conn>> all;
  {
    std::lock_guard lock(mu_);
    for (auto& [raw, c] : conns_) all.push_back(c);
  }
  for (auto& c : all) drop(*c);
}

void HostTarget::add_region(Region region) {
  std::lock_guard lock(mu_);
  const std::uint64_t id = region.info.id;
  regions_[id] = std::move(region);
}

Status HostTarget::remove_region(std::uint64_t id) {
  {
    std::lock_guard lock(mu_);
    if (regions_.erase(id) == 0) return Status::Ok();  // never announced: nobody holds it
  }
  revocation_->revoke(id);  // bounded: peer_timeout, then the silent ones are cut off
  return Status::Ok();
}

TargetRevocation::Link HostTarget::revocation_link(const std::shared_ptr<Conn>& c) {
  std::weak_ptr<Conn> weak = c;
  return TargetRevocation::Link{[weak, who = link_->backend](std::uint64_t region) -> Status {
                                  auto live = weak.lock();
                                  if (!live || live->dead)
                                    return PeerLost(who + ": the initiator's session is closed");
                                  return send_message(live->sock.get(),
                                                      host_revoke_message(HostMessage::kRevoke, region), {},
                                                      deadline_after(std::chrono::milliseconds(100)), who);
                                },
                                [this, weak](const std::string&) {
                                  if (auto live = weak.lock()) drop(*live);
                                }};
}

void HostTarget::accept_all() {
  for (UniqueFd& sock : accept_host_links(listener_.get())) {  // our user's processes only
    auto c = std::make_shared<Conn>();
    c->sock = std::move(sock);
    c->acceptor = std::make_unique<HostLinkAcceptor>(link_, hooks_.hello_fds);
    auto watch =
        reactor_->watch(c->sock.get(), EPOLLIN, [this, weak = std::weak_ptr<Conn>(c)](std::uint32_t) {
          if (auto live = weak.lock(); live && !live->dead) on_readable(live);
        });
    if (!watch.ok()) continue;  // closed at once: the initiator sees the refusal as a hang-up
    c->watch = *watch;
    std::lock_guard lock(mu_);
    conns_.emplace(c.get(), std::move(c));
  }
}

void HostTarget::on_readable(const std::shared_ptr<Conn>& c) {
  std::vector<std::uint8_t> msg;
  std::vector<UniqueFd> fds;
  Status st = hooks_.receive(c->sock.get(), &msg, &fds);
  if (st.code() == StatusCode::kTimeout) return;  // spurious wake-up
  if (!st.ok()) return drop(*c);
  if (!c->ready) return handshake(*c, std::move(msg), std::move(fds));
  if (auto region = parse_host_revoke(msg, HostMessage::kRevokeAck); region && fds.empty())
    return revocation_->confirmed(c->link, *region);
  if (!fds.empty() || !hooks_.on_message || !hooks_.on_message(*c, msg).ok()) drop(*c);
}

void HostTarget::handshake(Conn& c, std::vector<std::uint8_t> msg, std::vector<UniqueFd> fds) {
  // Hello, version, names and authentication: core/host_link.h.
  Result<bool> accepted = c.acceptor->on_message(c.sock.get(), std::move(msg), std::move(fds));
  if (!accepted.ok()) return drop(c);
  if (!*accepted) return;  // a challenge went out; the proof comes next
  c.name = c.acceptor->peer();
  std::vector<int> answer;
  if (hooks_.accept) {
    if (Status ok = hooks_.accept(c, c.acceptor->hello_fds(), &answer); !ok.ok()) {
      (void)c.acceptor->refuse(c.sock.get(), ok.message());
      return drop(c);
    }
  }
  const Deadline deadline = deadline_after(link_->peer_timeout);
  if (!c.acceptor->answer(c.sock.get(), answer, deadline).ok()) return drop(c);
  c.acceptor.reset();
  std::shared_ptr<Conn> self;
  {
    std::lock_guard lock(mu_);
    auto it = conns_.find(&c);
    if (it == conns_.end()) return;  // dropped meanwhile
    self = it->second;
    for (const auto& [id, r] : regions_) {
      AnnouncedRegion a;
      a.id = id;
      a.address = r.info.address;
      a.length = r.info.length;
      a.payload = r.payload;
      if (!send_host_region(c.sock.get(), a, r.fd ? r.fd->get() : -1, deadline, link_->backend).ok()) break;
    }
    if (send_host_regions_end(c.sock.get(), deadline, link_->backend).ok()) {
      c.ready = true;
      c.link = revocation_->join(revocation_link(self));  // under mu_, with the regions it was sent
    }
  }
  if (!c.ready) return drop(c);
  if (hooks_.on_ready) hooks_.on_ready(self);
}

void HostTarget::drop(Peer& peer) {
  Conn& c = static_cast<Conn&>(peer);
  if (c.dead.exchange(true)) return;
  ::shutdown(c.sock.get(), SHUT_RDWR);  // the initiator sees the hang-up now
  reactor_->cancel(c.watch);            // the fd closes with the Conn, after this
  TargetRevocation::LinkId link = 0;
  std::shared_ptr<Conn> last;  // released after the lock
  {
    std::lock_guard lock(mu_);  // a hello joins under it: we see its link, or it sees us gone
    link = c.link;
    if (auto it = conns_.find(&c); it != conns_.end()) {
      last = std::move(it->second);
      conns_.erase(it);
    }
  }
  if (link) revocation_->leave(link);
}

void HostTarget::reap() {
  std::vector<std::shared_ptr<Conn>> late;
  {
    std::lock_guard lock(mu_);
    for (auto& [raw, c] : conns_)
      if (!c->ready && Clock::now() - c->accepted > link_->peer_timeout) late.push_back(c);
  }
  for (auto& c : late) drop(*c);
}

}  // namespace kvferry::detail
