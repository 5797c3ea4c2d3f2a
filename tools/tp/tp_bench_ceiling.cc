#include "tp/tp_bench_ceiling.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "common/vram_support.h"

#ifdef KVFERRY_HAVE_CUDA
#include <cuda_runtime.h>

#include "bench/bench_vram.h"
#include "common/device_buffer.h"
#endif

namespace kvferry::cli {

#ifdef KVFERRY_HAVE_CUDA
namespace {

// GPUs 1..sources each copy `bytes` into their own part of GPU 0 at once; best of `reps`.
Result<double> ingress_ceiling(std::uint32_t sources, std::uint64_t bytes, int reps) {
  KVF_ASSIGN_OR_RETURN(DeviceBuffer target, DeviceBuffer::allocate(0, bytes * sources));
  std::vector<DeviceBuffer> senders;
  std::vector<cudaStream_t> streams(sources);
  for (std::uint32_t s = 0; s < sources; ++s) {
    KVF_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::allocate(static_cast<int>(s + 1), bytes));
    senders.push_back(std::move(b));
    cudaSetDevice(static_cast<int>(s + 1));
    if (cudaDeviceEnablePeerAccess(0, 0) != cudaSuccess) cudaGetLastError();
    cudaStreamCreateWithFlags(&streams[s], cudaStreamNonBlocking);
  }
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint32_t s = 0; s < sources; ++s) {
      cudaSetDevice(static_cast<int>(s + 1));
      cudaMemcpyPeerAsync(reinterpret_cast<void*>(target.address() + s * bytes), 0,
                          reinterpret_cast<const void*>(senders[s].address()), static_cast<int>(s + 1), bytes, streams[s]);
    }
    for (std::uint32_t s = 0; s < sources; ++s) cudaStreamSynchronize(streams[s]);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(bytes) * sources / seconds / 1e9);
  }
  for (cudaStream_t s : streams) cudaStreamDestroy(s);
  if (cudaGetLastError() != cudaSuccess) return Unavailable("the ingress copies failed");
  return best;
}

}  // namespace

Result<TpGpuCeilings> measure_tp_gpu_ceilings(std::uint64_t bytes, std::uint32_t ingress_sources, int reps) {
  const int gpus = cuda_gpu_count();
  if (gpus < 1) return Unavailable("no CUDA GPU here");
  TpGpuCeilings c;
  c.single_gpu = gpus == 1;
  KVF_ASSIGN_OR_RETURN(DeviceBuffer source, DeviceBuffer::allocate(0, bytes));
  KVF_ASSIGN_OR_RETURN(DeviceBuffer destination, DeviceBuffer::allocate(gpus > 1 ? 1 : 0, bytes));
  c.peer_copy_gbps = peer_copy_ceiling(0, reinterpret_cast<const void*>(source.address()), destination.device(),
                                       reinterpret_cast<void*>(destination.address()), bytes, reps);
  c.device_to_host_gbps = pinned_copy_ceiling(0, reinterpret_cast<void*>(source.address()), bytes, true, reps);
  c.ingress_sources = std::min<std::uint32_t>(ingress_sources, static_cast<std::uint32_t>(gpus - 1));
  if (c.ingress_sources > 0) {
    KVF_ASSIGN_OR_RETURN(c.ingress_gbps, ingress_ceiling(c.ingress_sources, bytes / c.ingress_sources, reps));
  }
  return c;
}
#else
Result<TpGpuCeilings> measure_tp_gpu_ceilings(std::uint64_t, std::uint32_t, int) {
  return NotSupported("GPU ceilings need a build with CUDA");
}
#endif

}  // namespace kvferry::cli
