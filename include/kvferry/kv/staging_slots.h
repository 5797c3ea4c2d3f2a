// kvferry/kv/staging_slots.h — a bounded arena of staging memory, cut into equal slots,
// for the gather/scatter staging of heterogeneous-TP transfers (kv_head_copy.h).
//
// Contract
// - One allocation made at `create`, never grown: the memory pinned (or allocated on a
//   GPU) is exactly `slots * slot_bytes`, whatever the load. Register `region()` with the
//   Agent once; every slot lies inside it.
// - `acquire(bytes, timeout)` hands out `ceil(bytes / slot_bytes)` adjacent slots as one
//   `StagingSlot`; when they are not free it waits (back-pressure) up to `timeout`, then
//   returns Timeout naming what was asked and what is in use. Waiters are served in
//   arrival order, so a large request is not starved by small ones. Asking for more than
//   the whole arena is InvalidArgument at once (it could never be served).
// - `StagingSlot` is an RAII handle (move-only): its slots return to the arena when it is
//   destroyed or `release()`d. The arena's memory lives until the arena and every slot
//   handle are gone (a handle keeps it alive), so a slot outliving its arena object
//   stays valid.
// - Memory kinds: `dram` is pinned host memory (cudaHostAlloc, portable and mapped: any
//   GPU's kernels and copy engines reach it) in a build with CUDA and a usable GPU, else
//   plain host memory aligned to 4 KiB (pre-faulted either way; `pinned()` says which;
//   `require_pinned` refuses the fallback). `vram` is cudaMalloc memory of `device`
//   (NotSupported without CUDA, Unavailable without a GPU). `create_shared` makes a dram
//   arena in memory a same-host peer can map (shared_memory.h).
// - Threading: every method is thread-safe; a StagingSlot is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "kvferry/memory.h"
#include "kvferry/shared_memory.h"
#include "kvferry/status.h"

namespace kvferry {

struct StagingSlotsOptions {
  std::uint64_t slot_bytes = 64ull << 20;
  std::uint32_t slots = 8;
  MemoryKind kind = MemoryKind::kDram;  // dram or vram
  std::uint32_t device = 0;             // vram: the GPU (dram arenas always say device 0)
  bool require_pinned = false;          // dram: refuse plain host memory
};

class StagingSlots;

class StagingSlot {
 public:
  StagingSlot() = default;  // holds nothing
  StagingSlot(StagingSlot&& other) noexcept;
  StagingSlot& operator=(StagingSlot&& other) noexcept;
  StagingSlot(const StagingSlot&) = delete;
  StagingSlot& operator=(const StagingSlot&) = delete;
  ~StagingSlot();

  bool valid() const { return state_ != nullptr; }
  std::uint64_t address() const { return address_; }
  // Host pointer (dram arenas); nullptr for vram.
  std::uint8_t* data() const;
  std::uint64_t size() const { return size_; }  // whole slots: >= the bytes asked
  std::uint32_t first_slot() const { return first_; }
  std::uint32_t slot_count() const { return count_; }
  MemoryKind kind() const;
  std::uint32_t device() const;
  Descriptor descriptor() const;
  // Returns the slots now (also done by the destructor).
  void release();

 private:
  friend class StagingSlots;
  struct State;
  std::shared_ptr<State> state_;
  std::uint64_t address_ = 0;
  std::uint64_t size_ = 0;
  std::uint32_t first_ = 0;
  std::uint32_t count_ = 0;
};

class StagingSlots {
 public:
  static Result<std::unique_ptr<StagingSlots>> create(const StagingSlotsOptions& options);
  // A dram arena in `memory` (Agent::allocate_shared_memory), so that a same-host
  // backend (shm) maps the staging and copies into it directly instead of reaching it
  // through the kernel. The arena keeps `memory` until it and every slot are gone;
  // `options.kind` must be dram and `memory` must hold slots x slot_bytes. Not pinned
  // (require_pinned is refused).
  static Result<std::unique_ptr<StagingSlots>> create_shared(SharedMemory memory, const StagingSlotsOptions& options);
  ~StagingSlots();
  StagingSlots(const StagingSlots&) = delete;
  StagingSlots& operator=(const StagingSlots&) = delete;

  // Adjacent slots holding at least `bytes` (> 0), waiting up to `timeout`.
  Result<StagingSlot> acquire(std::uint64_t bytes, std::chrono::milliseconds timeout);
  // The same, without waiting: Unavailable when they are not free now.
  Result<StagingSlot> try_acquire(std::uint64_t bytes);

  // The whole arena: one descriptor to register.
  DescriptorList region() const;
  MemoryKind kind() const;
  std::uint32_t device() const;
  bool pinned() const;
  std::uint64_t slot_bytes() const;
  std::uint32_t slots() const;
  std::uint32_t slots_in_use() const;

 private:
  explicit StagingSlots(std::shared_ptr<StagingSlot::State> state) : state_(std::move(state)) {}
  std::shared_ptr<StagingSlot::State> state_;
};

}  // namespace kvferry
