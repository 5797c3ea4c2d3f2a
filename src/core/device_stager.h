// DeviceStager: copies between GPU memory and pinned host memory, for every path that
// reaches vram through host memory: the core's staged connections (local vram over a
// host backend) and host backends that serve vram regions to their peers (tcp).
//
// One call moves a whole batch of scattered (source, destination, length) items with a
// single cudaMemcpyBatchAsync or one launch of the copy kernel, so thousands of KV
// blocks cost one call, not one copy each. Implemented with the CUDA runtime in
// src/cuda/device_stager.cc; a build without CUDA links core/without_cuda/, whose
// instance() says why.
//
// Threading: every method may be called from any thread. Completion callbacks run on
// the stager's completion thread, one at a time: they must be short and must not wait
// for other stager work.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

// One contiguous copy. Exactly one side is GPU memory of the device the batch names; the
// other is pinned host memory (from allocate_pinned, or host memory registered with
// CUDA) or memory of the same GPU.
struct StageItem {
  std::uint64_t src = 0;
  std::uint64_t dst = 0;
  std::uint64_t length = 0;
};

// Page-locked host memory, reachable by every GPU (portable, mapped). Freed when the last
// copy of `memory` goes away.
struct PinnedBuffer {
  std::shared_ptr<std::uint8_t> memory;
  std::size_t size = 0;
  std::uint8_t* data() const { return memory.get(); }
};

enum class StageMethod {
  kBatch,   // cudaMemcpyBatchAsync: the copy engines, one call per batch (the default)
  kKernel,  // the copy kernel over an item table: SMs move the bytes
};

class DeviceStager {
 public:
  virtual ~DeviceStager() = default;

  // The process's stager (created on first use), or why GPU memory cannot be staged here
  // (built without CUDA, no driver, no GPU).
  static Result<std::shared_ptr<DeviceStager>> instance();

  virtual Result<PinnedBuffer> allocate_pinned(std::size_t bytes) = 0;

  // OK if [address, address + length) is device memory of `device` inside one
  // allocation; else InvalidArgument naming what it is ("vram region: ...").
  virtual Status check_vram(std::uint64_t address, std::uint64_t length, int device) = 0;

  // Starts copying `items` on `device` and calls `done` exactly once with the outcome,
  // from the completion thread, after every byte has landed (or the copy failed). An
  // error return means nothing was started and `done` will not be called.
  virtual Status copy_async(int device, StageMethod method, const std::vector<StageItem>& items,
                            std::function<void(Status)> done) = 0;

  // The same, waiting up to `timeout` for the copy to complete. On a timeout the copy
  // may still run: the caller must keep its memory until the GPU is idle.
  virtual Status copy(int device, StageMethod method, const std::vector<StageItem>& items,
                      std::chrono::milliseconds timeout) = 0;
};

// "batch" or "kernel" (the backend setting's spelling).
Result<StageMethod> parse_stage_method(const std::string& text);

}  // namespace kvferry::detail
