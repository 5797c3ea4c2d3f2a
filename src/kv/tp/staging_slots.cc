// The bounded staging arena: one allocation, a free map of slots, and a FIFO of waiters.
#include "kvferry/kv/staging_slots.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "core/device_stager.h"
#include "kv/tp/staging_memory.h"

namespace kvferry {

struct StagingSlot::State {
  std::shared_ptr<std::uint8_t> memory;
  MemoryKind kind = MemoryKind::kDram;
  std::uint32_t device = 0;
  bool pinned = false;
  std::uint64_t slot_bytes = 0;
  std::uint32_t slots = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> used;           // guarded by mu
  std::uint32_t in_use = 0;         // guarded by mu
  std::deque<std::uint64_t> queue;  // waiting tickets in arrival order, guarded by mu
  std::uint64_t next_ticket = 0;    // guarded by mu

  std::uint64_t base() const { return reinterpret_cast<std::uint64_t>(memory.get()); }

  // First run of `count` free slots, or slots if none (mu held).
  std::uint32_t find(std::uint32_t count) const {
    std::uint32_t run = 0;
    for (std::uint32_t i = 0; i < slots; ++i) {
      run = used[i] ? 0 : run + 1;
      if (run == count) return i + 1 - count;
    }
    return slots;
  }

  void take(std::uint32_t first, std::uint32_t count) {  // mu held
    for (std::uint32_t i = first; i < first + count; ++i) used[i] = true;
    in_use += count;
  }

