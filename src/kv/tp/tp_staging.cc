#include "kv/tp/tp_staging.h"

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
  Result<std::unique_ptr<StagingSlots>> made = StagingSlots::create(o);
  if (!made.ok()) return made.status().with_context(std::string("making the ") + std::string(to_string(kind)) + " staging arena");
  KVF_RETURN_IF_ERROR(agent_.register_memory((*made)->region()).with_context("registering the staging arena"));
  arena = std::move(made).value();
  return arena.get();
}

}  // namespace kvferry::tp
