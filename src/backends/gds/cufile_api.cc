#include "backends/gds/cufile_api.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace kvferry::detail {
namespace {

// CUfileOpError names, 5001 onwards, in cufile.h's order (it skips 5021). Checked on
// the GPU machine: 5027 comes with cufile.log's "file descriptor is not registered".
const char* const kOpErrorNames[] = {"DRIVER_NOT_INITIALIZED",
                                     "DRIVER_INVALID_PROPS",
                                     "DRIVER_UNSUPPORTED_LIMIT",
                                     "DRIVER_VERSION_MISMATCH",
                                     "DRIVER_VERSION_READ_ERROR",
                                     "DRIVER_CLOSING",
                                     "PLATFORM_NOT_SUPPORTED",
                                     "IO_NOT_SUPPORTED",
                                     "DEVICE_NOT_SUPPORTED",
                                     "NVFS_DRIVER_ERROR",
                                     "CUDA_DRIVER_ERROR",
                                     "CUDA_POINTER_INVALID",
                                     "CUDA_MEMORY_TYPE_INVALID",
                                     "CUDA_POINTER_RANGE_ERROR",
                                     "CUDA_CONTEXT_MISMATCH",
                                     "INVALID_MAPPING_SIZE",
                                     "INVALID_MAPPING_RANGE",
                                     "INVALID_FILE_TYPE",
                                     "INVALID_FILE_OPEN_FLAG",
                                     "DIO_NOT_SET",
                                     nullptr,
                                     "INVALID_VALUE",
                                     "MEMORY_ALREADY_REGISTERED",
                                     "MEMORY_NOT_REGISTERED",
                                     "PERMISSION_DENIED",
                                     "DRIVER_ALREADY_OPEN",
                                     "HANDLE_NOT_REGISTERED",
                                     "HANDLE_ALREADY_REGISTERED",
                                     "DEVICE_NOT_FOUND",
                                     "INTERNAL_ERROR",
                                     "GETNEWFD_FAILED",
                                     "NVFS_SETUP_ERROR",
                                     "IO_DISABLED",
                                     "BATCH_SUBMIT_FAILED",
                                     "GPU_MEMORY_PINNING_FAILED",
                                     "BATCH_FULL",
                                     "ASYNC_NOT_SUPPORTED"};

std::string op_error_text(int err) {
  std::string out = "cuFile error " + std::to_string(err);
  const int i = err - 5001;
  if (i >= 0 && i < static_cast<int>(std::size(kOpErrorNames)) && kOpErrorNames[i])
    out += std::string(" (") + kOpErrorNames[i] + ")";
  return out;
}

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

struct Loaded {
  CuFileApi api;
  Status status;
};

const Loaded& loaded() {
  static const Loaded* l = [] {
    auto* out = new Loaded();  // the driver stays open for the life of the process
    auto cuda = CudaDriver::get();
    if (!cuda.ok()) {
      out->status = cuda.status();
      return out;
    }
    CuFileApi& a = out->api;
    a.cuda = *cuda;
    const char* override_path = std::getenv("KVFERRY_CUFILE_LIBRARY");
    const char* name = override_path && *override_path ? override_path : "libcufile.so.0";
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      out->status = Unavailable(std::string("no cuFile: ") + (why ? why : name));
      return out;
    }
    const bool all = bind(lib, "cuFileDriverOpen", a.cuFileDriverOpen) &&
                     bind(lib, "cuFileHandleRegister", a.cuFileHandleRegister) &&
                     bind(lib, "cuFileHandleDeregister", a.cuFileHandleDeregister) &&
                     bind(lib, "cuFileBufRegister", a.cuFileBufRegister) &&
                     bind(lib, "cuFileBufDeregister", a.cuFileBufDeregister) &&
                     bind(lib, "cuFileRead", a.cuFileRead) && bind(lib, "cuFileWrite", a.cuFileWrite);
    if (!all) {
      out->status = Unavailable(std::string("no cuFile: ") + name + " lacks an entry point kvferry needs");
      return out;
    }
    bind(lib, "cuFileBatchIOSetUp", a.cuFileBatchIOSetUp);
    bind(lib, "cuFileBatchIOSubmit", a.cuFileBatchIOSubmit);
    bind(lib, "cuFileBatchIOGetStatus", a.cuFileBatchIOGetStatus);
    bind(lib, "cuFileBatchIODestroy", a.cuFileBatchIODestroy);
    bind(lib, "cuFileGetVersion", a.cuFileGetVersion);
    if (a.cuFileGetVersion) a.cuFileGetVersion(&a.version);
    // cuFileDriverOpen wants a context on this thread (it probes the GPUs).
    CudaDriver::Scope scope(*a.cuda, 0);
    if (!scope.status().ok()) {
      out->status = Unavailable(scope.status().message());
      return out;
    }
    if (Status s = CuFileApi::check(a.cuFileDriverOpen(), "cuFileDriverOpen"); !s.ok()) {
      out->status = Unavailable(s.message());
      return out;
    }
    return out;
  }();
  return *l;
}

}  // namespace

Result<const CuFileApi*> CuFileApi::get() {
  const Loaded& l = loaded();
  if (!l.status.ok()) return l.status;
  return &l.api;
}

Status CuFileApi::check(CUfileError_t e, const std::string& what) {
  if (e.err == 0) return Status::Ok();
  std::string msg = what + ": " + op_error_text(e.err);
  if (e.cu_err != 0) msg += ", CUDA error " + std::to_string(e.cu_err);
  return IoError(msg);
}

std::string CuFileApi::io_error_text(ssize_t result, int saved_errno) {
  if (result == -1) return std::strerror(saved_errno);
  if (result > -5000) return std::strerror(static_cast<int>(-result));
  return op_error_text(static_cast<int>(-result));
}

}  // namespace kvferry::detail