  void give_back(std::uint32_t first, std::uint32_t count) {
    {
      std::lock_guard lock(mu);
      for (std::uint32_t i = first; i < first + count; ++i) used[i] = false;
      in_use -= count;
    }
    cv.notify_all();
  }
};

namespace {

std::string mib(std::uint64_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

// Plain host memory, 4 KiB aligned and touched so that the first transfer does not pay
// the page faults.
Result<std::shared_ptr<std::uint8_t>> allocate_host(std::uint64_t bytes) {
  void* p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  if (!p) return IoError("staging slots: cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  std::memset(p, 0, bytes);
  return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [](std::uint8_t* q) { std::free(q); });
}

}  // namespace

StagingSlot::StagingSlot(StagingSlot&& other) noexcept { *this = std::move(other); }

StagingSlot& StagingSlot::operator=(StagingSlot&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    address_ = other.address_;
    size_ = other.size_;
    first_ = other.first_;
    count_ = other.count_;
    other.state_ = nullptr;
  }
  return *this;
}

StagingSlot::~StagingSlot() { release(); }

void StagingSlot::release() {
  if (!state_) return;
  state_->give_back(first_, count_);
  state_.reset();
}

std::uint8_t* StagingSlot::data() const {
  return state_ && state_->kind == MemoryKind::kDram ? reinterpret_cast<std::uint8_t*>(address_) : nullptr;
}
MemoryKind StagingSlot::kind() const { return state_ ? state_->kind : MemoryKind::kDram; }
std::uint32_t StagingSlot::device() const { return state_ ? state_->device : 0; }
Descriptor StagingSlot::descriptor() const { return Descriptor{address_, size_, device()}; }

Result<std::unique_ptr<StagingSlots>> StagingSlots::create(const StagingSlotsOptions& o) {
  if (o.slot_bytes == 0 || o.slots == 0)
    return InvalidArgument("staging slots: slot_bytes and slots must be positive");
  if (o.slot_bytes > std::numeric_limits<std::uint64_t>::max() / o.slots)
    return InvalidArgument("staging slots: slots x slot_bytes overflows 64 bits");
  const std::uint64_t bytes = o.slot_bytes * o.slots;
  auto state = std::make_shared<StagingSlot::State>();
  state->kind = o.kind;
  // Host memory belongs to no GPU: a dram arena, its region and its slots all say device 0,
  // as the Agent registers and checks dram descriptors, whatever GPU the pool is on.
  state->device = o.kind == MemoryKind::kVram ? o.device : 0;
  state->slot_bytes = o.slot_bytes;
  state->slots = o.slots;
  state->used.assign(o.slots, false);
  if (o.kind == MemoryKind::kVram) {
    KVF_ASSIGN_OR_RETURN(state->memory, detail::allocate_device_staging(bytes, o.device));
    state->pinned = true;
  } else if (o.kind == MemoryKind::kDram) {
    auto stager = detail::DeviceStager::instance();
    Result<detail::PinnedBuffer> pinned =
        stager.ok() ? (*stager)->allocate_pinned(bytes) : Result<detail::PinnedBuffer>(stager.status());
    if (pinned.ok()) {
      state->memory = pinned->memory;
      state->pinned = true;
    } else if (o.require_pinned) {
      return pinned.status().with_context("staging slots: pinned host memory was required");
    } else {
      KVF_ASSIGN_OR_RETURN(state->memory, allocate_host(bytes));
    }
  } else {
    return InvalidArgument("staging slots: memory kind " + std::string(to_string(o.kind)) +
                           " cannot stage (dram or vram)");
  }
  return std::unique_ptr<StagingSlots>(new StagingSlots(std::move(state)));
}

Result<std::unique_ptr<StagingSlots>> StagingSlots::create_shared(SharedMemory memory, const StagingSlotsOptions& o) {
  if (o.slot_bytes == 0 || o.slots == 0)
    return InvalidArgument("staging slots: slot_bytes and slots must be positive");
  if (o.slot_bytes > std::numeric_limits<std::uint64_t>::max() / o.slots)
    return InvalidArgument("staging slots: slots x slot_bytes overflows 64 bits");
  if (o.kind != MemoryKind::kDram || o.require_pinned) {
    return InvalidArgument("staging slots: shared memory makes a dram arena, not pinned (asked: " +
                           std::string(to_string(o.kind)) + (o.require_pinned ? ", pinned)" : ")"));
  }
  if (!memory.valid() || memory.size() < o.slot_bytes * o.slots) {
    return InvalidArgument("staging slots: the shared memory holds " + std::to_string(memory.size()) + " bytes, " +
                           std::to_string(o.slots) + " slots of " + std::to_string(o.slot_bytes) + " need " +
                           std::to_string(o.slot_bytes * o.slots));
  }
  auto state = std::make_shared<StagingSlot::State>();
  state->kind = MemoryKind::kDram;
  state->slot_bytes = o.slot_bytes;
  state->slots = o.slots;
  state->used.assign(o.slots, false);
  auto owner = std::make_shared<SharedMemory>(std::move(memory));
  state->memory = std::shared_ptr<std::uint8_t>(owner, static_cast<std::uint8_t*>(owner->data()));
  return std::unique_ptr<StagingSlots>(new StagingSlots(std::move(state)));
}

StagingSlots::~StagingSlots() = default;

Result<StagingSlot> StagingSlots::acquire(std::uint64_t bytes, std::chrono::milliseconds timeout) {
  StagingSlot::State& s = *state_;
  if (bytes == 0) return InvalidArgument("staging slots: acquire of 0 bytes");
  const std::uint64_t want = (bytes + s.slot_bytes - 1) / s.slot_bytes;
  if (want > s.slots) {
    return InvalidArgument("staging slots: " + std::to_string(bytes) + " bytes need " + std::to_string(want) +
                           " slots of " + mib(s.slot_bytes) + " but the arena has " +
                           std::to_string(s.slots));
  }
  const auto count = static_cast<std::uint32_t>(want);
  std::unique_lock lock(s.mu);
  const std::uint64_t ticket = s.next_ticket++;
  s.queue.push_back(ticket);
  std::uint32_t first = s.slots;
  const bool got = s.cv.wait_for(lock, timeout, [&] {
    if (s.queue.front() != ticket) return false;
    first = s.find(count);
    return first < s.slots;
  });
  const std::size_t ahead =
      static_cast<std::size_t>(std::find(s.queue.begin(), s.queue.end(), ticket) - s.queue.begin());
  s.queue.erase(s.queue.begin() + static_cast<std::ptrdiff_t>(ahead));
  if (!got) {
    const std::uint32_t in_use = s.in_use;
    lock.unlock();
    s.cv.notify_all();  // the next waiter may be served now
    return Timeout("staging slots: " + std::to_string(count) + " slot(s) for " + std::to_string(bytes) +
                   " bytes not free within " + std::to_string(timeout.count()) + " ms (" +
                   std::to_string(in_use) + " of " + std::to_string(s.slots) + " slots of " +
                   mib(s.slot_bytes) + " in use, " + std::to_string(ahead) + " request(s) waiting ahead)");
  }
  s.take(first, count);
  lock.unlock();
  s.cv.notify_all();
  StagingSlot slot;
  slot.state_ = state_;
  slot.address_ = s.base() + first * s.slot_bytes;
  slot.size_ = count * s.slot_bytes;
  slot.first_ = first;
  slot.count_ = count;
  return slot;
}

Result<StagingSlot> StagingSlots::try_acquire(std::uint64_t bytes) {
  {
    std::lock_guard lock(state_->mu);
    if (!state_->queue.empty()) return Unavailable("staging slots: other requests are waiting");
  }
  auto slot = acquire(bytes, std::chrono::milliseconds(0));
  if (!slot.ok() && slot.status().code() == StatusCode::kTimeout) return Unavailable(slot.status().message());
  return slot;
}

DescriptorList StagingSlots::region() const {
  DescriptorList list(state_->kind);
  list.add(state_->base(), state_->slot_bytes * state_->slots, state_->device);
  return list;
}
MemoryKind StagingSlots::kind() const { return state_->kind; }
std::uint32_t StagingSlots::device() const { return state_->device; }
bool StagingSlots::pinned() const { return state_->pinned; }
std::uint64_t StagingSlots::slot_bytes() const { return state_->slot_bytes; }
std::uint32_t StagingSlots::slots() const { return state_->slots; }
std::uint32_t StagingSlots::slots_in_use() const {
  std::lock_guard lock(state_->mu);
  return state_->in_use;
}

}  // namespace kvferry
