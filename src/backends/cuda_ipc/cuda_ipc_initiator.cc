#include "backends/cuda_ipc/cuda_ipc_initiator.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "core/byte_io.h"

namespace kvferry::detail::cuda_ipc {

Result<std::unique_ptr<CudaIpcInitiator>> CudaIpcInitiator::start(std::shared_ptr<Reactor> reactor, SessionConfig cfg,
                                                                  std::string process_id) {
  std::unique_ptr<CudaIpcInitiator> s(new CudaIpcInitiator());
  s->cfg_ = std::move(cfg);
  s->process_id_ = std::move(process_id);
  // Idle sessions are looked at ten times a second (deadlines, the peer process).
  KVF_ASSIGN_OR_RETURN(s->sessions_,
                       HostSessions::start(std::move(reactor), "cuda_ipc", std::chrono::milliseconds(100)));
  s->cfg_.progress_wake_fd = s->sessions_->wake_fd();  // posts ring it: their events are polled at once
  return s;
}

Result<std::shared_ptr<CudaIpcSession>> CudaIpcInitiator::connect(const PeerEndpoint& peer,
                                                                  const std::string& socket_name, Deadline deadline) {
  KVF_ASSIGN_OR_RETURN(UniqueFd sock, connect_abstract(socket_name, "cuda_ipc"));
  // The socket's other end must be the very process the metadata names, of our user.
  if (!peer_is_ours(sock.get(), static_cast<pid_t>(std::strtol(peer.process_id.c_str(), nullptr, 10))))
    return Unavailable("cuda_ipc: the socket of '" + peer.agent_name + "' belongs to another process or user");

  // Only what the metadata announced, exactly as announced, is used.
  PeerRegions regions;
  const auto on_region = [&](AnnouncedRegion& a) -> Status {
    ByteReader r(a.payload);
    RegionInfo info;
    info.kind = MemoryKind::kVram;
    info.id = a.id;
    info.device = r.u32();
    info.address = a.address;
    info.length = a.length;
    IpcRegion ipc;
    ipc.offset = r.u64();
    const std::uint64_t alloc_size = r.u64();
    ipc.handle = r.str(kIpcHandleBytes);
    if (!r.ok() || r.remaining() != 0 || a.fd.valid() || ipc.offset > alloc_size ||
        info.length > alloc_size - ipc.offset)
      return Corrupt("cuda_ipc: bad region message from '" + peer.agent_name + "'");
    const bool announced = std::any_of(peer.regions.begin(), peer.regions.end(), [&](const RegionInfo& m) {
      return m.id == info.id && m.kind == MemoryKind::kVram && m.address == info.address && m.length == info.length &&
             m.device == info.device;
    });
    if (announced) regions.add(info, std::move(ipc));
    return Status::Ok();
  };
  // Hello (names, version, authentication), answer, regions: core/host_link.h.
  const HostLinkConfig link{"cuda_ipc", kProtocolVersion, cfg_.agent_name, cfg_.secret, cfg_.peer_timeout};
  KVF_RETURN_IF_ERROR(initiate_host_link(sock.get(), link, peer.agent_name, {}, 0, on_region, deadline).status());
  const pid_t peer_pid =
      peer.process_id == process_id_ ? 0 : static_cast<pid_t>(std::strtol(peer.process_id.c_str(), nullptr, 10));
  auto session = std::make_shared<CudaIpcSession>(cfg_, peer.agent_name, peer_pid, std::move(sock),
                                                  std::move(regions));
  std::weak_ptr<CudaIpcSession> weak = session;
  HostSessions::Hooks hooks;
  hooks.readable = [weak](const std::function<void()>& stop) {
    auto s = weak.lock();
    if (!s) return;  // being destroyed: its membership ends the watch
    if (!s->dead()) s->on_readable();
    if (s->dead()) stop();  // while we hold it: the socket is still open
  };
  hooks.progress = [weak]() -> HostSessions::Wish {
    auto s = weak.lock();
    if (!s) return std::nullopt;
    s->poll();
    s->check_deadlines();
    // While copies run, look again soon (a spinning waiter completes its own job first);
    // answers come on the socket, and their deadlines need no finer look than 20 ms.
    if (s->copying()) return std::chrono::microseconds(10);
    if (s->awaiting_acks()) return std::chrono::milliseconds(20);
    return std::nullopt;
  };
  KVF_ASSIGN_OR_RETURN(auto membership, sessions_->add(session->socket_fd(), std::move(hooks)));
  session->join(std::move(membership));
  return session;
}

}  // namespace kvferry::detail::cuda_ipc
