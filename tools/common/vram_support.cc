#include "common/vram_support.h"

#ifdef KVFERRY_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace kvferry::cli {
namespace {

struct GpuCount {
  int count = 0;
  std::string error;  // why the runtime found none, when it says
};

GpuCount query_gpus() {
#ifdef KVFERRY_HAVE_CUDA
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error, so later calls are not blamed for it
    return {0, cudaGetErrorString(e)};
  }
  return {n, {}};
#else
  return {0, {}};
#endif
}

}  // namespace

int cuda_gpu_count() { return query_gpus().count; }

std::optional<std::string> vram_unusable(int device, const std::string& option) {
#ifndef KVFERRY_HAVE_CUDA
  (void)device;
  (void)option;
  return std::string("built without CUDA (configure with -DKVFERRY_ENABLE_CUDA=ON on a machine with nvcc)");
#else
  const GpuCount gpus = query_gpus();
  if (gpus.count == 0) {
    return "no CUDA GPU here" + (gpus.error.empty() ? std::string() : " (" + gpus.error + ")");
  }
  if (device < 0 || device >= gpus.count) {
    return option + " " + std::to_string(device) + ": this machine has " + std::to_string(gpus.count) +
           " CUDA GPU" + (gpus.count == 1 ? " (0)" : "s (0-" + std::to_string(gpus.count - 1) + ")");
  }
  return std::nullopt;
#endif
}

int next_gpu(int device) {
  const int count = cuda_gpu_count();
  return device + 1 < count ? device + 1 : device;
}

}  // namespace kvferry::cli
