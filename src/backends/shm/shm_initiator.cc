#include "backends/shm/shm_initiator.h"

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

// A message on the session's socket (reactor thread): a revocation, or the hang-up.
void on_socket(ShmSession& s) {
  const int fd = s.socket_fd();
  std::vector<std::uint8_t> msg;
  std::vector<UniqueFd> fds;
  Status st = recv_message(fd, &msg, &fds, Clock::now(), "shm");
  if (st.code() == StatusCode::kTimeout) return;  // spurious wake-up
  const auto revoked = st.ok() ? parse_host_revoke(msg, HostMessage::kRevoke) : std::nullopt;
  if (!revoked || !fds.empty()) return s.fail(st.ok() ? Corrupt("unexpected message from the peer") : st);
  // Marked and drained in one step (on_revoke waits for the copy batches in flight).
  Status confirmed = answer_revoke(*revoked, [&](std::uint64_t region) { s.on_revoke(region); }, {},
                                   [fd](std::uint64_t region) {
                                     return send_message(fd, host_revoke_message(HostMessage::kRevokeAck, region), {},
                                                         deadline_after(std::chrono::milliseconds(100)), "shm");
                                   });
  if (!confirmed.ok()) s.fail(confirmed);  // the target cuts us off anyway
}

}  // namespace

Result<std::unique_ptr<ShmInitiator>> ShmInitiator::start(std::shared_ptr<Reactor> reactor, SessionConfig cfg) {
  std::unique_ptr<ShmInitiator> s(new ShmInitiator());
  s->cfg_ = std::move(cfg);
  s->link_ = HostLinkConfig{"shm", kShmProtocolVersion, s->cfg_.agent_name, s->cfg_.secret, s->cfg_.peer_timeout};
  // Idle sessions are looked at twice a second (deadlines, the peer process).
  KVF_ASSIGN_OR_RETURN(s->sessions_, HostSessions::start(std::move(reactor), "shm", std::chrono::milliseconds(500)));
  return s;
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
  const int fds[2] = {control_fd.get(), sessions_->wake_fd()};
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
  // Always marked sleeping: the target rings our eventfd for every batch of
  // acknowledgements (notifications are few; a waiter that spins takes its own first).
  session->set_sleeping(true);
  std::weak_ptr<ShmSession> weak = session;
  HostSessions::Hooks hooks;
  hooks.readable = [weak](const std::function<void()>& stop) {
    auto s = weak.lock();
    if (!s) return;  // being destroyed: its membership ends the watch
    if (!s->dead()) on_socket(*s);
    if (s->dead()) stop();  // while we hold it: the socket is still open
  };
  hooks.progress = [weak]() -> HostSessions::Wish {
    auto s = weak.lock();
    if (!s || s->dead()) return std::nullopt;
    s->poll_acks();
    s->check_deadlines();
    if (s->awaiting_acks()) return std::chrono::milliseconds(20);  // the deadlines' resolution
    return std::nullopt;
  };
  KVF_ASSIGN_OR_RETURN(auto membership, sessions_->add(session->socket_fd(), std::move(hooks)));
  session->join(std::move(membership));
  return session;
}

}  // namespace kvferry::detail::shm
