// The vram side of the head gather/scatter: checks that the staging is reachable from the
// pool's GPU, launches the kernels (head_copy_kernels.cu), and waits when asked to.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cuda/cuda_util.h"
#include "cuda/head_copy_kernels.h"
#include "kv/tp/head_copy_chunks.h"
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
    KVF_RETURN_IF_ERROR(
        cuda::check_device_range(staging.address, bytes, device).status().with_context("staging"));
    return staging.address;
  }
  std::uint64_t mapped = 0;
  for (std::uint64_t probe : {staging.address, staging.address + bytes - 1}) {
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(probe));
    if (e != cudaSuccess) cudaGetLastError();
    if (e != cudaSuccess || a.type != cudaMemoryTypeHost || a.devicePointer == nullptr) {
      return InvalidArgument(
          "staging at " + hex(probe) +
          " is not pinned host memory: a vram pool's kernel reaches host staging only when "
          "it is pinned (cudaHostAlloc, cudaHostRegister, or a StagingSlots slot)");
    }
    if (probe == staging.address) {
      mapped = reinterpret_cast<std::uint64_t>(a.devicePointer) +
               (probe - reinterpret_cast<std::uint64_t>(a.hostPointer));
    }
  }
  return mapped;
}

// Two CUDA events per scratch half and one for the end, freed when the object goes
// (destroying an event a stream still waits on is allowed: CUDA releases it later).
struct PipelineEvents {
  cudaEvent_t kernel_done[2] = {nullptr, nullptr};
  cudaEvent_t copy_done[2] = {nullptr, nullptr};
  cudaEvent_t mark = nullptr;
  Status create() {
    for (cudaEvent_t* e : {&kernel_done[0], &kernel_done[1], &copy_done[0], &copy_done[1], &mark})
      KVF_RETURN_IF_ERROR(
          cuda::check(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "cudaEventCreate"));
    return Status::Ok();
  }
  ~PipelineEvents() {
    for (cudaEvent_t e : {kernel_done[0], kernel_done[1], copy_done[0], copy_done[1], mark})
      if (e) cudaEventDestroy(e);
  }
};

