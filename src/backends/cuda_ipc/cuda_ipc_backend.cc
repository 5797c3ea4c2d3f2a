// The cuda_ipc backend: vram <-> vram between processes of one node (NVLink or PCIe),
// through CUDA IPC handles and batched GPU copies. Never selected across hosts.
#include <algorithm>
#include <charconv>

#include "backends/cuda_ipc/cuda_ipc_initiator.h"
#include "backends/cuda_ipc/cuda_ipc_target.h"
#include "cuda/cuda_util.h"
#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/host_backend.h"

namespace kvferry::detail::cuda_ipc {

using cuda::device_count;
namespace {

class CudaIpcBackend final : public HostBackend<CudaIpcTarget, CudaIpcInitiator> {
 public:
  CudaIpcBackend(BackendContext ctx, std::unique_ptr<CudaIpcTarget> target, std::unique_ptr<CudaIpcInitiator> initiator)
      : HostBackend(std::move(ctx), MemoryKind::kVram, std::move(target), std::move(initiator)) {}

  std::string_view name() const override { return "cuda_ipc"; }
  // NVLink peer copies: ~400 GB/s on the H200 pair, ~10 us per request (launch, event).
  CostModel cost_model() const override { return CostModel{10.0, 0.001, 300.0}; }
};

Result<std::unique_ptr<Backend>> create(const BackendContext& ctx) {
  KVF_RETURN_IF_ERROR(device_count().status());
  CopyMethod method = CopyMethod::kKernel;
  if (auto it = ctx.params.find("copy"); it != ctx.params.end()) {
    if (it->second == "batch") method = CopyMethod::kBatch;
    else if (it->second != "kernel")
      return InvalidArgument("cuda_ipc.copy='" + it->second + "' must be 'kernel' or 'batch'");
  }
  // 0: four blocks per SM.
  KVF_ASSIGN_OR_RETURN(const std::uint64_t grid, integer_setting(ctx.params, "cuda_ipc", "blocks", 0, 65535, 0));
  const auto blocks = static_cast<std::uint32_t>(grid);
  TargetConfig tc = HostTargetOptions::of(ctx);
  tc.max_notification_bytes = std::min<std::size_t>(ctx.max_notification_bytes, kMaxWireMessage - 64);
  KVF_ASSIGN_OR_RETURN(auto target, CudaIpcTarget::start(ctx.reactor, std::move(tc)));
  SessionConfig sc;
  sc.agent_name = ctx.agent_name;
  sc.peer_timeout = ctx.peer_timeout;
  sc.lanes = std::make_shared<Lanes>(method, blocks);
  sc.secret = ctx.secret;
  KVF_ASSIGN_OR_RETURN(auto initiator, CudaIpcInitiator::start(ctx.reactor, std::move(sc), ctx.process_id));
  return std::unique_ptr<Backend>(new CudaIpcBackend(ctx, std::move(target), std::move(initiator)));
}

}  // namespace
}  // namespace kvferry::detail::cuda_ipc

namespace kvferry::detail {

void register_cuda_ipc_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "cuda_ipc";
  f.description = "vram <-> vram between processes of one node: CUDA IPC handles, copy kernel or cudaMemcpyBatchAsync";
  f.param_keys = {"copy", "blocks"};
  f.probe = [] { return cuda_ipc::device_count().status(); };
  f.create = cuda_ipc::create;
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
