#include "common/host_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

namespace kvferry::cli {

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

Status PoolShape::validate() const {
  if (layers == 0 || blocks_per_layer == 0 || block_size == 0) {
    return InvalidArgument("pool needs at least one layer, one block and one byte per block");
  }
  if (std::uint64_t{layers} * blocks_per_layer > std::numeric_limits<std::uint32_t>::max()) {
    return InvalidArgument("layers * blocks per layer exceeds 32-bit descriptor indices");
  }
  if (block_size > std::numeric_limits<std::uint64_t>::max() / (std::uint64_t{layers} * blocks_per_layer)) {
    return InvalidArgument("pool size overflows 64 bits");
  }
  return Status::Ok();
}

Result<HostPool> HostPool::allocate(const PoolShape& shape, std::uint8_t fill, Agent* shared_by) {
  KVF_RETURN_IF_ERROR(shape.validate());
  if (shared_by != nullptr) {
    KVF_ASSIGN_OR_RETURN(SharedMemory shared, shared_by->allocate_shared_memory(shape.total_bytes()));
    std::memset(shared.data(), fill, shape.total_bytes());
    HostPool pool(shape, static_cast<std::uint8_t*>(shared.data()));
    pool.shared_ = std::move(shared);
    return pool;
  }
  void* memory = mmap(nullptr, shape.total_bytes(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    return IoErrorFromErrno("allocating a pool of " + std::to_string(shape.total_bytes()) + " bytes", errno);
  }
  std::memset(memory, fill, shape.total_bytes());
  return HostPool(shape, static_cast<std::uint8_t*>(memory));
}

HostPool::HostPool(HostPool&& other) noexcept
    : shape_(other.shape_), base_(other.base_), shared_(std::move(other.shared_)) {
  other.base_ = nullptr;
}

HostPool& HostPool::operator=(HostPool&& other) noexcept {
  if (this != &other) {
    release();
    shape_ = other.shape_;
    base_ = other.base_;
    shared_ = std::move(other.shared_);
    other.base_ = nullptr;
  }
  return *this;
}

HostPool::~HostPool() { release(); }

void HostPool::release() {
  if (base_ != nullptr && !shared_.valid()) munmap(base_, shape_.total_bytes());
  shared_ = SharedMemory();
  base_ = nullptr;
}

DescriptorList HostPool::region() const {
  DescriptorList list(MemoryKind::kDram);
  list.add(make_descriptor(base_, bytes()));
  return list;
}

}  // namespace kvferry::cli
