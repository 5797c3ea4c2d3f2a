#include "common/host_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

namespace kvferry::cli {

Result<KvLayout> PoolShape::layout() const {
  if (block_size > std::numeric_limits<std::uint32_t>::max()) {
    return InvalidArgument("a block of " + std::to_string(block_size) + " bytes: at most 4 GiB - 1");
  }
  const KvGeometry geometry{layers, 1, static_cast<std::uint32_t>(block_size), 1, KvDtype::kFp8};
  return KvLayout::create(geometry, KvArrangement::kMla, blocks_per_layer);
}

Result<KvPool> PoolShape::pool_at(MemoryKind kind, const std::vector<std::uint64_t>& layer_bases,
                                  std::uint32_t device) const {
  KVF_ASSIGN_OR_RETURN(KvLayout kv_layout, layout());
  if (layer_bases.size() == 1) return KvPool::create_contiguous(kv_layout, kind, layer_bases.front(), device);
  if (layer_bases.size() != layers) {
    return InvalidArgument("a pool of " + std::to_string(layers) + " layers at " + std::to_string(layer_bases.size()) +
                           " addresses: one per layer, or one for all");
  }
  return KvPool::create(kv_layout, kind, layer_bases, device);
}

Result<HostPool> HostPool::allocate(const PoolShape& shape, std::uint8_t fill, Agent* shared_by) {
  KVF_ASSIGN_OR_RETURN(KvLayout layout, shape.layout());
  return allocate(layout, fill, shared_by);
}

Result<HostPool> HostPool::allocate(const KvLayout& layout, std::uint8_t fill, Agent* shared_by) {
  const std::uint64_t bytes = layout.pool_bytes();
  SharedMemory shared;
  void* memory = nullptr;
  if (shared_by != nullptr) {
    KVF_ASSIGN_OR_RETURN(shared, shared_by->allocate_shared_memory(bytes));
    memory = shared.data();
  } else {
    memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
      return IoErrorFromErrno("allocating a pool of " + std::to_string(bytes) + " bytes", errno);
    }
  }
  Result<KvPool> pool = KvPool::create_contiguous(layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(memory));
  if (!pool.ok()) {
    if (!shared.valid()) munmap(memory, bytes);
    return pool.status();
  }
  std::memset(memory, fill, bytes);
  return HostPool(std::move(pool).value(), static_cast<std::uint8_t*>(memory), std::move(shared));
}

HostPool::HostPool(HostPool&& other) noexcept
    : pool_(std::move(other.pool_)), base_(other.base_), shared_(std::move(other.shared_)) {
  other.base_ = nullptr;
}

HostPool& HostPool::operator=(HostPool&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = std::move(other.pool_);
    base_ = other.base_;
    shared_ = std::move(other.shared_);
    other.base_ = nullptr;
  }
  return *this;
}

HostPool::~HostPool() { release(); }

void HostPool::release() {
  if (base_ != nullptr && !shared_.valid()) munmap(base_, bytes());
  shared_ = SharedMemory();
  base_ = nullptr;
}

DescriptorList HostPool::region() const {
  DescriptorList list(MemoryKind::kDram);
  list.add(make_descriptor(base_, bytes()));
  return list;
}

}  // namespace kvferry::cli
