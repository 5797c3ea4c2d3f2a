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
#include <span>
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
  std::size_t items = 0;   // in `pinned`
  bool engine_copies = false;  // some pairs went to the copy engines (not in the table)
};

// Pairs at least this long go to the copy engines (cudaMemcpyAsync on the lane's stream,
// after the kernel): on H200 NVLink an engine moves one long contiguous copy at the
// link's full rate, while SM copies stop at ~0.93-0.95 of it; below a few MiB the
// engines lose (64 KiB copies: ~0.27).
inline constexpr std::uint64_t kEngineMinBytes = 16u << 20;

// A kernel submission's item table kept for posting the same copies again: owned
// pinned memory (freed on destruction, which the owner must not do while a submission
// that uploads from it is pending).
class KeptTable {
 public:
  KeptTable() = default;
  KeptTable(KeptTable&& o) noexcept;
  KeptTable& operator=(KeptTable&& o) noexcept;
  ~KeptTable();
  bool empty() const { return items_ == 0; }
  std::size_t items() const { return items_; }

 private:
  friend class CopyLane;
  void* pinned_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t items_ = 0;
};

class CopyLane {
 public:
  static Result<std::unique_ptr<CopyLane>> create(int device, CopyMethod method, std::uint32_t blocks);
  ~CopyLane();
  int device() const { return device_; }

  // Builds one submission pair by pair, holding the lane meanwhile. With the kernel
  // method, pairs of kEngineMinBytes or more are copied by the engines after the
  // kernel, and the GPU starts early: once an eighth of the announced items (at least 1,024)
  // are in the table, that slice is uploaded and launched, and the host translates the
  // rest while it runs (a 40,000-block table costs ~0.3 ms to build; the copy ~7 ms).
  // Destroying a builder that was not finished waits for what it launched.
  class Builder {
   public:
    Builder(Builder&&) noexcept;
    Builder& operator=(Builder&&) = delete;
    ~Builder();
    Status add(std::uint64_t src, std::uint64_t dst, std::uint64_t length);
    // Enqueues the rest and the completion event; *out goes to release() later.
    Status finish(Submission* out);

   private:
    friend class CopyLane;
    Builder(CopyLane* lane, std::unique_lock<std::mutex> lock) : lane_(lane), lock_(std::move(lock)) {}
    Status launch_pending();
    CopyLane* lane_;
    std::unique_lock<std::mutex> lock_;
    Submission sub_;
    std::size_t capacity_ = 0;  // items the pinned table holds
    std::size_t count_ = 0;     // items in it
    std::size_t launched_ = 0;  // items already launched
    std::size_t first_launch_ = 0;
    std::vector<CopyPair> pairs_;  // batch method; kernel method: the engines' pairs
    bool done_ = false;
  };
  // `max_items` bounds the items the builder will get: pairs, plus one per
  // kMaxItemBytes of any pair longer than that.
  Result<Builder> start(std::size_t max_items);

  // Kernel method: one launch of the strided kernel (launch_copy_strided) over lanes x
  // chunks. Uploads the lanes' bases and the chunks, O(lanes + chunks) bytes, instead of
  // one item per (lane, chunk): no per-item work on the host. Both lane arrays have the
  // same size.
  // `engine_pairs` (whole copies of kEngineMinBytes or more) follow on the engines.
  Status submit_strided(std::span<const std::uint64_t> src_lanes, std::span<const std::uint64_t> dst_lanes,
                        std::span<const CopyItem> chunks, std::span<const CopyPair> engine_pairs, Submission* out);
  // The whole list at once.
  Status submit(const std::vector<CopyPair>& pairs, Submission* out);
  void release(Submission& s);
  // Kernel method: release() that keeps the submission's table instead of recycling it.
  KeptTable release_keeping_table(Submission& s);
  // Kernel method: the copies of a kept table again (one upload, one launch, no host
  // translation). The table must stay alive until this submission completes.
  Status submit_kept(const KeptTable& table, Submission* out);
  CopyMethod method() const { return method_; }

 private:
  CopyLane(int device, CopyMethod method, std::uint32_t blocks) : device_(device), method_(method), blocks_(blocks) {}
  Status reserve_table(std::size_t items, Submission* s);  // mu_ held
  Result<cudaEvent_t> take_event();                        // mu_ held
  Status ensure_device_table(std::size_t bytes);           // mu_ held
  void abandon(Submission& s);                              // mu_ held: waits, recycles
  Status engine_copy(std::span<const CopyPair> pairs);      // mu_ held: enqueued on stream_

  const int device_;
  const CopyMethod method_;
  const std::uint32_t blocks_;
  cudaStream_t stream_ = nullptr;
  void* table_ = nullptr;  // the kernel's item table on the device (guarded by mu_)
  std::size_t table_bytes_ = 0;
  std::mutex mu_;  // the stream's submission order, the table, the free lists
  std::vector<cudaEvent_t> free_events_;
  std::vector<std::pair<void*, std::size_t>> free_pinned_;
};

}  // namespace kvferry::detail::cuda
