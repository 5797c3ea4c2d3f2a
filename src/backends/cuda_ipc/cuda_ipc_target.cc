#include "backends/cuda_ipc/cuda_ipc_target.h"

#include <cuda_runtime.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "cuda/cuda_util.h"
#include "core/byte_io.h"

namespace kvferry::detail::cuda_ipc {

using cuda::check;
using cuda::DeviceScope;
using cuda::check_device_range;
using cuda::DeviceAllocation;
namespace {

constexpr auto kSendBound = std::chrono::milliseconds(200);


}  // namespace

Result<std::unique_ptr<CudaIpcTarget>> CudaIpcTarget::start(TargetConfig config) {
  std::unique_ptr<CudaIpcTarget> t(new CudaIpcTarget());
  t->cfg_ = std::move(config);
  t->revocation_ = std::make_unique<TargetRevocation>("cuda_ipc", t->cfg_.peer_timeout);
  t->link_ = std::make_shared<HostLinkConfig>(
      HostLinkConfig{"cuda_ipc", kProtocolVersion, t->cfg_.agent_name, t->cfg_.secret, t->cfg_.peer_timeout});
  t->socket_name_ = unique_abstract_name("kvferry-cuda-ipc");
  KVF_ASSIGN_OR_RETURN(t->listener_, listen_abstract(t->socket_name_, "cuda_ipc"));
  KVF_ASSIGN_OR_RETURN(t->wake_, make_eventfd("cuda_ipc"));
  t->thread_ = std::thread([raw = t.get()] { raw->run(); });
  return t;
}

CudaIpcTarget::~CudaIpcTarget() {
  running_ = false;
  ring_eventfd(wake_.get());
  thread_.join();
}

Status CudaIpcTarget::add_region(const RegionInfo& region) {
  KVF_ASSIGN_OR_RETURN(DeviceAllocation alloc,
                       check_device_range(region.address, region.length, static_cast<int>(region.device)));
  ExportedRegion e;
  e.info = region;
  e.offset = region.address - alloc.base;
  e.alloc_size = alloc.size;
  {
    DeviceScope scope(static_cast<int>(region.device));
    KVF_RETURN_IF_ERROR(scope.status());
    cudaIpcMemHandle_t h{};
    static_assert(sizeof h == kIpcHandleBytes);
    KVF_RETURN_IF_ERROR(check(cudaIpcGetMemHandle(&h, reinterpret_cast<void*>(alloc.base)), "cudaIpcGetMemHandle")
                            .with_context("cuda_ipc: exporting a vram region"));
    std::memcpy(e.handle, &h, sizeof h);
  }
  std::lock_guard lock(mu_);
  regions_[region.id] = e;
  return Status::Ok();
}

Status CudaIpcTarget::remove_region(std::uint64_t id) {
  {
    std::lock_guard lock(mu_);
    if (regions_.erase(id) == 0) return Status::Ok();
  }
  // Bounded: peer_timeout, then an initiator that did not confirm is cut off (its jobs
  // fail with PeerLost).
  revocation_->revoke(id);
  return Status::Ok();
}

TargetRevocation::Link CudaIpcTarget::revocation_link(Session& s) {
  std::weak_ptr<Session> weak = s.weak_from_this();
  return TargetRevocation::Link{
      [this, weak](std::uint64_t region) -> Status {
        std::lock_guard lock(mu_);
        auto live = weak.lock();
        if (!live || live->dead) return PeerLost("cuda_ipc: the initiator's session is closed");
        return send_packet(live->sock.get(), host_revoke_message(HostMessage::kRevoke, region),
                           deadline_after(kSendBound));
      },
      [this, weak](const std::string&) {
        std::lock_guard lock(mu_);
        if (auto live = weak.lock()) drop(*live);
      }};
}

void CudaIpcTarget::run() {
  std::vector<pollfd> fds;
  std::vector<Session*> order;
  while (running_) {
    fds.clear();
    order.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({listener_.get(), POLLIN, 0});
    {
      std::lock_guard lock(mu_);
      std::erase_if(sessions_, [](const std::shared_ptr<Session>& s) { return s->dead; });
      for (auto& s : sessions_) {
        if (!s->ready && Clock::now() - s->accepted > cfg_.peer_timeout) {
          drop(*s);
          continue;
        }
        fds.push_back({s->sock.get(), POLLIN, 0});
        order.push_back(s.get());
      }
    }
    int n = ::poll(fds.data(), fds.size(), 200);
    if (n <= 0) continue;
    if (fds[0].revents) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
    }
    if (fds[1].revents) accept_all();
    for (std::size_t i = 0; i < order.size(); ++i)
      if (fds[i + 2].revents) on_readable(*order[i]);  // sessions are only erased by this thread
  }
}

