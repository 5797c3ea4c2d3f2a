// CopyLane: where copies on one GPU run: a non-blocking stream, and per submission
// either one cudaMemcpyBatchAsync of every pair or the copy kernel (copy_kernels.h) over
// a table of items uploaded from pinned memory. Used by the cuda_ipc initiator (peer
// copies through IPC mappings) and by the device stager (GPU <-> pinned host memory).
// A submission ends with an event; the caller polls it and then calls release().
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/copy_kernels.h"
#include "kvferry/status.h"

namespace kvferry::detail::cuda {

enum class CopyMethod { kKernel, kBatch };

// One descriptor pair, both addresses reachable from the lane's device.
struct CopyPair {
  std::uint64_t src;
  std::uint64_t dst;
  std::uint64_t length;
};

// What one submission holds until its event completes.
struct Submission {
  cudaEvent_t event = nullptr;
  void* pinned = nullptr;  // the item table's host copy (kernel method)
  std::size_t pinned_bytes = 0;
};

class CopyLane {
 public:
  static Result<std::unique_ptr<CopyLane>> create(int device, CopyMethod method, std::uint32_t blocks);
  ~CopyLane();
  int device() const { return device_; }

  // Enqueues the copies; on success *out must later be passed to release() (after the
  // event completed, or after waiting for it).
  Status submit(const std::vector<CopyPair>& pairs, Submission* out);
  void release(Submission& s);

 private:
  CopyLane(int device, CopyMethod method, std::uint32_t blocks) : device_(device), method_(method), blocks_(blocks) {}
  Status submit_kernel(const std::vector<CopyPair>& pairs, Submission* out);
  Status submit_batch(const std::vector<CopyPair>& pairs);

  const int device_;
  const CopyMethod method_;
  const std::uint32_t blocks_;
  cudaStream_t stream_ = nullptr;
  void* table_ = nullptr;  // the kernel's item table on the device (guarded by mu_)
  std::size_t table_bytes_ = 0;
  std::mutex mu_;  // the stream's submission order, the free lists
  std::vector<cudaEvent_t> free_events_;
  std::vector<std::pair<void*, std::size_t>> free_pinned_;
};

}  // namespace kvferry::detail::cuda
