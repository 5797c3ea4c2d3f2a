// demo_pool.h — the KV pool of one `kvferry demo` process on the library's KvPool:
// host memory (HostPool) or, with --mem vram, one cudaMalloc on a GPU carved into the
// same layout's tensors; registered as one region either way and published in the
// agent's metadata ("kv.pool", kv_handshake.h), where the other process finds it.
// The demo's contents live here too: the prefill fills block (layer, b) with the
// pattern (kDemoSeed, layer, b), computed on the host (and uploaded, for a GPU pool);
// the decode reads its pool back one layer at a time and checks it on the host, so a
// GPU pool is verified by the same code, byte for byte, as a host pool.
// Not thread-safe: one owner. The memory must outlive the agent it is registered with.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

class DemoPool {
 public:
  // Every byte `fill`. A host pool comes from `shared_by`'s shared memory when given
  // (backend_traits.h: wants_shared_pool); a GPU pool (kind vram, on `device`) ignores
  // it. NotSupported for vram in a build without CUDA.
  static Result<DemoPool> allocate(const KvLayout& layout, MemoryKind kind, int device, std::uint8_t fill,
                                   Agent* shared_by = nullptr);

  DemoPool(DemoPool&&) noexcept;
  DemoPool& operator=(DemoPool&&) = delete;
  ~DemoPool();

  const KvPool& pool() const { return *pool_; }
  const KvLayout& layout() const { return pool_->layout(); }
  // The whole allocation as one region.
  DescriptorList region() const;

  // Prefill: block (layer, b) = pattern (kDemoSeed, layer, b).
  Status fill_prefill_pattern();
  // Calls `visit(layer, bytes)` for each layer in order, `bytes` its blocks *
  // block_bytes bytes in host memory (downloaded for a GPU pool), until it returns false.
  Status visit_layers(const std::function<bool(std::uint32_t layer, const std::uint8_t* bytes)>& visit);

 private:
  struct Gpu;      // the GPU memory, defined only in builds with CUDA
  DemoPool();      // in the .cc, where Gpu is complete

  std::optional<KvPool> pool_;
  std::unique_ptr<HostPool> host_;  // set for dram
  std::unique_ptr<Gpu> gpu_;        // set for vram
};

}  // namespace kvferry::cli
