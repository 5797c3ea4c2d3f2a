#include "backends/shm/shm_session.h"

#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/stream_copy.h"
#include "core/unix_socket.h"

namespace kvferry::detail::shm {
namespace {

// Jobs at least this large copy with streaming stores (stream_copy.h): far beyond the
// caches, where a plain store's read for ownership costs a third of the bus.
constexpr std::uint64_t kStreamBytes = 8ull << 20;
// Strided pieces claimed per batch cover at least this many bytes (copy_pool.h: a claim
// per 16 pieces of 512 B cost ~15% of the copy of a vllm-nhd KV transfer).
constexpr std::uint64_t kBatchBytes = 256ull << 10;
// Pieces up to this size whose read side is strided get their successor's source
// prefetched: a 512 B read every 1 KiB (a decode rank's half of a prefill rank's heads)
// ran at 0.35 of a contiguous copy without, 0.5 with (docs/benchmarks.md, "TP on two
// cores: ascending reads, claims by bytes, prefetch").
constexpr std::uint64_t kPrefetchBytes = 4096;

// Large jobs only, and never into or out of a staging slot (transfer_job.h: the GPU's
// copy of the slot is slower after streaming stores).
bool use_streaming_stores(const TransferJob& job) {
  return job.total_bytes() >= kStreamBytes && !job.local_is_staging();
}

// A write that reads a part of every local row (stride beyond its pieces) can ride with
// another job reading the same rows (copy_pool.h): the key says which rows, in order.
CopyWork::Twin twin_of(TransferOp op, const StridedPieces& sp) {
  if (op != TransferOp::kWrite || sp.local_stride <= sp.block_bytes || sp.local_lanes.empty()) return {};
  std::uint64_t key = 0xcbf29ce484222325ull;  // FNV-1a over the row numbers and the shape
  auto mix = [&key](std::uint64_t v) { key = (key ^ v) * 0x100000001b3ull; };
  mix(sp.local_stride);
  mix(sp.block_bytes);
  mix(sp.local_lanes.size());
  for (std::size_t l = 1; l < sp.local_lanes.size(); ++l) mix(sp.local_lanes[l] - sp.local_lanes[0]);
  for (const StridedRun& r : sp.runs) mix(std::uint64_t{r.local_first} << 32 | r.count);
  return CopyWork::Twin{key | 1, sp.local_lanes[0], sp.local_stride};
}

void copy_bytes(bool stream, void* destination, const void* source, std::size_t n) {
  if (stream) {
    stream_copy(destination, source, n);
  } else {
    std::memcpy(destination, source, n);
  }
}

// process_vm_readv/writev moves at most what fits; loop until every byte went.
Status process_vm_copy(pid_t pid, TransferOp op, std::uint8_t* local, std::uint64_t remote, std::uint64_t length) {
  while (length > 0) {
    iovec l{local, length};
    iovec r{reinterpret_cast<void*>(remote), length};
    ssize_t n = op == TransferOp::kRead ? ::process_vm_readv(pid, &l, 1, &r, 1, 0)
                                        : ::process_vm_writev(pid, &l, 1, &r, 1, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == ESRCH) return PeerLost("shm: the peer process is gone");
      return IoErrorFromErrno(op == TransferOp::kRead ? "shm: process_vm_readv" : "shm: process_vm_writev",
                              n < 0 ? errno : EIO);
    }
    local += n;
    remote += static_cast<std::uint64_t>(n);
    length -= static_cast<std::uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace

ShmSession::ShmSession(SessionConfig cfg, std::string peer, pid_t pid, UniqueFd sock, ControlBlock* cb,
                       UniqueFd target_wake, PeerRegions regions)
    : cfg_(std::move(cfg)),
      peer_session_("shm", std::move(peer), cfg_.peer_timeout, {}, pid),
      pid_(pid),
      sock_(std::move(sock)),
      cb_(cb),
      target_wake_(std::move(target_wake)),
      regions_(std::move(regions)) {}

ShmSession::~ShmSession() {
  fail(PeerLost("connection closed"));
  for (auto& [address, r] : regions_)
    if (r.value.map_base) ::munmap(r.value.map_base, r.value.map_length);
  if (cb_) ::munmap(cb_, sizeof(ControlBlock));
}

Status ShmSession::post(const std::shared_ptr<TransferJob>& job) {
  KVF_RETURN_IF_ERROR(health());
  // A large strided job whose pieces are all slice-sized: the copy threads translate
  // each piece as they copy it, so post() does no per-piece work on the caller's thread.
  if (const StridedPieces* sp = job->pieces().strided(); sp && job->total_bytes() > cfg_.inline_bytes) {
    std::uint32_t longest = 0;
    for (const StridedRun& r : sp->runs) longest = std::max(longest, r.count);
    if (std::uint64_t{longest} * sp->block_bytes <= cfg_.slice_bytes) {
      auto work = std::make_shared<CopyWork>();
      work->slices = job->pieces().size();
      work->batch = std::max<std::uint64_t>(16, kBatchBytes / std::max<std::uint64_t>(1, std::uint64_t{longest} * sp->block_bytes));
      work->twin = twin_of(job->op(), *sp);
      auto self = shared_from_this();
      const bool stream = use_streaming_stores(*job);
      work->copy = [self, pieces = job->shared_pieces(), op = job->op(), stream](std::size_t b, std::size_t e) {
        return self->copy_pieces(op, *pieces, b, e, stream);
      };
      return start_copy(job, std::move(work));
    }
  }
  auto slices = std::make_shared<std::vector<Slice>>();
  slices->reserve(job->pieces().size());
  {
    std::shared_lock lock(map_mu_);
    for (const TransferPiece& p : job->pieces()) {
      const PeerRegions::Entry* region = regions_.holding(p.remote, p.length);
      if (!region || region->value.revoked)
        return RemoteError("shm: peer '" + peer_session_.peer() + "' refused [0x" + std::to_string(p.remote) + ", +" +
                           std::to_string(p.length) + "): " +
                           (region ? "it deregistered that memory" : "not inside memory it announced"));
      const Mapping& m = region->value;
      for (std::uint64_t off = 0; off < p.length; off += cfg_.slice_bytes) {
        const std::uint64_t n = std::min(cfg_.slice_bytes, p.length - off);
        const std::uint64_t remote = m.local ? reinterpret_cast<std::uint64_t>(m.local) + (p.remote - region->info.address) + off
                                             : p.remote + off;
        slices->push_back(Slice{reinterpret_cast<std::uint8_t*>(p.local + off), remote, n, region});
      }
    }
  }
  auto work = std::make_shared<CopyWork>();
  work->slices = slices->size();
  auto self = shared_from_this();  // mappings stay valid while the work runs
  const bool stream = use_streaming_stores(*job);
  work->copy = [self, slices, op = job->op(), stream](std::size_t b, std::size_t e) {
    return self->copy_slices(op, *slices, b, e, stream);
  };
  return start_copy(job, std::move(work));
}

Status ShmSession::start_copy(const std::shared_ptr<TransferJob>& job, std::shared_ptr<CopyWork> work) {
  auto self = shared_from_this();
  work->complete = [self, job](Status s) { self->complete(job, std::move(s)); };
  job->set_poller([weak = std::weak_ptr<ShmSession>(self)] {
    if (auto s = weak.lock()) s->poll_acks();
  });
  {
    std::lock_guard lock(jobs_mu_);
    copying_[job.get()] = work;
  }
  if (job->total_bytes() <= cfg_.inline_bytes) CopyPool::run_inline(*work);
  else cfg_.pool->submit(work);
  return Status::Ok();
}

Status ShmSession::copy_slices(TransferOp op, const std::vector<Slice>& slices, std::size_t begin, std::size_t end,
                               bool stream) {
  std::shared_lock lock(map_mu_);  // a revoke waits for this batch, and we see its mark
  struct Fence {
    bool on;
    ~Fence() { if (on) stream_fence(); }
  } fence{stream};
  for (std::size_t i = begin; i < end; ++i) {
    // Once the peer is known lost, the rest of this job and every job queued behind it
    // stops at the next slice instead of copying into a dead peer's pages: the loss is
    // reported within one slice's copy, not after every queued byte.
    if (dead()) return health();
    const Slice& s = slices[i];
    const Mapping& r = s.region->value;
    if (r.revoked) return RemoteError("shm: the peer deregistered memory this transfer uses");
    if (r.local) {
      auto* remote = reinterpret_cast<std::uint8_t*>(s.remote);
      if (op == TransferOp::kRead) copy_bytes(stream, s.local, remote, s.length);
      else copy_bytes(stream, remote, s.local, s.length);
    } else {
      KVF_RETURN_IF_ERROR(process_vm_copy(pid_, op, s.local, s.remote, s.length));
    }
  }
  return Status::Ok();
}

Status ShmSession::copy_pieces(TransferOp op, const PieceList& pieces, std::size_t begin, std::size_t end,
                               bool stream) {
  std::shared_lock lock(map_mu_);  // as copy_slices: a revoke waits, and we see its mark
  struct Fence {
    bool on;
    ~Fence() { if (on) stream_fence(); }
  } fence{stream};
  const PeerRegions::Entry* last = nullptr;
  const StridedPieces& sp = *pieces.strided();
  const std::size_t runs = sp.runs.size();
  // The side we read: local for a write, the peer's for a read (its mapped address is
  // only known per piece, so reads of the peer are not prefetched).
  const bool prefetch = op == TransferOp::kWrite && sp.block_bytes <= kPrefetchBytes && sp.local_stride > sp.block_bytes;
  std::size_t lane = begin / runs, run = begin % runs;
  for (std::size_t i = begin; i < end; ++i, run = run + 1 == runs ? (++lane, 0) : run + 1) {
    if (dead()) return health();  // as copy_slices: stop at the next piece once the peer is lost
    const TransferPiece p = sp.piece(lane, sp.runs[run]);
    if (prefetch && run + 1 < runs) {
      const auto* next = reinterpret_cast<const char*>(sp.local_lanes[lane] + sp.runs[run + 1].local_first * sp.local_stride);
      for (std::uint64_t o = 0; o < sp.block_bytes; o += 64) __builtin_prefetch(next + o, 0, 3);
    }
    if (!last || !region_holds(last->info, p.remote, p.length)) {
      last = regions_.holding(p.remote, p.length);
      if (!last)
        return RemoteError("shm: peer '" + peer_session_.peer() + "' refused [0x" + std::to_string(p.remote) + ", +" +
                           std::to_string(p.length) + "): not inside memory it announced");
    }
    if (last->value.revoked) return RemoteError("shm: the peer deregistered memory this transfer uses");
    auto* local = reinterpret_cast<std::uint8_t*>(p.local);
    if (last->value.local) {
      auto* remote = last->value.local + (p.remote - last->info.address);
      if (op == TransferOp::kRead) copy_bytes(stream, local, remote, p.length);
      else copy_bytes(stream, remote, local, p.length);
    } else {
      KVF_RETURN_IF_ERROR(process_vm_copy(pid_, op, local, p.remote, p.length));
    }
  }
  return Status::Ok();
}

void ShmSession::complete(const std::shared_ptr<TransferJob>& job, Status status) {
  {
    std::lock_guard lock(jobs_mu_);
    copying_.erase(job.get());
  }
  if (status.ok() && dead()) status = health();
  // Inline jobs finish inside post(), before anyone could see them in flight: a kill in
  // those microseconds is one that came after the transfer, and they skip the check.
  if (job->total_bytes() > cfg_.inline_bytes) status = peer_session_.confirm_alive(std::move(status));
  // The ring's release publishes the data copied above before the notification.
  peer_session_.settle(job, std::move(status),
                       [this](std::uint64_t req, std::string_view message) { return push_notify(req, message); });
}

Status ShmSession::push_notify(std::uint64_t req, std::string_view message) {
  if (message.size() > kMaxRecordPayload)
    return InvalidArgument("shm carries notifications of up to " + std::to_string(kMaxRecordPayload) +
                           " bytes; this one has " + std::to_string(message.size()));
  {
    std::lock_guard lock(produce_mu_);
    const auto deadline = Clock::now() + cfg_.peer_timeout;
    while (!ring_push(cb_->to_target, RecordType::kNotify, req, message.data(),
                      static_cast<std::uint32_t>(message.size()))) {
      if (dead()) return health();
      if (Clock::now() > deadline) return PeerLost("shm: the peer's notification ring stayed full");
      std::this_thread::yield();
    }
  }
  if (cb_->to_target.consumer_sleeping.load(std::memory_order_seq_cst)) ring_eventfd(target_wake_.get());
  return Status::Ok();
}

Status ShmSession::notify(std::string_view message) {
  KVF_RETURN_IF_ERROR(health());
  return push_notify(0, message);
}

void ShmSession::poll_acks() {
  std::unique_lock lock(consume_mu_, std::try_to_lock);
  if (!lock.owns_lock() || dead()) return;
  Record rec;
  Status err;
  while (ring_pop(cb_->to_initiator, &rec, &err)) {
    if (rec.type != RecordType::kNotifyAck) {
      err = Corrupt("unexpected record from the peer");
      break;
    }
    peer_session_.on_answer(rec.req, rec.payload);  // empty: kept; else why the inbox refused it
  }
  if (!err.ok()) {
    lock.unlock();
    fail(err);
  }
}

void ShmSession::set_sleeping(bool sleeping) {
  cb_->to_initiator.consumer_sleeping.store(sleeping ? 1 : 0, std::memory_order_seq_cst);
}

void ShmSession::cancel(const std::shared_ptr<TransferJob>& job) {
  std::shared_ptr<CopyWork> work;
  {
    std::lock_guard lock(jobs_mu_);
    auto it = copying_.find(job.get());
    if (it != copying_.end()) work = it->second;
  }
  peer_session_.forget(job);
  // Returns once no copy of this job runs; its completion then finishes it (cancelled).
  if (work) CopyPool::stop_and_wait(*work, Cancelled("transfer cancelled"));
  job->finish(Cancelled("transfer cancelled"));
}

void ShmSession::on_revoke(std::uint64_t region_id) {
  std::unique_lock lock(map_mu_);  // waits for copies in flight
  if (PeerRegions::Entry* e = regions_.find(region_id)) {
    Mapping& r = e->value;
    r.revoked = true;
    if (r.map_base) ::munmap(r.map_base, r.map_length);
    r.map_base = nullptr;
    r.local = nullptr;
  }
}

}  // namespace kvferry::detail::shm
