#include "cuda/copy_lane.h"

#include <algorithm>
#include <cstring>

#include "cuda/cuda_util.h"

namespace kvferry::detail::cuda {

namespace {

constexpr std::size_t kMinFirstLaunch = 1024;

Status batch_copy(const std::vector<CopyPair>& pairs, cudaStream_t stream) {
  if (pairs.empty()) return Status::Ok();
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
                                    stream),
               "cudaMemcpyBatchAsync");
}

}  // namespace

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

Result<CopyLane::Builder> CopyLane::start(std::size_t max_items) {
  DeviceScope scope(device_);
  KVF_RETURN_IF_ERROR(scope.status());
  Builder b(this, std::unique_lock(mu_));
  KVF_ASSIGN_OR_RETURN(b.sub_.event, take_event());
  if (method_ == CopyMethod::kBatch) {
    b.pairs_.reserve(max_items);
    return b;
  }
  if (Status s = reserve_table(max_items, &b.sub_); !s.ok()) {
    abandon(b.sub_);
    b.done_ = true;
    return s;
  }
  b.capacity_ = max_items;
  b.first_launch_ = std::max(kMinFirstLaunch, max_items / 8);
  return b;
}

Status CopyLane::reserve_table(std::size_t items, Submission* s) {
  const std::size_t bytes = std::max<std::size_t>(items, 1) * sizeof(CopyItem);
  // A pinned host table, so that uploads are truly asynchronous; reused once the
  // submission that used it completed.
  for (auto it = free_pinned_.begin(); it != free_pinned_.end(); ++it) {
    if (it->second >= bytes) {
      s->pinned = it->first;
      s->pinned_bytes = it->second;
      free_pinned_.erase(it);
      break;
    }
  }
  if (!s->pinned) {
    std::size_t cap = 64u << 10;
    while (cap < bytes) cap *= 2;
    KVF_RETURN_IF_ERROR(check(cudaMallocHost(&s->pinned, cap), "cudaMallocHost (copy table)"));
    s->pinned_bytes = cap;
  }
  return ensure_device_table(s->pinned_bytes);
}

