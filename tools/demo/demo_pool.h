// demo_pool.h — the KV pool of one `kvferry demo` process: host memory (HostPool) or,
// with --mem vram, one cudaMalloc on a GPU, in the same PoolShape (block (layer, b) at
// base + index_of(layer, b) * block_size) and registered as one region either way.
// The demo's contents live here too: the prefill fills block (layer, b) with the
// pattern (kDemoSeed, layer, b), computed on the host (and uploaded, for a GPU pool);
// the decode reads its pool back one layer at a time and checks it on the host, so a
// GPU pool is verified by the same code, byte for byte, as a host pool.
// Not thread-safe: one owner. The memory must outlive the agent it is registered with.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

// One descriptor per (layer, block), layer-major, of a pool of `kind` on `device` at
// `base`: our own pool, or a peer's whose address, kind and device it reported.
DescriptorList demo_block_descriptors(const PoolShape& shape, std::uint64_t base, MemoryKind kind,
                                      std::uint32_t device);

class DemoPool {
 public:
  // Every byte `fill`. A host pool comes from `shared_by`'s shared memory when given
  // (backend_traits.h: wants_shared_pool); a GPU pool (kind vram, on `device`) ignores
  // it. NotSupported for vram in a build without CUDA.
  static Result<DemoPool> allocate(const PoolShape& shape, MemoryKind kind, int device, std::uint8_t fill,
                                   Agent* shared_by = nullptr);

  DemoPool(DemoPool&&) noexcept;
  DemoPool& operator=(DemoPool&&) = delete;
  ~DemoPool();

  const PoolShape& shape() const { return shape_; }
  MemoryKind kind() const { return kind_; }
  std::uint32_t device() const { return static_cast<std::uint32_t>(device_); }
  std::uint64_t address() const;
  DescriptorList region() const;
  DescriptorList block_descriptors() const {
    return demo_block_descriptors(shape_, address(), kind_, device());
  }

  // Prefill: block (layer, b) = pattern (kDemoSeed, layer, b).
  Status fill_prefill_pattern();
  // Calls `visit(layer, bytes)` for each layer in order, `bytes` its blocks_per_layer *
  // block_size bytes in host memory (downloaded for a GPU pool), until it returns false.
  Status visit_layers(const std::function<bool(std::uint32_t layer, const std::uint8_t* bytes)>& visit);

 private:
  struct Gpu;                                              // the GPU memory, defined only in builds with CUDA
  DemoPool(PoolShape shape, MemoryKind kind, int device);  // in the .cc, where Gpu is complete

  PoolShape shape_;
  MemoryKind kind_ = MemoryKind::kDram;
  int device_ = 0;
  std::unique_ptr<HostPool> host_;  // set for dram
  std::unique_ptr<Gpu> gpu_;        // set for vram
};

}  // namespace kvferry::cli
