#include "cuda/cuda_util.h"

#include <cuda.h>

#include <mutex>
#include <string>

namespace kvferry::detail::cuda {
namespace {

using GetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

// cuMemGetAddressRange through the runtime's entry-point query: no link-time dependency
// on libcuda (the runtime loads the driver itself).
GetAddressRange address_range_fn() {
  static GetAddressRange fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      return GetAddressRange{nullptr};
    return reinterpret_cast<GetAddressRange>(p);
  }();
  return fn;
}

}  // namespace

Status check(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess) return Status::Ok();
  return IoError(std::string(what) + ": " + cudaGetErrorString(e) + " (" + std::to_string(static_cast<int>(e)) + ")");
}

DeviceScope::DeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
  if (previous_ != device) status_ = check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

DeviceScope::~DeviceScope() {
  int now = -1;
  if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

Result<int> device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || e == cudaErrorInitializationError ||
      e == cudaErrorCompatNotSupportedOnDevice || e == cudaErrorSystemDriverMismatch) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return Unavailable(std::string("no usable CUDA driver/GPU here: ") + cudaGetErrorString(e));
  }
  KVF_RETURN_IF_ERROR(check(e, "cudaGetDeviceCount"));
  if (n <= 0) return Unavailable("no CUDA GPU is visible");
  return n;
}

Result<DeviceAllocation> check_device_range(std::uint64_t address, std::uint64_t length, int device) {
  if (length == 0) return InvalidArgument("vram region: empty");
  for (std::uint64_t probe : {address, address + length - 1}) {
    cudaPointerAttributes a{};
    cudaError_t e = cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(probe));
    if (e != cudaSuccess) {
      cudaGetLastError();
      return InvalidArgument("vram region [0x" + std::to_string(address) + ", +" + std::to_string(length) +
                             "): not CUDA memory (" + cudaGetErrorString(e) + ")");
    }
    if (a.type != cudaMemoryTypeDevice)
      return InvalidArgument(std::string("vram region: the address is ") +
                             (a.type == cudaMemoryTypeHost      ? "pinned host memory"
                              : a.type == cudaMemoryTypeManaged ? "managed (unified) memory"
                                                                : "host memory unknown to CUDA") +
                             ", not device memory (register it as dram)");
    if (a.device != device)
      return InvalidArgument("vram region: the memory is on GPU " + std::to_string(a.device) +
                             " but the descriptor says device " + std::to_string(device));
  }
  GetAddressRange fn = address_range_fn();
  if (!fn) return NotSupported("vram: cuMemGetAddressRange is not available from the driver");
  DeviceScope scope(device);
  KVF_RETURN_IF_ERROR(scope.status());
  // A driver call needs a current context: a thread that only used the driver API (or
  // nothing) has none until a runtime call makes the device's primary context current.
  (void)cudaFree(nullptr);
  CUdeviceptr base = 0;
  size_t size = 0;
  if (CUresult r = fn(&base, &size, static_cast<CUdeviceptr>(address)); r != CUDA_SUCCESS)
    return InvalidArgument("vram region: cuMemGetAddressRange failed (" + std::to_string(static_cast<int>(r)) + ")");
  if (address + length > base + size)
    return InvalidArgument("vram region [0x" + std::to_string(address) + ", +" + std::to_string(length) +
                           ") spans more than one CUDA allocation: register each allocation separately");
  return DeviceAllocation{static_cast<std::uint64_t>(base), static_cast<std::uint64_t>(size)};
}

}  // namespace kvferry::detail::cuda
