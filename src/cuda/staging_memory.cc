#include "kv/tp/staging_memory.h"

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_util.h"

namespace kvferry::detail {

Result<std::shared_ptr<std::uint8_t>> allocate_device_staging(std::uint64_t bytes, std::uint32_t device) {
  KVF_RETURN_IF_ERROR(cuda::device_count().status().with_context("vram staging"));
  cuda::DeviceScope scope(static_cast<int>(device));
  KVF_RETURN_IF_ERROR(scope.status().with_context("vram staging"));
  void* p = nullptr;
  KVF_RETURN_IF_ERROR(cuda::check(cudaMalloc(&p, bytes), "vram staging: cudaMalloc(" + std::to_string(bytes) +
                                                             " bytes) on GPU " + std::to_string(device)));
  return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [](std::uint8_t* q) { cudaFree(q); });
}

}  // namespace kvferry::detail
