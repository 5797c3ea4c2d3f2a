// Inside the head gather/scatter (kvferry/kv/kv_head_copy.h): one validated job, and the
// two engines that run it — the CPU copy (head_copy_cpu.cc) and the CUDA kernels
// (src/cuda/head_copy_device.cc; core/without_cuda/ in a build without CUDA).
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "kv/tp/head_copy_plan.h"
#include "kvferry/kv/kv_head_copy.h"

namespace kvferry::detail {

enum class HeadCopyDirection { kGather, kScatter };

struct HeadCopyJob {
  HeadCopyDirection direction = HeadCopyDirection::kGather;
  HeadCopyPlan plan;
  // The blocks the window touches (block_ids[0] holds window token 0 at slot
  // plan.first_token, which is < block_tokens).
  std::span<const std::uint32_t> block_ids;
  std::span<const std::uint64_t> tensors;  // the pool's tensor addresses
};

// Validates every argument against the pool (heads, block ids, window, staging size and
// kind) and builds the job. `what` starts the error messages ("gather_kv_heads").
Result<HeadCopyJob> make_head_copy_job(HeadCopyDirection direction, const KvPool& pool,
                                       const KvTokenWindow& window, HeadRange heads,
                                       const KvStaging& staging);

// dram pools: copies on this thread and up to `threads - 1` more (0: decided by size).
void cpu_head_copy(const HeadCopyJob& job, std::uint8_t* staging, std::uint32_t threads);

// vram pools: checks that the staging is reachable from the pool's GPU (its device memory
// or pinned host memory), then launches on `stream`; with `wait`, waits up to `timeout`
// on the calling thread's per-thread stream instead (stream is then ignored). With
// `scratch` (device memory of the pool's GPU) and host staging, the kernels work on the
// scratch piece by piece and the copy engine moves the pieces (head_copy_chunks.h).
Status device_head_copy(const HeadCopyJob& job, const KvPool& pool, const KvStaging& staging,
                        const KvStaging* scratch, void* stream, bool wait, std::chrono::milliseconds timeout);

}  // namespace kvferry::detail
