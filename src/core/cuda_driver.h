// CudaDriver: the few CUDA driver API calls kvferry needs, loaded at run time from
// libcuda.so.1 (dlopen), so the library builds and runs without CUDA and uses a GPU
// where the driver is installed. Types are declared here (ABI of cuda.h, stable since
// CUDA 4); the _v2 entry points are the ones cuda.h maps its names to.
//
// Threading: `get()` loads once per process (thread-safe) and the table is immutable
// afterwards. CUDA calls need a current context: `make_current(device)` sets the
// device's primary context (the one the CUDA runtime uses) on the calling thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry::detail {

using CUresult = int;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUstream = struct CUstream_st*;
using CUdeviceptr = unsigned long long;

inline constexpr int kCuPointerAttributeMemoryType = 2;     // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
inline constexpr int kCuPointerAttributeIsManaged = 8;      // CU_POINTER_ATTRIBUTE_IS_MANAGED
inline constexpr int kCuPointerAttributeDeviceOrdinal = 9;  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
inline constexpr unsigned kCuMemoryTypeDevice = 2;          // CU_MEMORYTYPE_DEVICE
inline constexpr unsigned kCuMemHostAllocPortable = 1;      // CU_MEMHOSTALLOC_PORTABLE
inline constexpr unsigned kCuStreamNonBlocking = 1;         // CU_STREAM_NON_BLOCKING

struct CudaDriver {
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*cuPointerGetAttribute)(void*, int, CUdeviceptr) = nullptr;
  CUresult (*cuMemAlloc)(CUdeviceptr*, std::size_t) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr) = nullptr;
  CUresult (*cuMemHostAlloc)(void**, std::size_t, unsigned) = nullptr;
  CUresult (*cuMemFreeHost)(void*) = nullptr;
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void*, std::size_t) = nullptr;
  CUresult (*cuMemcpyDtoH)(void*, CUdeviceptr, std::size_t) = nullptr;
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void*, std::size_t, CUstream) = nullptr;
  CUresult (*cuMemcpyDtoHAsync)(void*, CUdeviceptr, std::size_t, CUstream) = nullptr;
  CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, std::size_t) = nullptr;
  CUresult (*cuStreamCreate)(CUstream*, unsigned) = nullptr;
  CUresult (*cuStreamSynchronize)(CUstream) = nullptr;
  CUresult (*cuStreamDestroy)(CUstream) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;

  int device_count = 0;
  int version = 0;  // e.g. 13000

  // The loaded driver with at least one device, or why not ("libcuda.so.1: cannot open
  // shared object file", "cuInit: no CUDA-capable device is detected", ...).
  static Result<const CudaDriver*> get();

  // OK, or IoError("<what>: <CUDA error string> (<code>)").
  Status check(CUresult r, std::string_view what) const;
  // Makes `device`'s primary context current on this thread (retained once per process).
  Status make_current(int device) const;
  // Sets `device`'s primary context for one scope and restores the caller's afterwards
  // (kvferry never leaves a user thread with another current context).
  class Scope {
   public:
    Scope(const CudaDriver& driver, int device);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    const Status& status() const { return status_; }

   private:
    const CudaDriver& driver_;
    CUcontext previous_ = nullptr;
    Status status_;
  };
  // Checks that [address, address + length) is device memory of `device` (not managed).
  Status check_device_memory(std::uint64_t address, std::uint64_t length, int device) const;
};

}  // namespace kvferry::detail
