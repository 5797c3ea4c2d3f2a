#include "backends/shm/shm_target.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "backends/shm/shm_protocol.h"
#include "core/byte_io.h"
#include "core/fd_passing.h"
#include "core/unix_socket.h"

namespace kvferry::detail::shm {

struct ShmTarget::Session : std::enable_shared_from_this<Session> {
  UniqueFd sock;  // fixed from accept to destruction (drop only shuts it down)
  bool ready = false;  // hello done
  std::atomic<bool> dead{false};
  std::string peer;
  ControlBlock* cb = nullptr;
  UniqueFd peer_wake;  // the initiator's eventfd
  TargetRevocation::LinkId link = 0;  // once ready
  Clock::time_point accepted = Clock::now();
  std::unique_ptr<HostLinkAcceptor> acceptor;  // until ready
  ~Session() {
    if (cb) ::munmap(cb, sizeof(ControlBlock));
  }
};

Result<std::unique_ptr<ShmTarget>> ShmTarget::start(TargetConfig config) {
  std::unique_ptr<ShmTarget> t(new ShmTarget());
  t->cfg_ = std::move(config);
  t->revocation_ = std::make_unique<TargetRevocation>("shm", t->cfg_.peer_timeout);
  t->link_ = std::make_shared<HostLinkConfig>(
      HostLinkConfig{"shm", kShmProtocolVersion, t->cfg_.agent_name, t->cfg_.secret, t->cfg_.peer_timeout});
  t->socket_name_ = unique_abstract_name("kvferry-shm");
  KVF_ASSIGN_OR_RETURN(t->listener_, listen_abstract(t->socket_name_, "shm"));
  t->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!t->epoll_.valid()) return IoErrorFromErrno("shm: epoll", errno);
  KVF_ASSIGN_OR_RETURN(t->wake_, make_eventfd("shm"));
  for (int fd : {t->listener_.get(), t->wake_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(t->epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  t->thread_ = std::thread([raw = t.get()] { raw->run(); });
  return t;
}

ShmTarget::~ShmTarget() {
  running_ = false;
  ring_eventfd(wake_.get());
  thread_.join();
}

Status ShmTarget::add_region(const RegionInfo& region) {
  // Every region is tracked, also those without a memfd (peers reach them through
  // process_vm_*): a session announces only live regions, so an initiator that holds
  // metadata from before a deregistration cannot reach that memory any more.
  std::shared_ptr<UniqueFd> fd;
  if (region.share_fd >= 0) {
    int dup = ::fcntl(region.share_fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return IoErrorFromErrno("shm: dup memfd", errno);
    fd = std::make_shared<UniqueFd>(dup);
  }
  std::lock_guard lock(mu_);
  regions_[region.id] = {region, std::move(fd)};
  return Status::Ok();
}

Status ShmTarget::remove_region(std::uint64_t id) {
  {
    std::lock_guard lock(mu_);
    regions_.erase(id);  // sessions that connect from now on are not told of it
  }
  revocation_->revoke(id);  // bounded: peer_timeout, then the silent ones are cut off
  return Status::Ok();
}

TargetRevocation::Link ShmTarget::revocation_link(Session& s) {
  std::weak_ptr<Session> weak = s.weak_from_this();
  return TargetRevocation::Link{
      [weak](std::uint64_t region) -> Status {
        auto live = weak.lock();
        if (!live || live->dead) return PeerLost("shm: the initiator's session is closed");
        return send_message(live->sock.get(), host_revoke_message(HostMessage::kRevoke, region), {},
                            deadline_after(std::chrono::milliseconds(100)), "shm");
      },
      [this, weak](const std::string& why) {  // sessions are dropped on the engine thread
        std::lock_guard lock(mu_);
        commands_.push_back([this, weak, why] {
          if (auto live = weak.lock()) drop(*live, why);
        });
        ring_eventfd(wake_.get());
      }};
}

void ShmTarget::set_sleeping(bool sleeping) {
  for (auto& s : sessions_)
    if (s->cb) s->cb->to_target.consumer_sleeping.store(sleeping ? 1 : 0, std::memory_order_seq_cst);
}

bool ShmTarget::all_rings_empty() {
  for (auto& s : sessions_)
    if (s->cb && !s->dead && !ring_empty(s->cb->to_target)) return false;
  return true;
}

bool ShmTarget::serve_rings() {
  bool any = false;
  for (auto& sp : sessions_) {
    Session& s = *sp;
    if (!s.cb || s.dead) continue;
    Record rec;
    Status err;
    bool acked = false;
    while (ring_pop(s.cb->to_target, &rec, &err)) {
      any = true;
      if (rec.type != RecordType::kNotify || rec.payload.size() > cfg_.max_notification_bytes) {
        err = Corrupt("unexpected record");
        break;
      }
      // The initiator published this record after the transfer's last byte (release
      // on the ring's head): the data is visible before the notification is.
      Status kept = cfg_.deliver(s.peer, std::move(rec.payload));
      if (rec.req != 0) {
        // An empty ack: delivered. Otherwise the ack carries why the inbox refused it.
        const std::string why = kept.ok() ? std::string() : kept.message().substr(0, kMaxRecordPayload);
        if (!ring_push(s.cb->to_initiator, RecordType::kNotifyAck, rec.req, why.data(),
                       static_cast<std::uint32_t>(why.size()))) {
          err = Corrupt("the initiator's ring stays full");
          break;
        }
        acked = true;
      }
    }
    if (!err.ok()) drop(s, err.message());
    if (acked && s.cb->to_initiator.consumer_sleeping.load(std::memory_order_seq_cst)) ring_eventfd(s.peer_wake.get());
  }
  return any;
}

void ShmTarget::run() {
  auto last_activity = Clock::now();
  epoll_event events[32];
  while (running_) {
    if (serve_rings()) {
      last_activity = Clock::now();
      continue;
    }
    int n = 0;
    if (Clock::now() - last_activity < std::chrono::microseconds(cfg_.spin_us)) {
      std::this_thread::yield();  // a spinning initiator may share our CPU: let it run
      n = ::epoll_wait(epoll_.get(), events, 32, 0);
    } else {
      set_sleeping(true);
      if (all_rings_empty()) n = ::epoll_wait(epoll_.get(), events, 32, 200);
      set_sleeping(false);
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
        last_activity = Clock::now();
        std::vector<std::function<void()>> cmds;
        {
          std::lock_guard lock(mu_);
          cmds.swap(commands_);
        }
        for (auto& c : cmds) c();
      } else if (fd == listener_.get()) {
        accept_all();
      } else {
        for (auto& s : sessions_)
          if (s->sock.get() == fd && !s->dead) on_session_readable(*s);
      }
    }
    // Reap dead sessions and handshakes that never came.
    std::lock_guard lock(mu_);
    for (auto& s : sessions_)
      if (!s->ready && !s->dead && Clock::now() - s->accepted > cfg_.peer_timeout) drop(*s, "no hello in time");
    std::erase_if(sessions_, [](const std::shared_ptr<Session>& s) { return s->dead.load(); });
  }
}

void ShmTarget::accept_all() {
  for (UniqueFd& sock : accept_host_links(listener_.get())) {  // our user's processes only
    auto s = std::make_shared<Session>();
    s->sock = std::move(sock);
    s->acceptor = std::make_unique<HostLinkAcceptor>(link_, 2);  // hello fds: control block, eventfd
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = s->sock.get();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s->sock.get(), &ev);
    std::lock_guard lock(mu_);
    sessions_.push_back(std::move(s));
  }
}

void ShmTarget::on_session_readable(Session& s) {
  std::vector<std::uint8_t> msg;
  std::vector<UniqueFd> fds;
  Status st = recv_message(s.sock.get(), &msg, &fds, Clock::now(), "shm");
  if (st.code() == StatusCode::kTimeout) return;  // spurious wake-up
  if (!st.ok()) return drop(s, st.message());
  if (!s.ready) return handshake(s, msg, fds);
  if (auto region = parse_host_revoke(msg, HostMessage::kRevokeAck); region && fds.empty())
    return revocation_->confirmed(s.link, *region);
  drop(s, "unexpected message");
}

void ShmTarget::handshake(Session& s, std::vector<std::uint8_t>& msg, std::vector<UniqueFd>& fds) {
  // Hello, version, names and authentication: the core's part (core/host_link.h).
  Result<bool> accepted = s.acceptor->on_message(s.sock.get(), std::move(msg), std::move(fds));
  if (!accepted.ok()) return drop(s, accepted.status().message());
  if (!*accepted) return;  // a challenge went out; the proof comes next
  auto refuse = [&](const std::string& why) { drop(s, s.acceptor->refuse(s.sock.get(), why).message()); };
  std::vector<UniqueFd>& hello_fds = s.acceptor->hello_fds();  // control block, eventfd
  struct stat st {};
  if (::fstat(hello_fds[0].get(), &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(ControlBlock))
    return refuse("control block too small");
  void* p = ::mmap(nullptr, sizeof(ControlBlock), PROT_READ | PROT_WRITE, MAP_SHARED, hello_fds[0].get(), 0);
  if (p == MAP_FAILED) return refuse("cannot map the control block");
  s.cb = static_cast<ControlBlock*>(p);
  if (s.cb->magic != kControlMagic) return refuse("bad control block");
  s.peer = s.acceptor->peer();
  s.peer_wake = std::move(hello_fds[1]);
  // The hello answer with our eventfd, then every live region with its memfd where it
  // has one (none: reached through process_vm_*).
  int wake = wake_.get();
  const Deadline deadline = deadline_after(cfg_.peer_timeout);
  if (!s.acceptor->answer(s.sock.get(), {&wake, 1}, deadline).ok()) return drop(s, "hello ack failed");
  s.acceptor.reset();
  std::lock_guard lock(mu_);
  for (const auto& [id, entry] : regions_) {
    ByteWriter payload;
    payload.u64(entry.first.share_offset);
    AnnouncedRegion r;
    r.id = id;
    r.address = entry.first.address;
    r.length = entry.first.length;
    r.payload = payload.buffer();
    if (!send_host_region(s.sock.get(), r, entry.second ? entry.second->get() : -1, deadline, "shm").ok())
      return drop(s, "region send failed");
  }
  if (!send_host_regions_end(s.sock.get(), deadline, "shm").ok()) return drop(s, "regions end failed");
  s.ready = true;
  s.link = revocation_->join(revocation_link(s));  // under mu_, with the regions it was sent
}

void ShmTarget::drop(Session& s, const std::string&) {
  if (s.dead.exchange(true)) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, s.sock.get(), nullptr);
  // The initiator sees the hang-up now; the fd closes with the session (a revoke being
  // sent from another thread may still hold it).
  ::shutdown(s.sock.get(), SHUT_RDWR);
  if (s.link) revocation_->leave(s.link);
}

}  // namespace kvferry::detail::shm
