#include <cuda_runtime.h>

#include "cuda/copy_kernels.h"

namespace kvferry::detail::cuda {
namespace {

constexpr unsigned kThreads = 512;
constexpr unsigned kUnroll = 4;  // 16-byte loads in flight per thread before the stores

// One item by one thread block. Items whose source and destination are 16-byte aligned
// move as int4 with kUnroll loads issued before their stores (peer reads over NVLink
// need many loads in flight); the rest byte by byte.
__device__ __forceinline__ void copy_item(const CopyItem it) {
  const auto* s = reinterpret_cast<const unsigned char*>(it.src);
  auto* d = reinterpret_cast<unsigned char*>(it.dst);
  std::uint64_t done = 0;
  if (((it.src | it.dst) & 15u) == 0) {
    const auto* s4 = reinterpret_cast<const int4*>(s);
    auto* d4 = reinterpret_cast<int4*>(d);
    const std::uint64_t n16 = it.length >> 4;
    std::uint64_t j = threadIdx.x;
    for (; j + (kUnroll - 1) * kThreads < n16; j += kUnroll * kThreads) {
      int4 v[kUnroll];
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u) v[u] = __ldcs(s4 + j + u * kThreads);
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u) __stcs(d4 + j + u * kThreads, v[u]);
    }
    for (; j < n16; j += kThreads) __stcs(d4 + j, __ldcs(s4 + j));
    done = n16 << 4;
  }
  for (std::uint64_t k = done + threadIdx.x; k < it.length; k += kThreads) d[k] = s[k];
}

// Grid-stride over the items.
__global__ void __launch_bounds__(kThreads) copy_items_kernel(const CopyItem* __restrict__ items,
                                                              std::uint32_t count) {
  for (std::uint32_t i = blockIdx.x; i < count; i += gridDim.x) copy_item(items[i]);
}

// Grid-stride over lanes x chunks, lane-major: the item's addresses are the chunk's
// offsets from its lane's bases.
__global__ void __launch_bounds__(kThreads) copy_strided_kernel(const std::uint64_t* __restrict__ src_lanes,
                                                                const std::uint64_t* __restrict__ dst_lanes,
                                                                const CopyItem* __restrict__ chunks,
                                                                std::uint32_t lanes, std::uint32_t count) {
  const std::uint64_t total = std::uint64_t(lanes) * count;
  for (std::uint64_t u = blockIdx.x; u < total; u += gridDim.x) {
    const std::uint32_t lane = static_cast<std::uint32_t>(u / count);
    CopyItem it = chunks[u - std::uint64_t(lane) * count];
    it.src += src_lanes[lane];
    it.dst += dst_lanes[lane];
    copy_item(it);
  }
}

std::uint32_t grid_for(std::uint32_t blocks, std::uint64_t units) {
  if (blocks == 0) {
    int device = 0;
    cudaGetDevice(&device);
    blocks = 4 * multiprocessor_count(device);
    if (blocks == 0) blocks = 256;
  }
  return units < blocks ? static_cast<std::uint32_t>(units) : blocks;
}

}  // namespace

int launch_copy_items(const CopyItem* device_items, std::uint32_t count, void* stream, std::uint32_t blocks) {
  if (count == 0) return 0;
  copy_items_kernel<<<grid_for(blocks, count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(device_items,
                                                                                                 count);
  return static_cast<int>(cudaGetLastError());
}

int launch_copy_strided(const std::uint64_t* device_src_lanes, const std::uint64_t* device_dst_lanes,
                        const CopyItem* device_chunks, std::uint32_t lanes, std::uint32_t chunks, void* stream,
                        std::uint32_t blocks) {
  if (lanes == 0 || chunks == 0) return 0;
  copy_strided_kernel<<<grid_for(blocks, std::uint64_t(lanes) * chunks), kThreads, 0,
                        static_cast<cudaStream_t>(stream)>>>(device_src_lanes, device_dst_lanes, device_chunks, lanes,
                                                             chunks);
  return static_cast<int>(cudaGetLastError());
}

std::uint32_t multiprocessor_count(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
  return static_cast<std::uint32_t>(n);
}

std::string copy_items_sync(int device, const std::vector<CopyItem>& items) {
  int previous = 0;
  cudaGetDevice(&previous);
  std::string error;
  auto fail = [&](const char* what, cudaError_t e) {
    if (error.empty() && e != cudaSuccess) error = std::string(what) + ": " + cudaGetErrorString(e);
    return e != cudaSuccess;
  };
  CopyItem* table = nullptr;
  if (!fail("cudaSetDevice", cudaSetDevice(device)) &&
      !fail("cudaMalloc", cudaMalloc(&table, items.size() * sizeof(CopyItem) + 1)) &&
      !fail("cudaMemcpy", cudaMemcpy(table, items.data(), items.size() * sizeof(CopyItem), cudaMemcpyHostToDevice)) &&
      !fail("launch", static_cast<cudaError_t>(
                          launch_copy_items(table, static_cast<std::uint32_t>(items.size()), nullptr, 0))))
    fail("cudaDeviceSynchronize", cudaDeviceSynchronize());
  if (table) cudaFree(table);
  cudaSetDevice(previous);
  return error;
}

}  // namespace kvferry::detail::cuda
