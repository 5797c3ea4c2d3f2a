// host_pool.h — a paged KV pool in host memory, shaped like an engine's cache.
//
// One allocation holds `layers` layer tensors back to back; each layer tensor is
// `blocks_per_layer` blocks of `block_size` bytes. Block (layer, b) sits at
// base + (layer * blocks_per_layer + b) * block_size, which is also its index in
// `block_descriptors()`: the layout every index transfer of the tools relies on.
// The memory is pre-faulted on allocation so no timed transfer pays for page faults.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct PoolShape {
  std::uint32_t layers = 0;
  std::uint32_t blocks_per_layer = 0;
  std::uint64_t block_size = 0;

  std::uint64_t total_bytes() const {
    return std::uint64_t{layers} * blocks_per_layer * block_size;
  }
  std::uint32_t index_of(std::uint32_t layer, std::uint32_t block) const {
    return layer * blocks_per_layer + block;
  }
  // One descriptor per (layer, block), layer-major, for a pool starting at `base`
  // (our own, or a peer's whose address it told us).
  DescriptorList block_descriptors(std::uint64_t base) const;
  // The same pool as lanes x blocks (one lane per layer), for strided transfers.
  BlockLanes block_lanes(std::uint64_t base) const {
    BlockLanes lanes;
    for (std::uint32_t layer = 0; layer < layers; ++layer)
      lanes.lane_addresses.push_back(base + std::uint64_t{index_of(layer, 0)} * block_size);
    lanes.block_stride = lanes.block_bytes = block_size;
    lanes.blocks = blocks_per_layer;
    return lanes;
  }
  // Rejects shapes whose descriptor indices would not fit 32 bits, or empty ones.
  Status validate() const;
};

class HostPool {
 public:
  // Allocates, and pre-faults by writing `fill` to every byte. With `shared_by`, the
  // memory comes from that agent's allocate_shared_memory, so same-host peers can map it
  // (what the shm backend wants); otherwise from anonymous pages.
  static Result<HostPool> allocate(const PoolShape& shape, std::uint8_t fill = 0, Agent* shared_by = nullptr);

  HostPool(HostPool&& other) noexcept;
  HostPool& operator=(HostPool&& other) noexcept;
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;
  ~HostPool();

  const PoolShape& shape() const { return shape_; }
  std::uint8_t* base() const { return base_; }
  std::uint64_t address() const { return reinterpret_cast<std::uint64_t>(base_); }
  std::uint64_t bytes() const { return shape_.total_bytes(); }
  std::uint8_t* block(std::uint32_t layer, std::uint32_t b) const {
    return base_ + std::uint64_t{shape_.index_of(layer, b)} * shape_.block_size;
  }

  // The whole pool as one region: register few large regions, never per block.
  DescriptorList region() const;
  DescriptorList block_descriptors() const { return shape_.block_descriptors(address()); }

 private:
  HostPool(PoolShape shape, std::uint8_t* base) : shape_(shape), base_(base) {}
  void release();

  PoolShape shape_;
  std::uint8_t* base_ = nullptr;
  SharedMemory shared_;  // owns the memory when it came from allocate_shared_memory
};

}  // namespace kvferry::cli
