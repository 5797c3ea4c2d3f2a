#include "backends/cuda_ipc/cuda_ipc_target.h"

#include <cuda_runtime.h>

#include <cstring>

#include "cuda/cuda_util.h"
#include "core/byte_io.h"

namespace kvferry::detail::cuda_ipc {

using cuda::check;
using cuda::check_device_range;
using cuda::DeviceAllocation;
using cuda::DeviceScope;
namespace {

constexpr auto kSendBound = std::chrono::milliseconds(200);

}  // namespace

Result<std::unique_ptr<CudaIpcTarget>> CudaIpcTarget::start(std::shared_ptr<Reactor> reactor, TargetConfig config) {
  std::unique_ptr<CudaIpcTarget> t(new CudaIpcTarget());
  t->cfg_ = std::move(config);
  CudaIpcTarget* raw = t.get();  // host_ (and its hooks) go before the rest of us
  HostTarget::Hooks hooks;
  hooks.on_message = [raw](HostTarget::Peer& p, std::span<const std::uint8_t> msg) { return raw->on_message(p, msg); };
  // Notifications may be larger than the core's fd-passing messages: our own packets.
  hooks.receive = [](int sock, std::vector<std::uint8_t>* msg, std::vector<UniqueFd>*) {
    return recv_packet(sock, msg, Clock::now());
  };
  KVF_ASSIGN_OR_RETURN(t->host_, HostTarget::start(std::move(reactor),
                                                   t->cfg_.link("cuda_ipc", kProtocolVersion),
                                                   "kvferry-cuda-ipc", std::move(hooks)));
  return t;
}

Status CudaIpcTarget::add_region(const RegionInfo& region) {
  KVF_ASSIGN_OR_RETURN(DeviceAllocation alloc,
                       check_device_range(region.address, region.length, static_cast<int>(region.device)));
  std::uint8_t handle[kIpcHandleBytes] = {};
  {
    DeviceScope scope(static_cast<int>(region.device));
    KVF_RETURN_IF_ERROR(scope.status());
    cudaIpcMemHandle_t h{};
    static_assert(sizeof h == kIpcHandleBytes);
    KVF_RETURN_IF_ERROR(check(cudaIpcGetMemHandle(&h, reinterpret_cast<void*>(alloc.base)), "cudaIpcGetMemHandle")
                            .with_context("cuda_ipc: exporting a vram region"));
    std::memcpy(handle, &h, sizeof h);
  }
  // kRegion's payload: GPU, offset in the allocation, allocation size, handle.
  ByteWriter payload;
  payload.u32(region.device);
  payload.u64(region.address - alloc.base);
  payload.u64(alloc.size);
  payload.raw(handle, kIpcHandleBytes);
  HostTarget::Region r;
  r.info = region;
  r.payload = payload.buffer();
  host_->add_region(std::move(r));
  return Status::Ok();
}

Status CudaIpcTarget::on_message(HostTarget::Peer& peer, std::span<const std::uint8_t> msg) {
  ByteReader r(msg);
  const auto type = static_cast<MessageType>(r.u16());
  const std::uint64_t value = r.u64();
  if (!r.ok() || type != MessageType::kNotify || r.remaining() > cfg_.max_notification_bytes)
    return Corrupt("cuda_ipc: unexpected message from '" + peer.name + "'");
  // The initiator sends this only after its copies completed (CUDA event), so the data
  // is visible in our memory before the message reaches the inbox.
  Status kept = cfg_.deliver(peer.name, r.str(r.remaining()));
  if (value == 0) return Status::Ok();
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(MessageType::kNotifyAck));
  w.u64(value);
  if (!kept.ok()) w.str(std::string_view(kept.message()).substr(0, kMaxAckReason));  // why it was refused
  return send_packet(peer.sock.get(), w.buffer(), deadline_after(kSendBound));
}

}  // namespace kvferry::detail::cuda_ipc
