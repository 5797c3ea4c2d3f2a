#include "backends/shm/shm_initiator.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "backends/shm/shm_protocol.h"
#include "core/byte_io.h"
#include "core/fd_passing.h"
#include "core/host_link.h"
#include "core/revocation.h"
#include "core/unix_socket.h"

namespace kvferry::detail::shm {
namespace {

pid_t pid_of(const std::string& process_id) {
  return static_cast<pid_t>(std::strtol(process_id.c_str(), nullptr, 10));
}

Result<ControlBlock*> make_control_block(UniqueFd* memfd) {
  memfd->reset(::memfd_create("kvferry-shm-control", MFD_CLOEXEC));
  if (!memfd->valid()) return IoErrorFromErrno("shm: memfd_create", errno);
  if (::ftruncate(memfd->get(), sizeof(ControlBlock)) != 0) return IoErrorFromErrno("shm: ftruncate", errno);
  void* p = ::mmap(nullptr, sizeof(ControlBlock), PROT_READ | PROT_WRITE, MAP_SHARED, memfd->get(), 0);
  if (p == MAP_FAILED) return IoErrorFromErrno("shm: mmap control block", errno);
  auto* cb = static_cast<ControlBlock*>(p);  // fresh memfd pages are zero: rings empty
  cb->magic = kControlMagic;
  return cb;
}

}  // namespace

Result<std::unique_ptr<ShmInitiator>> ShmInitiator::start(SessionConfig cfg) {
  std::unique_ptr<ShmInitiator> s(new ShmInitiator());
  s->cfg_ = std::move(cfg);
  s->link_ = HostLinkConfig{"shm", kShmProtocolVersion, s->cfg_.agent_name, s->cfg_.secret, s->cfg_.peer_timeout};
  s->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!s->epoll_.valid()) return IoErrorFromErrno("shm: epoll", errno);
  KVF_ASSIGN_OR_RETURN(s->wake_, make_eventfd("shm"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = s->wake_.get();
  ::epoll_ctl(s->epoll_.get(), EPOLL_CTL_ADD, s->wake_.get(), &ev);
  s->thread_ = std::thread([raw = s.get()] { raw->run(); });
  return s;
}

ShmInitiator::~ShmInitiator() {
  running_ = false;
  ring_eventfd(wake_.get());
  thread_.join();
}

Result<std::shared_ptr<ShmSession>> ShmInitiator::connect(const PeerEndpoint& peer, const std::string& socket_name,
                                                          Deadline deadline) {
  KVF_ASSIGN_OR_RETURN(UniqueFd sock, connect_abstract(socket_name, "shm"));
  // The socket's other end must be the very process the metadata names, of our user.
  const pid_t pid = pid_of(peer.process_id);
  if (!peer_is_ours(sock.get(), pid))
    return Unavailable("shm: the socket of '" + peer.agent_name + "' belongs to another process or user");
  UniqueFd control_fd;
  KVF_ASSIGN_OR_RETURN(ControlBlock * cb, make_control_block(&control_fd));
  auto unmap_cb = [&] { ::munmap(cb, sizeof(ControlBlock)); };

  // The metadata's regions; only those the peer announces now, exactly as announced,
  // are used (mapped where it sends a memfd).
  PeerRegions regions;
  for (const RegionInfo& r : peer.regions) {
    if (r.kind != MemoryKind::kDram) continue;
    RegionInfo info;  // only what the peer announced (local-only fields stay unset)
    info.id = r.id;
    info.address = r.address;
    info.length = r.length;
    regions.add(info);
  }
  auto cleanup = [&] {
    for (auto& [address, r] : regions)
      if (r.value.map_base) ::munmap(r.value.map_base, r.value.map_length);
    unmap_cb();
  };
  const auto on_region = [&](AnnouncedRegion& a) -> Status {
    ByteReader payload(a.payload);
    const std::uint64_t offset = payload.u64();  // of the region in its memfd
    if (!payload.ok() || payload.remaining() != 0) return Corrupt("shm: bad region message");
    PeerRegions::Entry* e = regions.find(a.id);
    if (!e || e->info.address != a.address || e->info.length != a.length || e->value.map_base) return Status::Ok();
    Mapping& m = e->value;
    m.live = true;
    if (!a.fd.valid()) return Status::Ok();  // reached through process_vm_*
    const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t aligned = offset / page * page;
    const std::size_t map_length = a.length + (offset - aligned);
    void* p = ::mmap(nullptr, map_length, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd.get(), static_cast<off_t>(aligned));
    if (p == MAP_FAILED) return IoErrorFromErrno("shm: mapping the peer's region", errno);
    m.map_base = p;
    m.map_length = map_length;
    m.local = static_cast<std::uint8_t*>(p) + (offset - aligned);
    return Status::Ok();
  };
  // Hello (names, version, authentication) with our control block and eventfd; the
  // answer carries the target's eventfd (core/host_link.h).
  const int fds[2] = {control_fd.get(), wake_.get()};
  auto answer = initiate_host_link(sock.get(), link_, peer.agent_name, fds, 1, on_region, deadline);
  if (!answer.ok()) return cleanup(), answer.status();
  UniqueFd target_wake = std::move((*answer)[0]);
  // What the peer did not announce now was deregistered since our metadata was taken.
  for (auto& [address, r] : regions) r.value.revoked = !r.value.live;
  // Regions without a memfd are reached with process_vm_*: find out now whether the
  // system lets us, so that selection can fall back to another backend if not.
  for (const auto& [address, r] : regions) {
    if (r.value.local || r.value.revoked) continue;
    std::uint8_t probe;
    iovec l{&probe, 1}, rem{reinterpret_cast<void*>(address), 1};
    if (::process_vm_readv(pid, &l, 1, &rem, 1, 0) != 1) {
      const int err = errno;
      cleanup();
      return Unavailable("shm: memory of '" + peer.agent_name +
                         "' that was not allocated with allocate_shared_memory needs process_vm_readv, which "
                         "this system refuses (" + std::strerror(err) +
                         "; see /proc/sys/kernel/yama/ptrace_scope)");
    }
  }
  auto session = std::make_shared<ShmSession>(cfg_, peer.agent_name, pid, std::move(sock), cb, std::move(target_wake),
                                               std::move(regions));
  std::lock_guard lock(mu_);
  std::erase_if(sessions_, [](auto& w) { return w.expired(); });
  sessions_.push_back(session);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = session->socket_fd();
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, session->socket_fd(), &ev);
  watched_.insert(session->socket_fd());
  // The loop must take the session in now: until it marks it sleeping, the target does
  // not ring us for acknowledgements, and a waiter that does not poll the ring itself
  // (a staged job's) would wait for the loop's 500 ms timeout.
  ring_eventfd(wake_.get());
  return session;
}

void ShmInitiator::run() {
  epoll_event events[32];
  while (running_) {
    std::vector<std::shared_ptr<ShmSession>> live;
    {
      std::lock_guard lock(mu_);  // also guards watched_
      for (auto& w : sessions_) {
        auto s = w.lock();
        if (!s) continue;
        if (!s->dead()) {
          live.push_back(std::move(s));
        } else if (watched_.erase(s->socket_fd())) {
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, s->socket_fd(), nullptr);  // stop its hang-up events
        }
      }
    }
    bool busy = false;
    for (auto& s : live) {
      s->poll_acks();
      s->check_deadlines();
      busy = busy || s->awaiting_acks();
      s->set_sleeping(true);
    }
    bool pending = false;
    for (auto& s : live) pending = pending || !ring_empty(s->control()->to_initiator);
    int n = pending ? 0 : ::epoll_wait(epoll_.get(), events, 32, busy ? 20 : 500);
    for (auto& s : live) s->set_sleeping(false);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
        continue;
      }
      for (auto& s : live) {
        if (s->socket_fd() != fd) continue;
        std::vector<std::uint8_t> msg;
        std::vector<UniqueFd> fds;
        Status st = recv_message(fd, &msg, &fds, Clock::now(), "shm");
        if (st.code() == StatusCode::kTimeout) continue;
        const auto revoked = st.ok() ? parse_host_revoke(msg, HostMessage::kRevoke) : std::nullopt;
        if (!revoked || !fds.empty()) {
          s->fail(st.ok() ? Corrupt("unexpected message from the peer") : st);
          continue;
        }
        const std::uint64_t id = *revoked;
        // Marked and drained in one step (on_revoke waits for the copies in flight).
        Status confirmed = answer_revoke(id, [&](std::uint64_t region) { s->on_revoke(region); }, {},
                                         [fd](std::uint64_t region) {
                                           return send_message(fd, host_revoke_message(HostMessage::kRevokeAck, region),
                                                               {}, deadline_after(std::chrono::milliseconds(100)),
                                                               "shm");
                                         });
        if (!confirmed.ok()) s->fail(confirmed);  // the target cuts us off anyway
      }
    }
  }
}

}  // namespace kvferry::detail::shm
