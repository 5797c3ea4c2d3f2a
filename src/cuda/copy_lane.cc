#include "cuda/copy_lane.h"

#include <cstring>

#include "cuda/cuda_util.h"

namespace kvferry::detail::cuda {

Result<std::unique_ptr<CopyLane>> CopyLane::create(int device, CopyMethod method, std::uint32_t blocks) {
  std::unique_ptr<CopyLane> lane(new CopyLane(device, method, blocks));
  DeviceScope scope(device);
  KVF_RETURN_IF_ERROR(scope.status());
  KVF_RETURN_IF_ERROR(check(cudaStreamCreateWithFlags(&lane->stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
  return lane;
}

CopyLane::~CopyLane() {
  DeviceScope scope(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
  for (auto& [p, n] : free_pinned_) cudaFreeHost(p);
  if (table_) cudaFree(table_);
  if (stream_) cudaStreamDestroy(stream_);
}

Status CopyLane::submit(const std::vector<CopyPair>& pairs, Submission* out) {
  DeviceScope scope(device_);
  KVF_RETURN_IF_ERROR(scope.status());
  std::lock_guard lock(mu_);
  if (free_events_.empty()) {
    cudaEvent_t e = nullptr;
    KVF_RETURN_IF_ERROR(check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate"));
    free_events_.push_back(e);
  }
  Submission s;
  s.event = free_events_.back();
  free_events_.pop_back();
  Status st = method_ == CopyMethod::kKernel ? submit_kernel(pairs, &s) : submit_batch(pairs);
  if (st.ok()) st = check(cudaEventRecord(s.event, stream_), "cudaEventRecord");
  if (!st.ok()) {
    // Whatever was enqueued must end before its table is reused.
    cudaStreamSynchronize(stream_);
    free_events_.push_back(s.event);
    if (s.pinned) free_pinned_.emplace_back(s.pinned, s.pinned_bytes);
    return st;
  }
  *out = s;
  return Status::Ok();
}

void CopyLane::release(Submission& s) {
  std::lock_guard lock(mu_);
  if (s.event) free_events_.push_back(s.event);
  if (s.pinned) free_pinned_.emplace_back(s.pinned, s.pinned_bytes);
  s = Submission{};
}

Status CopyLane::submit_kernel(const std::vector<CopyPair>& pairs, Submission* out) {
  std::vector<cuda::CopyItem> items;
  items.reserve(pairs.size());
  for (const CopyPair& p : pairs) cuda::append_items(&items, p.src, p.dst, p.length);
  const std::size_t bytes = items.size() * sizeof(cuda::CopyItem);
  // A pinned host table, so that the upload is truly asynchronous; reused once the
  // submission that used it completed.
  for (auto it = free_pinned_.begin(); it != free_pinned_.end(); ++it) {
    if (it->second >= bytes) {
      out->pinned = it->first;
      out->pinned_bytes = it->second;
      free_pinned_.erase(it);
      break;
    }
  }
  if (!out->pinned) {
    std::size_t cap = 64u << 10;
    while (cap < bytes) cap *= 2;
    KVF_RETURN_IF_ERROR(check(cudaMallocHost(&out->pinned, cap), "cudaMallocHost (copy table)"));
    out->pinned_bytes = cap;
  }
  std::memcpy(out->pinned, items.data(), bytes);
  // One device table per lane: stream order makes the next upload wait for the kernel
  // that reads the current one. Growing it (rare) waits for the stream first.
  if (table_bytes_ < bytes) {
    KVF_RETURN_IF_ERROR(check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    if (table_) cudaFree(table_);
    table_ = nullptr;
    table_bytes_ = 0;
    KVF_RETURN_IF_ERROR(check(cudaMalloc(&table_, out->pinned_bytes), "cudaMalloc (copy table)"));
    table_bytes_ = out->pinned_bytes;
  }
  KVF_RETURN_IF_ERROR(
      check(cudaMemcpyAsync(table_, out->pinned, bytes, cudaMemcpyHostToDevice, stream_), "upload copy table"));
  return check(static_cast<cudaError_t>(cuda::launch_copy_items(static_cast<const cuda::CopyItem*>(table_),
                                                                static_cast<std::uint32_t>(items.size()), stream_,
                                                                blocks_)),
               "copy kernel launch");
}

Status CopyLane::submit_batch(const std::vector<CopyPair>& pairs) {
  std::vector<void*> dsts(pairs.size());
  std::vector<const void*> srcs(pairs.size());
  std::vector<std::size_t> sizes(pairs.size());
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    dsts[i] = reinterpret_cast<void*>(pairs[i].dst);
    srcs[i] = reinterpret_cast<const void*>(pairs[i].src);
    sizes[i] = pairs[i].length;
  }
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  std::size_t attr_index = 0;
  return check(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), pairs.size(), &attr, &attr_index, 1,
                                    stream_),
               "cudaMemcpyBatchAsync");
}

}  // namespace kvferry::detail::cuda
