// The vram side of the head gather/scatter: checks that the staging is reachable from the
// pool's GPU, launches the kernels (head_copy_kernels.cu), and waits when asked to.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cuda/cuda_util.h"
#include "cuda/head_copy_kernels.h"
#include "kv/tp/head_copy_internal.h"

namespace kvferry::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string hex(std::uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(v));
  return text;
}

// The address the kernel uses for the staging: device memory of `device`, or pinned host
// memory through its device mapping. Both ends are probed.
Result<std::uint64_t> staging_for_kernel(const KvStaging& staging, std::uint64_t bytes, int device) {
  if (staging.kind == MemoryKind::kVram) {
    KVF_RETURN_IF_ERROR(cuda::check_device_range(staging.address, bytes, device).status().with_context("staging"));
    return staging.address;
  }
  std::uint64_t mapped = 0;
  for (std::uint64_t probe : {staging.address, staging.address + bytes - 1}) {
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(probe));
    if (e != cudaSuccess) cudaGetLastError();
    if (e != cudaSuccess || a.type != cudaMemoryTypeHost || a.devicePointer == nullptr) {
      return InvalidArgument("staging at " + hex(probe) +
                             " is not pinned host memory: a vram pool's kernel reaches host staging only when "
                             "it is pinned (cudaHostAlloc, cudaHostRegister, or a StagingSlots slot)");
    }
    if (probe == staging.address) {
      mapped = reinterpret_cast<std::uint64_t>(a.devicePointer) + (probe - reinterpret_cast<std::uint64_t>(a.hostPointer));
    }
  }
  return mapped;
}

}  // namespace

Status device_head_copy(const HeadCopyJob& job, const KvPool& pool, const KvStaging& staging, void* stream,
                        bool wait, std::chrono::milliseconds timeout) {
  const char* what = job.direction == HeadCopyDirection::kGather ? "gather_kv_heads" : "scatter_kv_heads";
  if (job.tensors.size() > cuda::kHeadCopyMaxTensors) {
    return NotSupported(std::string(what) + ": the pool has " + std::to_string(job.tensors.size()) +
                        " tensors; the kernels take at most " + std::to_string(cuda::kHeadCopyMaxTensors));
  }
  if (job.plan.block_tokens > cuda::kHeadCopyMaxBlockTokens) {
    return NotSupported(std::string(what) + ": block_tokens " + std::to_string(job.plan.block_tokens) +
                        " exceeds the kernels' " + std::to_string(cuda::kHeadCopyMaxBlockTokens));
  }
  const int device = static_cast<int>(pool.device());
  cuda::DeviceScope scope(device);
  KVF_RETURN_IF_ERROR(scope.status().with_context(what));
  const std::uint64_t bytes = job.plan.rows() * job.plan.row_bytes;
  KVF_ASSIGN_OR_RETURN(std::uint64_t address, staging_for_kernel(staging, bytes, device));
  void* s = wait ? static_cast<void*>(cudaStreamPerThread) : stream;
  const int e = cuda::launch_head_copy(job.plan, job.direction == HeadCopyDirection::kGather, job.tensors.data(),
                                       static_cast<std::uint32_t>(job.tensors.size()), job.block_ids.data(),
                                       job.block_ids.size(), address, s);
  KVF_RETURN_IF_ERROR(cuda::check(static_cast<cudaError_t>(e), std::string(what) + ": kernel launch on GPU " +
                                                                   std::to_string(device)));
  if (!wait) return Status::Ok();
  const auto deadline = Clock::now() + timeout;
  for (int spins = 0;; ++spins) {
    const cudaError_t q = cudaStreamQuery(cudaStreamPerThread);
    if (q != cudaErrorNotReady) return cuda::check(q, std::string(what) + " on GPU " + std::to_string(device));
    if (Clock::now() > deadline) break;
    if (spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  return Timeout(std::string(what) + " on GPU " + std::to_string(device) + " did not finish within " +
                 std::to_string(timeout.count()) + " ms (the copy may still run: keep both memories until the "
                 "GPU is idle)");
}

}  // namespace kvferry::detail
