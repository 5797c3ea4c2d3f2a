// host_pool.h — a KV pool in host memory, on the library's KvPool (kvferry/kv/kv_pool.h).
//
// One allocation, pre-faulted so no timed transfer pays for page faults, carved into a
// KvLayout's tensors back to back (KvPool::create_contiguous). Descriptors, lanes and
// segment addresses all come from the KvPool, as an engine's would. The allocation is
// registered as one region: few large regions, never per block.
//
// PoolShape is `kvferry bench`'s pool as its options say it (layers x blocks of
// --block-size bytes); layout() is the library's layout of it (below), and pool_at() the
// library's pool of it wherever it lies (bench's GPU pools, bench_vram_pool.h, use it).
// Not thread-safe: one owner. The memory must outlive the agent it is registered with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

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
  // The bench speaks of bytes, not heads: a block of one layer is one run of
  // block_size bytes. As a KvLayout that is an MLA cache with one fp8 latent of
  // block_size bytes per block (one lane per layer, one segment per block), which puts
  // block (layer, b) at tensor `layer` + b * block_size and gives it descriptor index
  // layer * blocks_per_layer + b: the same bytes at the same addresses as index_of().
  Result<KvLayout> layout() const;

  // The library's pool of this shape for memory not allocated by HostPool (bench's GPU
  // pools, a peer's pool): `layer_bases` holds one address per layer, or one from which
  // the layers lie back to back; in `kind` memory on `device`.
  Result<KvPool> pool_at(MemoryKind kind, const std::vector<std::uint64_t>& layer_bases,
                         std::uint32_t device = 0) const;
  // Rejects shapes the layout rejects (empty, indices over 32 bits, sizes over 64 bits).
  Status validate() const { return layout().status(); }
};

class HostPool {
 public:
  // Allocates layout.pool_bytes() and writes `fill` to every byte. With `shared_by`,
  // the memory comes from that agent's allocate_shared_memory, so same-host peers can
  // map it (what the shm backend wants; it must be deregistered, or the agent
  // destroyed, before the pool goes); otherwise from anonymous pages.
  static Result<HostPool> allocate(const KvLayout& layout, std::uint8_t fill = 0, Agent* shared_by = nullptr);
  static Result<HostPool> allocate(const PoolShape& shape, std::uint8_t fill = 0, Agent* shared_by = nullptr);

  HostPool(HostPool&& other) noexcept;
  HostPool& operator=(HostPool&& other) noexcept;
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;
  ~HostPool();

  const KvPool& pool() const { return pool_; }
  const KvLayout& layout() const { return pool_.layout(); }
  std::uint8_t* base() const { return base_; }
  std::uint64_t address() const { return reinterpret_cast<std::uint64_t>(base_); }
  std::uint64_t bytes() const { return layout().pool_bytes(); }
  std::uint8_t* segment(std::uint32_t lane, std::uint32_t block) const {
    return reinterpret_cast<std::uint8_t*>(pool_.segment_address(lane, block));
  }

  // The whole allocation as one region.
  DescriptorList region() const;
  DescriptorList block_descriptors() const { return pool_.block_descriptors(); }
  BlockLanes block_lanes() const { return pool_.block_lanes(); }

 private:
  HostPool(KvPool pool, std::uint8_t* base, SharedMemory shared)
      : pool_(std::move(pool)), base_(base), shared_(std::move(shared)) {}
  void release();

  KvPool pool_;
  std::uint8_t* base_ = nullptr;
  SharedMemory shared_;  // owns the memory when it came from allocate_shared_memory
};

}  // namespace kvferry::cli