Result<cudaEvent_t> CopyLane::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t e = nullptr;
    KVF_RETURN_IF_ERROR(check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate"));
    return e;
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

Status CopyLane::ensure_device_table(std::size_t bytes) {
  // One device table per lane: stream order makes the next upload wait for the kernels
  // that read the current one. Growing it (rare) waits for the stream first.
  if (table_bytes_ >= bytes) return Status::Ok();
  KVF_RETURN_IF_ERROR(check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
  if (table_) cudaFree(table_);
  table_ = nullptr;
  table_bytes_ = 0;
  KVF_RETURN_IF_ERROR(check(cudaMalloc(&table_, bytes), "cudaMalloc (copy table)"));
  table_bytes_ = bytes;
  return Status::Ok();
}

void CopyLane::abandon(Submission& s) {
  // Whatever was enqueued must end before its table and event are reused.
  cudaStreamSynchronize(stream_);
  if (s.event) free_events_.push_back(s.event);
  if (s.pinned) free_pinned_.emplace_back(s.pinned, s.pinned_bytes);
  s = Submission{};
}

CopyLane::Builder::Builder(Builder&& o) noexcept
    : lane_(o.lane_),
      lock_(std::move(o.lock_)),
      sub_(o.sub_),
      capacity_(o.capacity_),
      count_(o.count_),
      launched_(o.launched_),
      first_launch_(o.first_launch_),
      pairs_(std::move(o.pairs_)),
      done_(o.done_) {
  o.sub_ = Submission{};
  o.done_ = true;
}

CopyLane::Builder::~Builder() {
  if (done_ || !lock_.owns_lock()) return;
  DeviceScope scope(lane_->device_);
  lane_->abandon(sub_);
}

Status CopyLane::Builder::add(std::uint64_t src, std::uint64_t dst, std::uint64_t length) {
  if (lane_->method_ == CopyMethod::kBatch || length >= kEngineMinBytes) {
    pairs_.push_back(CopyPair{src, dst, length});
    return Status::Ok();
  }
  auto* items = static_cast<CopyItem*>(sub_.pinned);
  for (std::uint64_t off = 0; off < length; off += kMaxItemBytes) {
    if (count_ == capacity_) return Internal("copy lane: more items than the builder was started for");
    items[count_++] = CopyItem{src + off, dst + off, std::min(kMaxItemBytes, length - off)};
  }
  if (launched_ == 0 && count_ >= first_launch_ && count_ < capacity_) return launch_pending();
  return Status::Ok();
}

Status CopyLane::Builder::launch_pending() {
  const std::size_t n = count_ - launched_;
  if (n == 0) return Status::Ok();
  DeviceScope scope(lane_->device_);
  KVF_RETURN_IF_ERROR(scope.status());
  auto* table = static_cast<CopyItem*>(lane_->table_) + launched_;
  const auto* host = static_cast<const CopyItem*>(sub_.pinned) + launched_;
  KVF_RETURN_IF_ERROR(check(cudaMemcpyAsync(table, host, n * sizeof(CopyItem), cudaMemcpyHostToDevice, lane_->stream_),
                            "upload copy table"));
  KVF_RETURN_IF_ERROR(check(static_cast<cudaError_t>(launch_copy_items(table, static_cast<std::uint32_t>(n),
                                                                       lane_->stream_, lane_->blocks_)),
                            "copy kernel launch"));
  launched_ = count_;
  return Status::Ok();
}

Status CopyLane::Builder::finish(Submission* out) {
  DeviceScope scope(lane_->device_);
  Status st = scope.status();
  if (st.ok()) st = lane_->method_ == CopyMethod::kBatch ? batch_copy(pairs_, lane_->stream_) : launch_pending();
  if (st.ok() && lane_->method_ == CopyMethod::kKernel && !pairs_.empty()) {
    st = lane_->engine_copy(pairs_);
    sub_.engine_copies = true;
  }
  if (st.ok()) st = check(cudaEventRecord(sub_.event, lane_->stream_), "cudaEventRecord");
  done_ = true;
  if (!st.ok()) {
    lane_->abandon(sub_);
    lock_.unlock();
    return st;
  }
  sub_.items = count_;
  *out = sub_;
  sub_ = Submission{};
  lock_.unlock();
  return Status::Ok();
}

KeptTable::KeptTable(KeptTable&& o) noexcept : pinned_(o.pinned_), bytes_(o.bytes_), items_(o.items_) {
  o.pinned_ = nullptr;
  o.items_ = 0;
}

KeptTable& KeptTable::operator=(KeptTable&& o) noexcept {
  if (this != &o) {
    if (pinned_) cudaFreeHost(pinned_);
    pinned_ = o.pinned_;
    bytes_ = o.bytes_;
    items_ = o.items_;
    o.pinned_ = nullptr;
    o.items_ = 0;
  }
  return *this;
}

KeptTable::~KeptTable() {
  if (pinned_) cudaFreeHost(pinned_);
}

KeptTable CopyLane::release_keeping_table(Submission& s) {
  KeptTable t;
  std::lock_guard lock(mu_);
  if (s.event) free_events_.push_back(s.event);
  t.pinned_ = s.pinned;
  t.bytes_ = s.pinned_bytes;
  t.items_ = s.pinned ? s.items : 0;
  s = Submission{};
  return t;
}

Status CopyLane::submit_kept(const KeptTable& table, Submission* out) {
  if (method_ != CopyMethod::kKernel || table.empty()) return Internal("copy lane: no kept kernel table");
  DeviceScope scope(device_);
  KVF_RETURN_IF_ERROR(scope.status());
  std::lock_guard lock(mu_);
  Submission s;
  KVF_ASSIGN_OR_RETURN(s.event, take_event());
  const std::size_t bytes = table.items_ * sizeof(CopyItem);
  Status st = ensure_device_table(table.bytes_);
  if (st.ok())
    st = check(cudaMemcpyAsync(table_, table.pinned_, bytes, cudaMemcpyHostToDevice, stream_), "upload copy table");
  if (st.ok())
    st = check(static_cast<cudaError_t>(launch_copy_items(static_cast<const CopyItem*>(table_),
                                                          static_cast<std::uint32_t>(table.items_), stream_, blocks_)),
               "copy kernel launch");
  if (st.ok()) st = check(cudaEventRecord(s.event, stream_), "cudaEventRecord");
  if (!st.ok()) {
    abandon(s);
    return st;
  }
  *out = s;  // s.pinned stays null: the table is the caller's
  return Status::Ok();
}

Status CopyLane::engine_copy(std::span<const CopyPair> pairs) {
  for (const CopyPair& p : pairs)
    KVF_RETURN_IF_ERROR(check(cudaMemcpyAsync(reinterpret_cast<void*>(p.dst), reinterpret_cast<const void*>(p.src),
                                              p.length, cudaMemcpyDefault, stream_),
                              "cudaMemcpyAsync (engine copy)"));
  return Status::Ok();
}

Status CopyLane::submit_strided(std::span<const std::uint64_t> src_lanes, std::span<const std::uint64_t> dst_lanes,
                                std::span<const CopyItem> chunks, std::span<const CopyPair> engine_pairs,
                                Submission* out) {
  if (method_ != CopyMethod::kKernel) return Internal("copy lane: strided copies need the kernel method");
  if (src_lanes.size() != dst_lanes.size() || src_lanes.size() > UINT32_MAX || chunks.size() > UINT32_MAX)
    return Internal("copy lane: strided copy with mismatched or too many lanes or chunks");
  DeviceScope scope(device_);
  KVF_RETURN_IF_ERROR(scope.status());
  std::lock_guard lock(mu_);
  Submission s;
  KVF_ASSIGN_OR_RETURN(s.event, take_event());
  Status st;
  if (!chunks.empty()) {  // with engine copies alone there is no table to upload and no kernel
    // Table layout: source lane bases, destination lane bases, chunks (all 8-byte words).
    const std::size_t lane_bytes = src_lanes.size() * sizeof(std::uint64_t);
    const std::size_t bytes = 2 * lane_bytes + chunks.size() * sizeof(CopyItem);
    st = reserve_table((bytes + sizeof(CopyItem) - 1) / sizeof(CopyItem), &s);
    if (st.ok()) {
      auto* host = static_cast<unsigned char*>(s.pinned);
      std::memcpy(host, src_lanes.data(), lane_bytes);
      std::memcpy(host + lane_bytes, dst_lanes.data(), lane_bytes);
      std::memcpy(host + 2 * lane_bytes, chunks.data(), chunks.size() * sizeof(CopyItem));
      st = check(cudaMemcpyAsync(table_, s.pinned, bytes, cudaMemcpyHostToDevice, stream_), "upload copy table");
    }
    if (st.ok()) {
      const auto* dev = static_cast<const unsigned char*>(table_);
      st = check(static_cast<cudaError_t>(launch_copy_strided(
                     reinterpret_cast<const std::uint64_t*>(dev), reinterpret_cast<const std::uint64_t*>(dev + lane_bytes),
                     reinterpret_cast<const CopyItem*>(dev + 2 * lane_bytes),
                     static_cast<std::uint32_t>(src_lanes.size()), static_cast<std::uint32_t>(chunks.size()), stream_,
                     blocks_)),
                 "strided copy kernel launch");
    }
  }
  if (st.ok() && !engine_pairs.empty()) {
    st = engine_copy(engine_pairs);
    s.engine_copies = true;
  }
  if (st.ok()) st = check(cudaEventRecord(s.event, stream_), "cudaEventRecord");
  if (!st.ok()) {
    abandon(s);
    return st;
  }
  *out = s;
  return Status::Ok();
}

Status CopyLane::submit(const std::vector<CopyPair>& pairs, Submission* out) {
  std::size_t max_items = 0;
  for (const CopyPair& p : pairs) max_items += (p.length + kMaxItemBytes - 1) / kMaxItemBytes;
  KVF_ASSIGN_OR_RETURN(Builder b, start(max_items));
  for (const CopyPair& p : pairs) KVF_RETURN_IF_ERROR(b.add(p.src, p.dst, p.length));
  return b.finish(out);
}

void CopyLane::release(Submission& s) {
  std::lock_guard lock(mu_);
  if (s.event) free_events_.push_back(s.event);
  if (s.pinned) free_pinned_.emplace_back(s.pinned, s.pinned_bytes);
  s = Submission{};
}

}  // namespace kvferry::detail::cuda