void CudaIpcTarget::accept_all() {
  for (UniqueFd& sock : accept_host_links(listener_.get())) {  // our user's processes only
    auto s = std::make_shared<Session>();
    s->sock = std::move(sock);
    s->acceptor = std::make_unique<HostLinkAcceptor>(link_, 0);
    std::lock_guard lock(mu_);
    sessions_.push_back(std::move(s));
  }
}

void CudaIpcTarget::on_readable(Session& s) {
  std::vector<std::uint8_t> msg;
  Status st = recv_packet(s.sock.get(), &msg, Clock::now());
  if (st.code() == StatusCode::kTimeout) return;
  std::lock_guard lock(mu_);
  if (!st.ok() || s.dead) return drop(s);
  if (!s.ready) return handshake(s, std::move(msg));
  if (auto region = parse_host_revoke(msg, HostMessage::kRevokeAck)) return revocation_->confirmed(s.link, *region);
  ByteReader r(msg);
  const auto type = static_cast<MessageType>(r.u16());
  const std::uint64_t value = r.u64();
  if (!r.ok() || type != MessageType::kNotify || r.remaining() > cfg_.max_notification_bytes) return drop(s);
  // The initiator sends this only after its copies completed (CUDA event), so the data
  // is visible in our memory before the message reaches the inbox.
  Status kept = cfg_.deliver(s.peer, r.str(r.remaining()));
  if (value != 0) {
    ByteWriter w;
    w.u16(static_cast<std::uint16_t>(MessageType::kNotifyAck));
    w.u64(value);
    if (!kept.ok()) w.str(std::string_view(kept.message()).substr(0, kMaxAckReason));  // why it was refused
    if (!send_packet(s.sock.get(), w.buffer(), deadline_after(kSendBound)).ok()) drop(s);
  }
}

void CudaIpcTarget::handshake(Session& s, std::vector<std::uint8_t> msg) {
  // Hello, version, names and authentication: the core's part (core/host_link.h).
  Result<bool> accepted = s.acceptor->on_message(s.sock.get(), std::move(msg), {});
  if (!accepted.ok()) return drop(s);
  if (!*accepted) return;  // a challenge went out; the proof comes next
  const Deadline deadline = deadline_after(cfg_.peer_timeout);
  if (!s.acceptor->answer(s.sock.get(), {}, deadline).ok()) return drop(s);
  for (const auto& [id, e] : regions_) {
    ByteWriter payload;
    payload.u32(e.info.device);
    payload.u64(e.offset);
    payload.u64(e.alloc_size);
    payload.raw(e.handle, kIpcHandleBytes);
    AnnouncedRegion r;
    r.id = id;
    r.address = e.info.address;
    r.length = e.info.length;
    r.payload = payload.buffer();
    if (!send_host_region(s.sock.get(), r, -1, deadline, "cuda_ipc").ok()) return drop(s);
  }
  if (!send_host_regions_end(s.sock.get(), deadline, "cuda_ipc").ok()) return drop(s);
  s.peer = s.acceptor->peer();
  s.acceptor.reset();
  s.ready = true;
  s.link = revocation_->join(revocation_link(s));  // under mu_, with the regions it was sent
}

void CudaIpcTarget::drop(Session& s) {
  if (s.dead) return;
  s.dead = true;
  ::shutdown(s.sock.get(), SHUT_RDWR);  // the initiator sees EOF: its jobs fail (peer lost)
  if (s.link) revocation_->leave(s.link);
}

}  // namespace kvferry::detail::cuda_ipc
