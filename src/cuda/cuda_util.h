// Small CUDA runtime helpers (cuda_ipc backend, device stager): errors as Status, a scoped current
// device, and what an address is (device, allocation base).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry::detail::cuda {

// OK, or IoError("<what>: <CUDA error string>").
Status check(cudaError_t e, std::string_view what);

// Makes `device` current for one scope and restores the caller's device afterwards
// (kvferry never leaves a user thread on another device).
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  const Status& status() const { return status_; }

 private:
  int previous_ = -1;
  Status status_;
};

// The visible GPUs, or why none can be used ("no CUDA driver", "no GPU").
Result<int> device_count();

struct DeviceAllocation {
  std::uint64_t base = 0;  // start of the cudaMalloc allocation holding the address
  std::uint64_t size = 0;
};

// Checks that [address, address + length) is device memory of `device` (not host,
// managed or another GPU's memory) inside one allocation, and returns that allocation.
Result<DeviceAllocation> check_device_range(std::uint64_t address, std::uint64_t length, int device);

}  // namespace kvferry::detail::cuda
