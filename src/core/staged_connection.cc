#include "core/staged_connection.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "core/hook_gate.h"

namespace kvferry::detail {

namespace {

// A chunk as planned: slot-relative offsets, fixed up when a slot is assigned.
struct Chunk {
  int device = 0;
  std::uint64_t bytes = 0;
  std::vector<StageItem> gpu;          // write: vram -> slot offset; read: slot offset -> vram
  std::vector<TransferPiece> host;     // local = offset in the slot
};

std::vector<Chunk> plan_chunks(const TransferJob& job, std::uint64_t chunk_bytes) {
  const bool write = job.op() == TransferOp::kWrite;
  std::vector<Chunk> chunks;
  for (const TransferPiece& p : job.pieces()) {
    for (std::uint64_t off = 0; off < p.length;) {
      if (chunks.empty() || chunks.back().bytes == chunk_bytes ||
          chunks.back().device != static_cast<int>(p.local_device)) {
        chunks.emplace_back();
        chunks.back().device = static_cast<int>(p.local_device);
      }
      Chunk& c = chunks.back();
      const std::uint64_t take = std::min(p.length - off, chunk_bytes - c.bytes);
      const std::uint64_t vram = p.local + off;
      c.gpu.push_back(write ? StageItem{vram, c.bytes, take} : StageItem{c.bytes, vram, take});
      c.host.push_back(TransferPiece{c.bytes, p.remote + off, take, 0, p.remote_device});
      c.bytes += take;
      off += take;
    }
  }
  return chunks;
}

}  // namespace

class StagedConnection::Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(std::shared_ptr<BackendConnection> host, std::shared_ptr<DeviceStager> stager, StagingConfig cfg)
      : host_(std::move(host)), stager_(std::move(stager)), cfg_(cfg) {
    worker_ = std::thread([this] { work(); });
  }

  BackendConnection& host() { return *host_; }

  Status post(const std::shared_ptr<TransferJob>& job) {
    KVF_RETURN_IF_ERROR(host_->health());
    KVF_RETURN_IF_ERROR(ensure_ring());
    auto run = std::make_shared<Run>();
    run->job = job;
    run->chunks = plan_chunks(*job, cfg_.chunk_bytes);
    if (run->chunks.empty()) return InvalidArgument("staged transfer without bytes");
    {
      std::lock_guard lock(mu_);
      if (closed_) return PeerLost("staged connection closed");
      runs_.push_back(run);
    }
    enqueue([self = shared_from_this()] { self->pump(); });
    return Status::Ok();
  }

  void cancel(const std::shared_ptr<TransferJob>& job) {
    std::shared_ptr<Run> run;
    {
      std::lock_guard lock(mu_);
      for (auto& r : runs_)
        if (r->job == job) run = r;
    }
    if (run) stop_run(run, Cancelled("transfer cancelled"));  // finishes it once no chunk runs
    else job->finish(Cancelled("transfer cancelled"));
  }

