#include "backends/cuda_ipc/cuda_ipc_initiator.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "core/byte_io.h"

namespace kvferry::detail::cuda_ipc {

Result<std::unique_ptr<CudaIpcInitiator>> CudaIpcInitiator::start(SessionConfig cfg, std::string process_id) {
  std::unique_ptr<CudaIpcInitiator> s(new CudaIpcInitiator());
  s->cfg_ = std::move(cfg);
  s->process_id_ = std::move(process_id);
  KVF_ASSIGN_OR_RETURN(s->wake_, make_eventfd("cuda_ipc"));
  s->cfg_.progress_wake_fd = s->wake_.get();
  s->thread_ = std::thread([raw = s.get()] { raw->run(); });
  return s;
}

CudaIpcInitiator::~CudaIpcInitiator() {
  running_ = false;
  ring_eventfd(wake_.get());
  thread_.join();
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
  {
    std::lock_guard lock(mu_);
    std::erase_if(sessions_, [](auto& w) { return w.expired(); });
    sessions_.push_back(session);
  }
  ring_eventfd(wake_.get());
  return session;
}

void CudaIpcInitiator::run() {
  // This thread naps 10 us at a time while copies run: with the default 50 us timer
  // slack a nap lasts ~60 us, which a 7 ms copy would notice (~1%).
  ::prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  std::vector<pollfd> fds;
  while (running_) {
    std::vector<std::shared_ptr<CudaIpcSession>> live;
    {
      std::lock_guard lock(mu_);
      for (auto& w : sessions_)
        if (auto s = w.lock()) live.push_back(std::move(s));
    }
    bool busy = false;
    fds.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    for (auto& s : live) {
      s->poll();
      s->check_deadlines();
      busy = busy || s->busy();
      fds.push_back({s->dead() ? -1 : s->socket_fd(), POLLIN, 0});
    }
    // While copies run, look again soon (a spinning waiter completes its own job first).
    int n = ::poll(fds.data(), fds.size(), busy ? 0 : 100);
    if (n == 0 && busy) std::this_thread::sleep_for(std::chrono::microseconds(10));
    if (n <= 0) continue;
    if (fds[0].revents) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
    }
    for (std::size_t i = 0; i < live.size(); ++i)
      if (fds[i + 1].revents) live[i]->on_readable();
  }
}

}  // namespace kvferry::detail::cuda_ipc
