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

DescriptorList PoolShape::block_descriptors(std::uint64_t base) const {
  DescriptorList list(MemoryKind::kDram);
  list.reserve(std::size_t{layers} * blocks_per_layer);
  for (std::uint32_t layer = 0; layer < layers; ++layer) {
    for (std::uint32_t b = 0; b < blocks_per_layer; ++b) {
      list.add(base + std::uint64_t{index_of(layer, b)} * block_size, block_size);
    }
  }
  return list;
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
