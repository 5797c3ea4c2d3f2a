// TestMemory: test bytes of one memory kind, so that a suite is written once and run over
// memory kinds (tests/conformance_test.cc). Tests fill it, name it in descriptors and read
// it back as a host vector, never through a raw pointer: the same assertion then holds
// for host memory (`dram`) and for one GPU's memory (`vram`).
//
// Where vram cannot exist (a build without CUDA, fewer GPUs than asked for) make() says
// why and the test skips. A CUDA call that fails on a machine that has the GPU is a test
// failure, not a skip. Not thread-safe: fill and read it from the test's thread.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#ifdef KVFERRY_HAVE_CUDA
#include "gpu_test_util.h"
#endif

namespace kvferry::testing {

// GPUs this process sees; 0 in a build without CUDA.
inline int visible_gpus() {
#ifdef KVFERRY_HAVE_CUDA
  return gpu_count();
#else
  return 0;
#endif
}

class TestMemory {
 public:
  // `size` zeroed bytes of `kind` (vram: on GPU `device`). nullptr and the reason in *why
  // where this machine cannot provide them; a failed allocation is also a test failure.
  static std::unique_ptr<TestMemory> make(MemoryKind kind, int device, std::size_t size, std::string* why) {
    if (kind == MemoryKind::kDram) return std::unique_ptr<TestMemory>(new TestMemory(size));
    if (kind != MemoryKind::kVram) {
      *why = "TestMemory holds dram or vram, not " + std::string(to_string(kind));
      return nullptr;
    }
#ifdef KVFERRY_HAVE_CUDA
    if (const int n = gpu_count(); n <= device) {
      *why = "vram on GPU " + std::to_string(device) + " needs " + std::to_string(device + 1) +
             " CUDA GPU(s); this machine has " + std::to_string(n);
      return nullptr;
    }
    std::unique_ptr<TestMemory> m(new TestMemory(std::make_unique<DeviceBuffer>(device, size)));
    if (!m->gpu_->ok()) {
      *why = "cudaMalloc of " + std::to_string(size) + " bytes on GPU " + std::to_string(device) + " failed";
      ADD_FAILURE() << *why;
      return nullptr;
    }
    m->fill(0);  // as a host Buffer starts
    return m;
#else
    (void)device;
    (void)size;
    *why = "vram needs a build with CUDA (KVFERRY_ENABLE_CUDA)";
    return nullptr;
#endif
  }

  MemoryKind kind() const { return kind_; }
  std::size_t size() const { return size_; }
  // The descriptor's device: the GPU ordinal for vram, 0 for dram.
  std::uint32_t device() const { return device_; }
  std::uint64_t addr(std::uint64_t offset = 0) const { return base_ + offset; }
  Descriptor at(std::uint64_t offset, std::uint64_t length) const {
    return Descriptor{addr(offset), length, device_};
  }
  // Lists of this memory's kind: empty (to add blocks to), one range, all of it.
  DescriptorList list() const { return DescriptorList(kind_); }
  DescriptorList range(std::uint64_t offset, std::uint64_t length) const {
    return DescriptorList(kind_, {at(offset, length)});
  }
  DescriptorList whole() const { return range(0, size_); }

  // The same bytes as Buffer::randomize(seed), whatever the kind.
  void randomize(std::uint64_t seed) {
    if (host_) return host_->randomize(seed);
    Buffer staged(size_);
    staged.randomize(seed);
    upload(staged.data());
  }
  void fill(std::uint8_t byte);
  std::vector<std::uint8_t> bytes() const { return bytes_at(0, size_); }
  std::vector<std::uint8_t> bytes_at(std::uint64_t offset, std::uint64_t length) const;

 private:
  explicit TestMemory(std::size_t size)
      : kind_(MemoryKind::kDram), size_(size), host_(std::make_unique<Buffer>(size)), base_(host_->addr()) {}
#ifdef KVFERRY_HAVE_CUDA
  explicit TestMemory(std::unique_ptr<DeviceBuffer> gpu)
      : kind_(MemoryKind::kVram),
        size_(gpu->size()),
        device_(static_cast<std::uint32_t>(gpu->device())),
        base_(gpu->address()),
        gpu_(std::move(gpu)) {}
  // The library copies on its own streams (and through its own CUDA runtime): every write
  // of ours is complete on the device before this returns, so no transfer sees it half done.
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) ADD_FAILURE() << what << ": " << cudaGetErrorString(e);
  }
  void upload(const std::uint8_t* host) {
    check(cudaSetDevice(gpu_->device()), "cudaSetDevice");
    check(cudaMemcpy(gpu_->data(), host, size_, cudaMemcpyHostToDevice), "cudaMemcpy to the GPU");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
#else
  void upload(const std::uint8_t*) {}  // never called: without CUDA there is no vram TestMemory
#endif

  MemoryKind kind_;
  std::size_t size_;
  std::uint32_t device_ = 0;
  std::unique_ptr<Buffer> host_;  // dram
  std::uint64_t base_ = 0;
#ifdef KVFERRY_HAVE_CUDA
  std::unique_ptr<DeviceBuffer> gpu_;  // vram
#endif
};

inline void TestMemory::fill(std::uint8_t byte) {
  if (host_) {
    std::memset(host_->data(), byte, size_);
    return;
  }
#ifdef KVFERRY_HAVE_CUDA
  check(cudaSetDevice(gpu_->device()), "cudaSetDevice");
  check(cudaMemset(gpu_->data(), byte, size_), "cudaMemset");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#endif
}

inline std::vector<std::uint8_t> TestMemory::bytes_at(std::uint64_t offset, std::uint64_t length) const {
  if (offset > size_ || length > size_ - offset) {
    ADD_FAILURE() << "bytes_at(" << offset << ", " << length << ") is outside " << size_ << " bytes";
    return {};
  }
  if (host_) return std::vector<std::uint8_t>(host_->data() + offset, host_->data() + offset + length);
  std::vector<std::uint8_t> out(length);
#ifdef KVFERRY_HAVE_CUDA
  check(cudaMemcpy(out.data(), gpu_->data() + offset, length, cudaMemcpyDeviceToHost),
        "cudaMemcpy from the GPU");
#endif
  return out;
}

// Equal byte vectors; else where they first differ (gtest would print megabytes of both).
inline ::testing::AssertionResult SameBytes(const std::vector<std::uint8_t>& a,
                                            const std::vector<std::uint8_t>& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return ::testing::AssertionFailure()
             << "first difference at byte " << i << ": " << int{a[i]} << " vs " << int{b[i]};
  return ::testing::AssertionSuccess();
}

}  // namespace kvferry::testing
