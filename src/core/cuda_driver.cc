#include "core/cuda_driver.h"

#include <dlfcn.h>

#include <mutex>
#include <vector>

namespace kvferry::detail {
namespace {

struct Loaded {
  CudaDriver driver;
  Status status;
  std::mutex contexts_mu;
  std::vector<CUcontext> contexts;  // primary context per device, retained for good
};

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

Loaded& loaded() {
  static Loaded* l = [] {
    auto* out = new Loaded();  // lives as long as the process (the driver cannot be unloaded safely)
    CudaDriver& d = out->driver;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      out->status = Unavailable(std::string("no CUDA driver: ") + (why ? why : "libcuda.so.1 not found"));
      return out;
    }
    const bool all =
        bind(lib, "cuInit", d.cuInit) && bind(lib, "cuDriverGetVersion", d.cuDriverGetVersion) &&
        bind(lib, "cuDeviceGetCount", d.cuDeviceGetCount) && bind(lib, "cuDeviceGet", d.cuDeviceGet) &&
        bind(lib, "cuDeviceGetName", d.cuDeviceGetName) &&
        bind(lib, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain) &&
        bind(lib, "cuCtxSetCurrent", d.cuCtxSetCurrent) && bind(lib, "cuCtxGetCurrent", d.cuCtxGetCurrent) &&
        bind(lib, "cuPointerGetAttribute", d.cuPointerGetAttribute) &&
        bind(lib, "cuMemAlloc_v2", d.cuMemAlloc) && bind(lib, "cuMemFree_v2", d.cuMemFree) &&
        bind(lib, "cuMemHostAlloc", d.cuMemHostAlloc) && bind(lib, "cuMemFreeHost", d.cuMemFreeHost) &&
        bind(lib, "cuMemcpyHtoD_v2", d.cuMemcpyHtoD) && bind(lib, "cuMemcpyDtoH_v2", d.cuMemcpyDtoH) &&
        bind(lib, "cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync) &&
        bind(lib, "cuMemcpyDtoHAsync_v2", d.cuMemcpyDtoHAsync) && bind(lib, "cuMemsetD8_v2", d.cuMemsetD8) &&
        bind(lib, "cuStreamCreate", d.cuStreamCreate) &&
        bind(lib, "cuStreamSynchronize", d.cuStreamSynchronize) &&
        bind(lib, "cuStreamDestroy_v2", d.cuStreamDestroy) &&
        bind(lib, "cuGetErrorString", d.cuGetErrorString);
    if (!all) {
      out->status = Unavailable("the CUDA driver (libcuda.so.1) lacks an entry point kvferry needs");
      return out;
    }
    if (Status s = d.check(d.cuInit(0), "cuInit"); !s.ok()) {
      out->status = Unavailable(s.message());
      return out;
    }
    d.cuDriverGetVersion(&d.version);
    if (d.cuDeviceGetCount(&d.device_count) != 0 || d.device_count <= 0) {
      out->status = Unavailable("no CUDA device");
      return out;
    }
    out->contexts.assign(static_cast<std::size_t>(d.device_count), nullptr);
    return out;
  }();
  return *l;
}

}  // namespace

Result<const CudaDriver*> CudaDriver::get() {
  Loaded& l = loaded();
  if (!l.status.ok()) return l.status;
  return &l.driver;
}

Status CudaDriver::check(CUresult r, std::string_view what) const {
  if (r == 0) return Status::Ok();
  const char* text = nullptr;
  if (cuGetErrorString) cuGetErrorString(r, &text);
  return IoError(std::string(what) + ": " + (text ? text : "CUDA error") + " (" + std::to_string(r) + ")");
}

Status CudaDriver::make_current(int device) const {
  if (device < 0 || device >= device_count)
    return InvalidArgument("CUDA device " + std::to_string(device) + " does not exist (" +
                           std::to_string(device_count) + " here)");
  Loaded& l = loaded();
  CUcontext ctx = nullptr;
  {
    std::lock_guard lock(l.contexts_mu);
    CUcontext& slot = l.contexts[static_cast<std::size_t>(device)];
    if (!slot) {
      CUdevice dev = 0;
      KVF_RETURN_IF_ERROR(check(cuDeviceGet(&dev, device), "cuDeviceGet"));
      KVF_RETURN_IF_ERROR(check(cuDevicePrimaryCtxRetain(&slot, dev), "cuDevicePrimaryCtxRetain"));
    }
    ctx = slot;
  }
  return check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
}

CudaDriver::Scope::Scope(const CudaDriver& driver, int device) : driver_(driver) {
  driver_.cuCtxGetCurrent(&previous_);
  status_ = driver_.make_current(device);
}

CudaDriver::Scope::~Scope() { driver_.cuCtxSetCurrent(previous_); }

Status CudaDriver::check_device_memory(std::uint64_t address, std::uint64_t length, int device) const {
  for (std::uint64_t probe : {address, address + length - 1}) {
    unsigned type = 0;
    int ordinal = -1;
    unsigned managed = 0;
    KVF_RETURN_IF_ERROR(check(cuPointerGetAttribute(&type, kCuPointerAttributeMemoryType, probe),
                              "cuPointerGetAttribute(memory type)")
                            .with_context("vram region is not CUDA memory"));
    if (type != kCuMemoryTypeDevice) return InvalidArgument("vram region: the address is not device memory");
    KVF_RETURN_IF_ERROR(check(cuPointerGetAttribute(&managed, kCuPointerAttributeIsManaged, probe),
                              "cuPointerGetAttribute(is managed)"));
    if (managed) return InvalidArgument("vram region: managed (unified) memory is not supported");
    KVF_RETURN_IF_ERROR(check(cuPointerGetAttribute(&ordinal, kCuPointerAttributeDeviceOrdinal, probe),
                              "cuPointerGetAttribute(device ordinal)"));
    if (ordinal != device)
      return InvalidArgument("vram region: the memory is on GPU " + std::to_string(ordinal) +
                             " but the descriptor says device " + std::to_string(device));
  }
  return Status::Ok();
}

}  // namespace kvferry::detail
