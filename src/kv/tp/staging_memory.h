// Device memory for vram staging arenas (kvferry/kv/staging_slots.h): cudaMalloc on the
// GPU in src/cuda/staging_memory.cc; a build without CUDA refuses (core/without_cuda/).
#pragma once

#include <cstdint>
#include <memory>

#include "kvferry/status.h"

namespace kvferry::detail {

// `bytes` of device memory on `device`, freed (cudaFree) with the last reference.
Result<std::shared_ptr<std::uint8_t>> allocate_device_staging(std::uint64_t bytes, std::uint32_t device);

}  // namespace kvferry::detail