// The copy through device scratch: the kernel works on one half of the scratch while the
// copy engine moves the other half's piece, on a second stream joined back into `s`. On
// an error part of the work may be queued; `s` still ends after all of it.
Status pipelined(const HeadCopyJob& job, const KvStaging& staging, const KvStaging& scratch, int device,
                 cudaStream_t s, const char* what) {
  KVF_RETURN_IF_ERROR(cuda::check_device_range(scratch.address, scratch.length, device)
                          .status()
                          .with_context("device_scratch"));
  const std::uint64_t piece = scratch.length / 2 / 256 * 256;  // keeps the second half 256-byte aligned
  const std::vector<HeadCopyChunk> chunks = head_copy_chunks(job.plan, piece);
  if (chunks.empty()) {
    return InvalidArgument(std::string(what) + ": half of the device_scratch (" + std::to_string(piece) +
                           " bytes) must hold one layer of one head (" +
                           std::to_string(job.plan.kv_parts * job.plan.tokens * job.plan.row_bytes) +
                           " bytes)");
  }
  const bool gather = job.direction == HeadCopyDirection::kGather;
  PipelineEvents ev;
  KVF_RETURN_IF_ERROR(ev.create());
  cudaStream_t c = nullptr;
  KVF_RETURN_IF_ERROR(cuda::check(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking), "cudaStreamCreate"));
  Status status = cuda::check(cudaEventRecord(ev.mark, s), "cudaEventRecord");
  if (status.ok()) status = cuda::check(cudaStreamWaitEvent(c, ev.mark, 0), "cudaStreamWaitEvent");
  auto step = [&](cudaError_t e, const char* call) {
    if (status.ok() && e != cudaSuccess) status = cuda::check(e, std::string(what) + ": " + call);
    return status.ok();
  };
  for (std::size_t i = 0; i < chunks.size() && status.ok(); ++i) {
    const HeadCopyChunk& k = chunks[i];
    const std::size_t half = i % 2;
    auto* dev = reinterpret_cast<std::uint8_t*>(scratch.address + half * piece);
    auto* host = reinterpret_cast<std::uint8_t*>(staging.address + k.offset);
    auto kernel = [&] {
      return static_cast<cudaError_t>(cuda::launch_head_copy(
          k.plan, gather, job.tensors.data(), static_cast<std::uint32_t>(job.tensors.size()),
          job.block_ids.data(), job.block_ids.size(), reinterpret_cast<std::uint64_t>(dev), s));
    };
    if (gather) {  // kernel into this half (once its previous piece has left), then copy out
      if (i >= 2 && !step(cudaStreamWaitEvent(s, ev.copy_done[half], 0), "cudaStreamWaitEvent")) break;
      if (!step(kernel(), "kernel launch") ||
          !step(cudaEventRecord(ev.kernel_done[half], s), "cudaEventRecord") ||
          !step(cudaStreamWaitEvent(c, ev.kernel_done[half], 0), "cudaStreamWaitEvent") ||
          !step(cudaMemcpyAsync(host, dev, k.bytes, cudaMemcpyDeviceToHost, c), "cudaMemcpyAsync") ||
          !step(cudaEventRecord(ev.copy_done[half], c), "cudaEventRecord"))
        break;
    } else {  // copy into this half (once its previous piece was scattered), then the kernel
      if (i >= 2 && !step(cudaStreamWaitEvent(c, ev.kernel_done[half], 0), "cudaStreamWaitEvent")) break;
      if (!step(cudaMemcpyAsync(dev, host, k.bytes, cudaMemcpyHostToDevice, c), "cudaMemcpyAsync") ||
          !step(cudaEventRecord(ev.copy_done[half], c), "cudaEventRecord") ||
          !step(cudaStreamWaitEvent(s, ev.copy_done[half], 0), "cudaStreamWaitEvent") ||
          !step(kernel(), "kernel launch") ||
          !step(cudaEventRecord(ev.kernel_done[half], s), "cudaEventRecord"))
        break;
    }
  }
  // `s` ends after everything queued on the copy stream, whatever happened above.
  if (cudaEventRecord(ev.mark, c) == cudaSuccess) cudaStreamWaitEvent(s, ev.mark, 0);
  cudaStreamDestroy(c);  // released once its work is done
  return status;
}

}  // namespace

Status device_head_copy(const HeadCopyJob& job, const KvPool& pool, const KvStaging& staging,
                        const KvStaging* scratch, void* stream, bool wait,
                        std::chrono::milliseconds timeout) {
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
  auto s = wait ? cudaStreamPerThread : static_cast<cudaStream_t>(stream);
  Status launched;
  if (scratch) {
    launched = pipelined(job, staging, *scratch, device, s, what);
  } else {
    const int e = cuda::launch_head_copy(job.plan, job.direction == HeadCopyDirection::kGather,
                                         job.tensors.data(), static_cast<std::uint32_t>(job.tensors.size()),
                                         job.block_ids.data(), job.block_ids.size(), address, s);
    launched = cuda::check(static_cast<cudaError_t>(e),
                           std::string(what) + ": kernel launch on GPU " + std::to_string(device));
  }
  if (!wait) return launched;
  // Blocking: wait even after a failed launch, since part of the work may be queued and
  // the caller frees its memory once this returns.
  const auto deadline = Clock::now() + timeout;
  for (int spins = 0;; ++spins) {
    const cudaError_t q = cudaStreamQuery(cudaStreamPerThread);
    if (q != cudaErrorNotReady) {
      if (!launched.ok()) return launched;
      return cuda::check(q, std::string(what) + " on GPU " + std::to_string(device));
    }
    if (Clock::now() > deadline) break;
    if (spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  return Timeout(std::string(what) + " on GPU " + std::to_string(device) + " did not finish within " +
                 std::to_string(timeout.count()) +
                 " ms (the copy may still run: keep both memories until the GPU is idle)" +
                 (launched.ok() ? "" : "; and it failed: " + launched.message()));
}

}  // namespace kvferry::detail
