// The shm backend: dram <-> dram between processes of one host at memory speed.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <algorithm>
#include <thread>

#include "backends/shm/shm_initiator.h"
#include "backends/shm/shm_target.h"
#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/host_backend.h"

namespace kvferry::detail::shm {
namespace {

class ShmBackend final : public HostBackend<ShmTarget, ShmInitiator> {
 public:
  ShmBackend(BackendContext ctx, std::unique_ptr<CopyPool> pool, std::unique_ptr<ShmTarget> target,
             std::unique_ptr<ShmInitiator> initiator)
      : HostBackend(std::move(ctx), MemoryKind::kDram, std::move(target), std::move(initiator)), pool_(std::move(pool)) {}
  ~ShmBackend() override {
    initiator_.reset();  // its sessions may still run copies on the pool: stop it last
    target_.reset();
  }

  std::string_view name() const override { return "shm"; }
  // Memory copies: a few microseconds per request, ~15 GB/s per thread on our VMs.
  CostModel cost_model() const override { return CostModel{3.0, 0.01, 15.0}; }

 private:
  std::unique_ptr<CopyPool> pool_;
};

Result<std::unique_ptr<Backend>> create(const BackendContext& ctx) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // Copy threads: up to 4 on small hosts, half the cores (at most 16) on large ones. One
  // memcpy stream moves 6-13 GB/s; vram staged through pinned memory (55 GB/s of PCIe)
  // needs about 12 to keep up (measured on the H200 host, docs/benchmarks.md). Idle
  // threads sleep.
  const unsigned default_threads = std::clamp(cores / 2, std::min(cores, 4u), 16u);
  KVF_ASSIGN_OR_RETURN(auto threads, integer_setting(ctx.params, "shm", "copy_threads", 1, 64, default_threads));
  KVF_ASSIGN_OR_RETURN(auto spin_us, integer_setting(ctx.params, "shm", "spin_us", 0, 100000, 50));
  KVF_ASSIGN_OR_RETURN(auto inline_kib, integer_setting(ctx.params, "shm", "inline_kib", 0, 1u << 20, 256));
  KVF_ASSIGN_OR_RETURN(auto slice_kib, integer_setting(ctx.params, "shm", "slice_kib", 4, 1u << 20, 1024));
  auto pool = std::make_unique<CopyPool>(static_cast<unsigned>(threads));
  TargetConfig tc{HostTargetOptions::of(ctx)};
  tc.spin_us = static_cast<std::uint32_t>(spin_us);
  KVF_ASSIGN_OR_RETURN(auto target, ShmTarget::start(ctx.reactor, std::move(tc)));
  SessionConfig sc;
  sc.agent_name = ctx.agent_name;
  sc.peer_timeout = ctx.peer_timeout;
  sc.inline_bytes = inline_kib << 10;
  sc.slice_bytes = slice_kib << 10;
  sc.pool = pool.get();
  sc.secret = ctx.secret;
  KVF_ASSIGN_OR_RETURN(auto initiator, ShmInitiator::start(ctx.reactor, sc));
  return std::unique_ptr<Backend>(new ShmBackend(ctx, std::move(pool), std::move(target), std::move(initiator)));
}

}  // namespace
}  // namespace kvferry::detail::shm

namespace kvferry::detail {

void register_shm_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "shm";
  f.description = "dram <-> dram between processes of one host: shared mappings (memfd) or process_vm_*, copy threads";
  f.param_keys = {"copy_threads", "spin_us", "inline_kib", "slice_kib"};
  f.probe = [] {
    UniqueFd memfd(::memfd_create("kvferry-probe", MFD_CLOEXEC));
    if (!memfd.valid()) return IoErrorFromErrno("memfd_create", errno);
    UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!sock.valid()) return IoErrorFromErrno("Unix SOCK_SEQPACKET socket", errno);
    return Status::Ok();
  };
  f.create = shm::create;
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
