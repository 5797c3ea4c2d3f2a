// Helpers of the GPU suites (tests/gpu_*_test.cc): they skip where no GPU is present.
#pragma once

#ifdef KVFERRY_HAVE_CUDA
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::testing {

inline int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

#define KVF_SKIP_WITHOUT_GPU(min)                                                      \
  do {                                                                                 \
    if (::kvferry::testing::gpu_count() < (min))                                       \
      GTEST_SKIP() << "needs " << (min) << " CUDA GPU(s); this machine has "           \
                   << ::kvferry::testing::gpu_count();                                \
  } while (0)

// cudaMalloc'd bytes on one GPU, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer(int device, std::size_t size) : device_(device), size_(size) {
    cudaSetDevice(device);
    if (cudaMalloc(&ptr_, size) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool ok() const { return ptr_ != nullptr; }
  std::uint8_t* data() const { return static_cast<std::uint8_t*>(ptr_); }
  std::uint64_t address() const { return reinterpret_cast<std::uint64_t>(ptr_); }
  std::size_t size() const { return size_; }
  int device() const { return device_; }
  DescriptorList region() const {
    return DescriptorList(MemoryKind::kVram, {Descriptor{address(), size_, static_cast<std::uint32_t>(device_)}});
  }
  Descriptor at(std::uint64_t offset, std::uint64_t length) const {
    return Descriptor{address() + offset, length, static_cast<std::uint32_t>(device_)};
  }
  bool upload(const std::uint8_t* host) const {
    return cudaMemcpy(ptr_, host, size_, cudaMemcpyHostToDevice) == cudaSuccess;
  }
  std::vector<std::uint8_t> download() const {
    std::vector<std::uint8_t> v(size_);
    if (cudaMemcpy(v.data(), ptr_, size_, cudaMemcpyDeviceToHost) != cudaSuccess) v.clear();
    return v;
  }

 private:
  int device_;
  std::size_t size_;
  void* ptr_ = nullptr;
};

// An agent with only cuda_ipc, its copy method set ("kernel" or "batch").
inline std::unique_ptr<Agent> make_cuda_ipc_agent(const std::string& name, const std::string& copy,
                                                  std::chrono::milliseconds peer_timeout = std::chrono::seconds(5)) {
  AgentOptions o;
  o.name = name;
  o.backends = {"cuda_ipc"};
  o.backend_params = {{"cuda_ipc.copy", copy}};
  o.peer_timeout = peer_timeout;
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