  void shutdown() {
    std::vector<std::shared_ptr<Run>> runs;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      runs.assign(runs_.begin(), runs_.end());
    }
    for (auto& r : runs) stop_run(r, PeerLost("staged connection closed"));
    {
      std::lock_guard lock(q_mu_);
      stopping_ = true;
    }
    q_cv_.notify_all();
    worker_.join();
    // Every run has ended; the hooks of host jobs and GPU copies still held by the host
    // backend or the stager may yet run (late duplicates, or not yet destroyed): they hold
    // the engine weakly, and after this none holds it at all, so it dies on this thread.
    gate_->close_and_drain();
  }

 private:
  struct Run {
    std::shared_ptr<TransferJob> job;
    std::vector<Chunk> chunks;
    std::size_t next = 0;    // the next chunk to start
    std::size_t done = 0;    // chunks that landed
    std::size_t active = 0;  // chunks started and not yet done
    bool failed = false;
    Status error;
    std::map<std::size_t, std::shared_ptr<TransferJob>> host_jobs;  // in flight, by chunk
  };

  Status ensure_ring() {
    std::lock_guard lock(ring_mu_);
    if (ring_.data()) return Status::Ok();
    KVF_ASSIGN_OR_RETURN(ring_, stager_->allocate_pinned(cfg_.chunk_bytes * cfg_.slots));
    std::lock_guard state(mu_);
    for (std::uint32_t s = 0; s < cfg_.slots; ++s) free_slots_.push_back(s);
    return Status::Ok();
  }
  std::uint64_t slot_base(std::uint32_t slot) const {
    return reinterpret_cast<std::uint64_t>(ring_.data()) + std::uint64_t{slot} * cfg_.chunk_bytes;
  }

  // ---- the worker: every continuation runs here, in order.
  void enqueue(std::function<void()> fn) {
    {
      std::lock_guard lock(q_mu_);
      if (!stopping_) {
        queue_.push_back(std::move(fn));
        q_cv_.notify_one();
        return;
      }
    }
    fn();  // after shutdown: only bookkeeping is left, run it here
  }
  void work() {
    std::unique_lock lock(q_mu_);
    for (;;) {
      q_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  // Marks a run failed, cancels its host jobs and waits until none of its chunks touches
  // memory any more, then removes the run and finishes the job. Host jobs stop when
  // cancelled (the backend's bound); a GPU copy already started cannot be recalled, and
  // the job must not be reported finished while one may still write our memory: those
  // are waited for (one chunk each, microseconds to milliseconds), in drain_timeout
  // rounds that cancel again what a racing continuation may have posted.
  void stop_run(const std::shared_ptr<Run>& run, const Status& why) {
    {
      std::lock_guard lock(mu_);
      if (!run->failed) {
        run->failed = true;
        run->error = why;
      }
    }
    std::unique_lock lock(mu_);
    while (run->active > 0) {
      std::vector<std::shared_ptr<TransferJob>> jobs;
      for (auto& [i, j] : run->host_jobs) jobs.push_back(j);
      lock.unlock();
      for (auto& j : jobs) host_->cancel(j);
      lock.lock();
      done_cv_.wait_for(lock, cfg_.drain_timeout, [&] { return run->active == 0; });
    }
    runs_.remove(run);  // also a run that never had a chunk in flight
    const Status result = run->error;
    lock.unlock();
    run->job->finish(result);
  }

  // Starts chunks while slots are free. The last chunk of a job with a notification
  // waits until every other chunk landed.
  void pump() {
    struct Start {
      std::shared_ptr<Run> run;
      std::size_t chunk;
      std::uint32_t slot;
    };
    std::vector<Start> starts;
    {
      std::lock_guard lock(mu_);
      for (auto& run : runs_) {
        while (!free_slots_.empty() && !run->failed && run->next < run->chunks.size()) {
          const bool last = run->next + 1 == run->chunks.size();
          if (last && run->job->notification() && run->done + 1 < run->chunks.size()) break;
          starts.push_back(Start{run, run->next++, free_slots_.back()});
          free_slots_.pop_back();
          run->active++;
        }
        if (free_slots_.empty()) break;
      }
    }
    for (auto& s : starts) start_chunk(s.run, s.chunk, s.slot);
  }

  void start_chunk(const std::shared_ptr<Run>& run, std::size_t ci, std::uint32_t slot) {
    if (run->job->op() == TransferOp::kRead) return post_host(run, ci, slot);
    gpu_copy(run, ci, slot, [this, run, ci, slot](Status st) {
      if (!st.ok()) return chunk_done(run, slot, st);
      post_host(run, ci, slot);
    });
  }

  // Wraps a continuation for another component's thread (a host job's hook, a stager
  // callback): it holds the engine only weakly and passes the gate, then queues `then`
  // for the worker. A strong reference there could be the last one, and the engine would
  // die on that thread, destroying the host connection or the stager on their own thread
  // (a join of itself: std::terminate; seen at process exit under ASan).
  template <class Arg>
  std::function<void(Arg)> from_outside(std::function<void(Arg)> then) {
    return [weak = weak_from_this(), gate = gate_, then = std::move(then)](Arg a) {
      if (!gate->enter()) return;  // shutdown() ended every run: nothing is waiting for this
      if (auto self = weak.lock())
        self->enqueue([self, then, a = std::move(a)]() mutable { then(std::move(a)); });
      gate->leave();
    };
  }

  // The chunk's batched GPU copy (gather for writes, scatter for reads); `then` runs on
  // the worker when it completed.
  void gpu_copy(const std::shared_ptr<Run>& run, std::size_t ci, std::uint32_t slot,
                std::function<void(Status)> then) {
    const Chunk& c = run->chunks[ci];
    const bool write = run->job->op() == TransferOp::kWrite;
    std::vector<StageItem> items = c.gpu;
    const std::uint64_t base = slot_base(slot);
    for (StageItem& it : items) (write ? it.dst : it.src) += base;
    Status st = stager_->copy_async(c.device, cfg_.method, items, from_outside<Status>(std::move(then)));
    if (!st.ok()) chunk_done(run, slot, st);
  }

  void post_host(const std::shared_ptr<Run>& run, std::size_t ci, std::uint32_t slot) {
    const Chunk& c = run->chunks[ci];
    std::vector<TransferPiece> host = c.host;
    const std::uint64_t base = slot_base(slot);
    for (TransferPiece& p : host) p.local += base;
    auto pieces = std::make_shared<const PieceList>(std::move(host));
    const bool last = ci + 1 == run->chunks.size();
    std::optional<std::string> note = last ? run->job->notification() : std::nullopt;
    auto job = std::make_shared<TransferJob>(
        run->job->op(), std::move(pieces), c.bytes, std::move(note),
        from_outside<const Status&>([this, run, ci, slot](const Status& st) { after_host(run, ci, slot, st); }));
    job->set_local_is_staging(true);
    Status posted;
    {
      // Under the lock, so that stop_run() either sees the job (and cancels it) or finds
      // the run failed before it is posted. The job's hook only enqueues, so a backend
      // that finishes it inside post() does not come back into this lock.
      std::lock_guard lock(mu_);
      if (run->failed) posted = run->error;
      else {
        run->host_jobs[ci] = job;
        posted = host_->post(job);
        if (!posted.ok()) run->host_jobs.erase(ci);
      }
    }
    if (!posted.ok()) chunk_done(run, slot, posted);
  }

  void after_host(const std::shared_ptr<Run>& run, std::size_t ci, std::uint32_t slot, const Status& st) {
    {
      std::lock_guard lock(mu_);
      run->host_jobs.erase(ci);
    }
    if (!st.ok() || run->job->op() == TransferOp::kWrite) return chunk_done(run, slot, st);
    bool failed;
    {
      std::lock_guard lock(mu_);
      failed = run->failed;
    }
    if (failed) return chunk_done(run, slot, Status::Ok());
    gpu_copy(run, ci, slot, [this, run, slot](Status s) { chunk_done(run, slot, s); });
  }

  void chunk_done(const std::shared_ptr<Run>& run, std::uint32_t slot, const Status& st) {
    std::vector<std::shared_ptr<TransferJob>> to_cancel;
    bool finish = false;
    Status result;
    {
      std::lock_guard lock(mu_);
      free_slots_.push_back(slot);
      run->active--;
      if (!st.ok() && !run->failed) {
        run->failed = true;
        run->error = st;
        for (auto& [i, j] : run->host_jobs) to_cancel.push_back(j);
      } else if (st.ok() && !run->failed) {
        run->done++;
      }
      if ((run->failed && run->active == 0) || run->done == run->chunks.size()) {
        finish = true;
        result = run->failed ? run->error : Status::Ok();
        runs_.remove(run);
      }
    }
    done_cv_.notify_all();
    for (auto& j : to_cancel) host_->cancel(j);
    if (finish) run->job->finish(result);
    pump();
  }

  const std::shared_ptr<BackendConnection> host_;
  const std::shared_ptr<DeviceStager> stager_;
  const StagingConfig cfg_;

  std::mutex ring_mu_;
  PinnedBuffer ring_;  // slots x chunk_bytes, allocated on the first post

  std::mutex mu_;  // runs, slots
  std::condition_variable done_cv_;
  std::list<std::shared_ptr<Run>> runs_;  // oldest first: it gets free slots first
  std::vector<std::uint32_t> free_slots_;
  bool closed_ = false;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  const std::shared_ptr<HookGate> gate_ = std::make_shared<HookGate>();
  std::thread worker_;
};

StagedConnection::StagedConnection(std::shared_ptr<BackendConnection> host, std::shared_ptr<DeviceStager> stager,
                                   StagingConfig config)
    : engine_(std::make_shared<Engine>(std::move(host), std::move(stager), config)) {}

StagedConnection::~StagedConnection() { engine_->shutdown(); }

Status StagedConnection::post(const std::shared_ptr<TransferJob>& job) { return engine_->post(job); }
void StagedConnection::cancel(const std::shared_ptr<TransferJob>& job) { engine_->cancel(job); }
Status StagedConnection::notify(std::string_view message) { return engine_->host().notify(message); }
Status StagedConnection::health() const { return engine_->host().health(); }

}  // namespace kvferry::detail
