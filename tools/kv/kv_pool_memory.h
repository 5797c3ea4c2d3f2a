// kv_pool_memory.h — the memory behind the KV pool of `kvferry serve` / `pull`: host
// pages (KvHostPool) or, with `--mem vram`, one cudaMalloc on a GPU (kv_vram_pool.h),
// and the three things the tools do to it: the server fills it with the (lane, block)
// pattern; a client poisons a step's destination blocks, then checks them against the
// pattern. Every kind is checked by the same code on the host (kv_host_pool.h), so a
// GPU pool proves exactly what a host pool proves.
// Not thread-safe: one owner. The memory must outlive the agent it is registered with.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct KvMemoryOptions {
  std::string mem = "dram";  // "dram" or "vram"
  int device = 0;            // with vram: the GPU that holds the pool
};

// "host memory" or "GPU 1 memory", for messages.
std::string describe_kv_memory(const KvMemoryOptions& options);

class KvPoolMemory {
 public:
  virtual ~KvPoolMemory() = default;

  // What to register (tensor_regions()) and to attach; its kind is dram or vram.
  virtual const KvPool& pool() const = 0;
  // Server: every segment (lane, block) gets its pattern.
  virtual Status fill_pattern() = 0;
  // Client: overwrites these blocks in every lane, so stale bytes of an earlier step
  // cannot pass for pulled ones.
  virtual Status poison(std::span<const std::uint32_t> blocks) = 0;
  // Client: our block destination[i] must hold server block source[i] in every lane.
  // The first difference, described, or nullopt; an error only when the bytes could
  // not be read (a GPU copy failed).
  virtual Result<std::optional<std::string>> check(std::span<const std::uint32_t> destination,
                                                   std::span<const std::uint32_t> source) = 0;
};

// `layout`'s pool in the memory `options` names, every byte `fill`. A host pool comes
// from `shared_by`'s shared memory when given (backend_traits.h: wants_shared_pool); a
// GPU pool ignores it. NotSupported in a build without CUDA.
Result<std::unique_ptr<KvPoolMemory>> allocate_kv_pool_memory(const KvLayout& layout,
                                                              const KvMemoryOptions& options,
                                                              std::uint8_t fill, Agent* shared_by = nullptr);

}  // namespace kvferry::cli
