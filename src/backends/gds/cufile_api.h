// CuFileApi: cuFile (GPUDirect Storage) loaded at run time from libcufile.so.0, so the
// library has no build or link dependency on it. The types below mirror cufile.h (CUDA
// 12.x/13.x; the batch structures are unchanged since their introduction in 11.6).
// Where the nvidia-fs kernel driver is absent, cuFile runs in compatibility mode (POSIX
// I/O through its own bounce buffers) when its configuration allows it (the default).
//
// `get()` loads the library and opens the cuFile driver once per process (thread-safe);
// the driver stays open until the process exits. KVFERRY_CUFILE_LIBRARY overrides the
// library path.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "core/cuda_driver.h"
#include "kvferry/status.h"

namespace kvferry::detail {

struct CUfileError_t {
  int err;  // CUfileOpError: 0 success, 5000+ cuFile errors
  CUresult cu_err;
};
using CUfileHandle_t = void*;
using CUfileBatchHandle_t = void*;

struct CUfileDescr_t {
  int type;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};

inline constexpr int kCuFileHandleTypeOpaqueFd = 1;
inline constexpr int kCuFileRead = 0;   // CUFILE_READ
inline constexpr int kCuFileWrite = 1;  // CUFILE_WRITE
inline constexpr int kCuFileBatch = 1;  // CUFILE_BATCH
inline constexpr int kCuFileStatusWaiting = 0x01, kCuFileStatusPending = 0x02, kCuFileStatusInvalid = 0x04,
                     kCuFileStatusCanceled = 0x08, kCuFileStatusComplete = 0x10, kCuFileStatusTimeout = 0x20,
                     kCuFileStatusFailed = 0x40;

struct CUfileIOParams_t {
  int mode;  // CUFILE_BATCH
  union {
    struct {
      void* devPtr_base;
      off_t file_offset;
      off_t devPtr_offset;
      std::size_t size;
    } batch;
  } u;
  CUfileHandle_t fh;
  int opcode;
  void* cookie;
};

struct CUfileIOEvents_t {
  void* cookie;
  int status;
  std::size_t ret;  // bytes, or a negative error
};

struct CuFileApi {
  CUfileError_t (*cuFileDriverOpen)() = nullptr;
  CUfileError_t (*cuFileHandleRegister)(CUfileHandle_t*, CUfileDescr_t*) = nullptr;
  void (*cuFileHandleDeregister)(CUfileHandle_t) = nullptr;
  CUfileError_t (*cuFileBufRegister)(const void*, std::size_t, int) = nullptr;
  CUfileError_t (*cuFileBufDeregister)(const void*) = nullptr;
  ssize_t (*cuFileRead)(CUfileHandle_t, void*, std::size_t, off_t, off_t) = nullptr;
  ssize_t (*cuFileWrite)(CUfileHandle_t, const void*, std::size_t, off_t, off_t) = nullptr;
  // The batch API (optional: null where the library predates it).
  CUfileError_t (*cuFileBatchIOSetUp)(CUfileBatchHandle_t*, unsigned) = nullptr;
  CUfileError_t (*cuFileBatchIOSubmit)(CUfileBatchHandle_t, unsigned, CUfileIOParams_t*, unsigned) = nullptr;
  CUfileError_t (*cuFileBatchIOGetStatus)(CUfileBatchHandle_t, unsigned, unsigned*, CUfileIOEvents_t*,
                                          struct timespec*) = nullptr;
  void (*cuFileBatchIODestroy)(CUfileBatchHandle_t) = nullptr;
  CUfileError_t (*cuFileGetVersion)(int*) = nullptr;

  const CudaDriver* cuda = nullptr;
  int version = 0;  // cuFileGetVersion, 0 when unknown

  // Loaded with the driver open, or why not (no GPU, no libcufile, cuFileDriverOpen).
  static Result<const CuFileApi*> get();
  bool has_batch() const {
    return cuFileBatchIOSetUp && cuFileBatchIOSubmit && cuFileBatchIOGetStatus && cuFileBatchIODestroy;
  }
  // OK or IoError("<what>: cuFile error N (NAME)[, CUDA error M]").
  static Status check(CUfileError_t e, const std::string& what);
  // Text of a negative cuFileRead/Write result: -1 with `saved_errno`, -errno, or
  // -CUfileOpError.
  static std::string io_error_text(ssize_t result, int saved_errno);
};

}  // namespace kvferry::detail
