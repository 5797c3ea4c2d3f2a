// kv_vram_pool.h — a KV pool on a GPU for `kvferry serve` / `pull --mem vram`: one
// cudaMalloc carved into the layout's tensors (each registered on its own, as an
// engine's per-layer tensors are), registered as MemoryKind::kVram on its device.
// Filled by computing the pattern on the host and uploading it one tensor at a time;
// checked by gathering the destination segments to the host in bounded batches and
// running the host pool's checker over them. Only in builds with CUDA.
#pragma once

#ifdef KVFERRY_HAVE_CUDA
#include <memory>

#include "common/device_buffer.h"
#include "kv/kv_pool_memory.h"

namespace kvferry::cli {

class KvVramPool final : public KvPoolMemory {
 public:
  // layout.pool_bytes() on GPU `device`, every byte `fill`.
  static Result<std::unique_ptr<KvVramPool>> allocate(const KvLayout& layout, int device, std::uint8_t fill);

  const KvPool& pool() const override { return pool_; }
  Status fill_pattern() override;
  Status poison(std::span<const std::uint32_t> blocks) override;
  Result<std::optional<std::string>> check(std::span<const std::uint32_t> destination,
                                           std::span<const std::uint32_t> source) override;

 private:
  KvVramPool(DeviceBuffer memory, KvPool pool) : memory_(std::move(memory)), pool_(std::move(pool)) {}
  // Where segment (lane, block) lies in memory_.
  ByteRange segment(std::uint32_t lane, std::uint32_t block) const;

  DeviceBuffer memory_;
  KvPool pool_;
};

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
