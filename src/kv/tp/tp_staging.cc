#include "kv/tp/tp_staging.h"

#include <optional>

#include "core/device_stager.h"

namespace kvferry::tp {

StagingArenas::~StagingArenas() {
  // The endpoint cancelled its transfers first; a failure here leaves the region to the
  // Agent, which never touches it again once the arena's memory is gone.
  for (auto* arena : {&host_, &device_}) {
    if (*arena) (void)agent_.deregister_memory((*arena)->region());
  }
}

std::uint64_t StagingArenas::capacity(MemoryKind kind) const {
  const std::uint32_t slots = kind == MemoryKind::kVram ? options_.device_slots : options_.host_slots;
  return options_.slot_bytes * slots;
}

Result<StagingSlots*> StagingArenas::arena(MemoryKind kind) {
  std::unique_ptr<StagingSlots>& arena = kind == MemoryKind::kVram ? device_ : host_;
  if (arena) return arena.get();
  if (kind == MemoryKind::kVram && pool_kind_ != MemoryKind::kVram) {
    return InvalidArgument("device staging needs a KV pool on a GPU; this pool is in host memory");
  }
  StagingSlotsOptions o;
  o.slot_bytes = options_.slot_bytes;
  o.slots = kind == MemoryKind::kVram ? options_.device_slots : options_.host_slots;
  o.kind = kind;
  o.device = kind == MemoryKind::kVram ? pool_device_ : 0;  // host staging belongs to no GPU
  // A GPU pool's kernels read and write host staging over the bus: it must be pinned.
  o.require_pinned = kind == MemoryKind::kDram && pool_kind_ == MemoryKind::kVram;
  Result<std::unique_ptr<StagingSlots>> made = InvalidArgument("no arena made");
  if (kind == MemoryKind::kDram && pool_kind_ == MemoryKind::kDram) {
    // Host pools stage in shared memory: a same-host peer (shm) maps it and copies into
    // it directly; other backends see plain host memory. Plain memory if refused.
    Result<SharedMemory> shared = agent_.allocate_shared_memory(o.slot_bytes * o.slots);
    if (shared.ok()) made = StagingSlots::create_shared(std::move(shared).value(), o);
  }
  if (!made.ok()) made = StagingSlots::create(o);
  if (!made.ok()) return made.status().with_context(std::string("making the ") + std::string(to_string(kind)) + " staging arena");
  KVF_RETURN_IF_ERROR(agent_.register_memory((*made)->region()).with_context("registering the staging arena"));
  arena = std::move(made).value();
  return arena.get();
}

namespace {

// A device slot for `host`'s bytes, free now, and the stager to copy it; nullopt: go direct.
struct Bounce {
  StagingSlot slot;
  std::shared_ptr<detail::DeviceStager> stager;
};

std::optional<Bounce> bounce_for(StagingArenas& arenas, const KvPool& pool, const KvStaging& host) {
  if (!arenas.options().host_via_device || pool.kind() != MemoryKind::kVram || host.kind != MemoryKind::kDram)
    return std::nullopt;
  Result<StagingSlots*> arena = arenas.arena(MemoryKind::kVram);
  if (!arena.ok() || host.length > arenas.capacity(MemoryKind::kVram)) return std::nullopt;
  Result<StagingSlot> slot = (*arena)->try_acquire(host.length);
  if (!slot.ok()) return std::nullopt;
  Result<std::shared_ptr<detail::DeviceStager>> stager = detail::DeviceStager::instance();
  if (!stager.ok()) return std::nullopt;
  return Bounce{std::move(slot).value(), std::move(stager).value()};
}

constexpr std::chrono::milliseconds kCopyTimeout{10000};

}  // namespace

Status gather_to_host(StagingArenas& arenas, const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                      const KvStaging& host) {
  std::optional<Bounce> b = bounce_for(arenas, pool, host);
  if (!b) return gather_kv_heads(pool, window, heads, host);
  const KvStaging device{b->slot.address(), host.length, MemoryKind::kVram, b->slot.device()};
  KVF_RETURN_IF_ERROR(gather_kv_heads(pool, window, heads, device));
  return b->stager->copy(static_cast<int>(pool.device()), detail::StageMethod::kBatch,
                         {{device.address, host.address, host.length}}, kCopyTimeout)
      .with_context("copying gathered heads to host staging");
}

Status scatter_from_host(StagingArenas& arenas, const KvStaging& host, const KvPool& pool,
                         const KvTokenWindow& window, HeadRange heads) {
  std::optional<Bounce> b = bounce_for(arenas, pool, host);
  if (!b) return scatter_kv_heads(host, pool, window, heads);
  const KvStaging device{b->slot.address(), host.length, MemoryKind::kVram, b->slot.device()};
  KVF_RETURN_IF_ERROR(b->stager
                          ->copy(static_cast<int>(pool.device()), detail::StageMethod::kBatch,
                                 {{host.address, device.address, host.length}}, kCopyTimeout)
                          .with_context("copying host staging to the GPU"));
  return scatter_kv_heads(device, pool, window, heads);
}

}  // namespace kvferry::tp
