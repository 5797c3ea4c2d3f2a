// The staging pipeline (staged_connection.h) without a GPU: a stager that copies host
// memory on its own thread stands in for CUDA, and a host connection that copies on its
// own thread stands in for tcp/shm. What is checked is the pipeline's logic: chunking
// and slot reuse, bytes in the right place, the notification riding the last chunk only
// after every other chunk landed, errors, cancel and destruction never hanging. The
// real paths run in tests/gpu_staging_test.cc on a GPU machine.
#include "core/staged_connection.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <thread>

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

// Runs closures in order on one thread (the fake GPU and the fake network).
class Worker {
 public:
  Worker() : thread_([this] { run(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void push(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      q_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;
      auto fn = std::move(q_.front());
      q_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::thread thread_;
};

class HostStager final : public DeviceStager {
 public:
  Result<PinnedBuffer> allocate_pinned(std::size_t bytes) override {
    PinnedBuffer b;
    b.memory = std::shared_ptr<std::uint8_t>(new std::uint8_t[bytes], std::default_delete<std::uint8_t[]>());
    b.size = bytes;
    return b;
  }
  Status check_vram(std::uint64_t, std::uint64_t, int) override { return Status::Ok(); }
  Status copy_async(int, StageMethod, const std::vector<StageItem>& items, std::function<void(Status)> done) override {
    copies++;
    worker_.push([this, items, done = std::move(done)] {
      {
        std::unique_lock lock(gate_mu_);  // a held GPU: copies wait until released
        gate_cv_.wait(lock, [&] { return !held_; });
      }
      for (const StageItem& it : items)
        std::memcpy(reinterpret_cast<void*>(it.dst), reinterpret_cast<const void*>(it.src), it.length);
      done(Status::Ok());
      std::this_thread::sleep_for(linger_);  // a stager thread slow to drop the callback
    });
    return Status::Ok();
  }
  Status copy(int d, StageMethod m, const std::vector<StageItem>& items, std::chrono::milliseconds) override {
    std::promise<Status> p;
    auto f = p.get_future();
    KVF_RETURN_IF_ERROR(copy_async(d, m, items, [&](Status s) { p.set_value(s); }));
    return f.get();
  }
  std::atomic<int> copies{0};
  // Keeps each finished copy's callback this long before destroying it (set before use).
  void linger(std::chrono::milliseconds d) { linger_ = d; }
  void hold() {
    std::lock_guard lock(gate_mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(gate_mu_);
      held_ = false;
    }
    gate_cv_.notify_all();
  }

 private:
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool held_ = false;
  std::chrono::milliseconds linger_{0};
  Worker worker_;
};

// A host backend in one address space: "remote" addresses are ours. It can fail its
// n-th job, or hold jobs until released (to cancel them in flight).
class HostConnection final : public BackendConnection {
 public:
  Status post(const std::shared_ptr<TransferJob>& job) override {
    std::lock_guard lock(mu_);
    const int n = posted_++;
    max_bytes = std::max(max_bytes, job->total_bytes());
    if (!job->local_is_staging()) unmarked_jobs++;
    if (hold_) {
      held_.push_back(job);
      return Status::Ok();
    }
    worker_.push([this, job, n] { execute(job, n); });
    return Status::Ok();
  }
  void cancel(const std::shared_ptr<TransferJob>& job) override {
    std::lock_guard lock(mu_);
    cancelled++;
    job->finish(Cancelled("cancelled by test"));
  }
  Status notify(std::string_view) override { return Status::Ok(); }
  Status health() const override { return Status::Ok(); }

  void fail_job(int n) { fail_at_ = n; }
  void hold() { hold_ = true; }

  std::mutex mu_;
  std::vector<std::string> notes;        // notifications, in delivery order
  std::vector<int> landed_before_note;   // jobs completed when each notification came
  int landed = 0;
  int cancelled = 0;
  std::uint64_t max_bytes = 0;
  int unmarked_jobs = 0;  // jobs posted without local_is_staging()

 private:
  // Copies under mu_, as a real backend's cancel is ordered with its own copies (tcp's
  // runs on its engine thread): cancel() waits for a copy in progress, and a job it
  // finished first is not copied at all. A job is finished only when its memory is no
  // longer touched (backend.h); finishing it while a copy still reads the slot let the
  // slot be reused under that copy (a data race TSan reported in this fake, not in the
  // library).
  void execute(const std::shared_ptr<TransferJob>& job, int n) {
    std::lock_guard lock(mu_);
    if (job->finished()) return;  // cancelled before it ran
    if (n == fail_at_) {
      job->finish(RemoteError("injected failure of job " + std::to_string(n)));
      return;
    }
    for (const TransferPiece& p : job->pieces()) {
      auto* local = reinterpret_cast<std::uint8_t*>(p.local);
      auto* remote = reinterpret_cast<std::uint8_t*>(p.remote);
      if (job->op() == TransferOp::kWrite) std::memcpy(remote, local, p.length);
      else std::memcpy(local, remote, p.length);
    }
    if (job->notification()) {
      notes.push_back(*job->notification());
      landed_before_note.push_back(landed);
    }
    landed++;
    job->finish(Status::Ok());  // its hook only queues work: safe under mu_
  }

  int posted_ = 0;
  int fail_at_ = -1;
  bool hold_ = false;
  std::vector<std::shared_ptr<TransferJob>> held_;
  Worker worker_;
};

struct Fixture {
  std::shared_ptr<HostStager> stager = std::make_shared<HostStager>();
  std::shared_ptr<HostConnection> host = std::make_shared<HostConnection>();
  std::vector<std::uint8_t> gpu, peer;
  std::shared_ptr<std::vector<TransferPiece>> pieces = std::make_shared<std::vector<TransferPiece>>();
  std::uint64_t total = 0;

  // Scattered pairs of assorted sizes (some longer than a chunk), reversed on the peer.
  explicit Fixture(std::uint64_t bytes) : gpu(bytes), peer(bytes, 0xA5) {
    std::mt19937_64 rng(42);
    for (auto& b : gpu) b = static_cast<std::uint8_t>(rng());
    std::uint64_t off = 0;
    while (off < bytes) {
      const std::uint64_t len = std::min<std::uint64_t>(bytes - off, 1 + rng() % (150u << 10));
      pieces->push_back(TransferPiece{reinterpret_cast<std::uint64_t>(gpu.data()) + off,
                                      reinterpret_cast<std::uint64_t>(peer.data()) + (bytes - off - len), len, 0, 0});
      off += len;
      total += len;
    }
  }
  std::shared_ptr<TransferJob> job(TransferOp op, std::optional<std::string> note) {
    return std::make_shared<TransferJob>(op, pieces, total, std::move(note), nullptr);
  }
  bool peer_matches() const {
    std::uint64_t off = 0;
    for (const TransferPiece& p : *pieces) {
      if (std::memcmp(peer.data() + (p.remote - reinterpret_cast<std::uint64_t>(peer.data())),
                      gpu.data() + off, p.length) != 0)
        return false;
      off += p.length;
    }
    return true;
  }
};

StagingConfig small_chunks() {
  StagingConfig c;
  c.chunk_bytes = 64u << 10;
  c.slots = 3;
  c.drain_timeout = 5s;
  return c;
}

TEST(StagedConnection, WriteThenReadThroughManyChunksWithNotificationLast) {
  Fixture f(3u << 20);
  StagedConnection conn(f.host, f.stager, small_chunks());
  auto w = f.job(TransferOp::kWrite, "done");
  ASSERT_TRUE(conn.post(w).ok());
  ASSERT_TRUE(w->wait_until(std::chrono::steady_clock::now() + 10s));
  ASSERT_TRUE(w->result().ok()) << w->result().to_string();
  EXPECT_TRUE(f.peer_matches());
  const int chunks = 48;  // 3 MiB / 64 KiB
  {
    std::lock_guard lock(f.host->mu_);
    ASSERT_EQ(f.host->notes.size(), 1u);
    EXPECT_EQ(f.host->notes[0], "done");
    EXPECT_EQ(f.host->landed_before_note[0], chunks - 1) << "the notification came before all data";
    EXPECT_EQ(f.host->landed, chunks);
    EXPECT_LE(f.host->max_bytes, 64u << 10);
    // Every host job says its local side is a staging slot (no streaming stores there).
    EXPECT_EQ(f.host->unmarked_jobs, 0);
  }
  // Read it back into poisoned "GPU" memory, twice (a job is re-postable).
  const std::vector<std::uint8_t> want = f.gpu;
  for (int round = 0; round < 2; ++round) {
    std::fill(f.gpu.begin(), f.gpu.end(), 0x5A);
    auto r = f.job(TransferOp::kRead, std::nullopt);
    ASSERT_TRUE(conn.post(r).ok());
    ASSERT_TRUE(r->wait_until(std::chrono::steady_clock::now() + 10s));
    ASSERT_TRUE(r->result().ok()) << r->result().to_string();
    EXPECT_EQ(f.gpu, want) << "round " << round;
  }
  std::lock_guard lock(f.host->mu_);
  EXPECT_EQ(f.host->unmarked_jobs, 0);
}

TEST(StagedConnection, ConcurrentJobsShareTheSlots) {
  Fixture f(1u << 20);
  StagedConnection conn(f.host, f.stager, small_chunks());
  std::vector<std::shared_ptr<TransferJob>> jobs;
  for (int i = 0; i < 5; ++i) {
    jobs.push_back(f.job(TransferOp::kWrite, "job " + std::to_string(i)));
    ASSERT_TRUE(conn.post(jobs.back()).ok());
  }
  for (auto& j : jobs) {
    ASSERT_TRUE(j->wait_until(std::chrono::steady_clock::now() + 10s));
    EXPECT_TRUE(j->result().ok()) << j->result().to_string();
  }
  EXPECT_TRUE(f.peer_matches());
  std::lock_guard lock(f.host->mu_);
  EXPECT_EQ(f.host->notes.size(), 5u);
}

TEST(StagedConnection, AFailedChunkFailsTheJobAndTheSlotsComeBack) {
  Fixture f(2u << 20);
  f.host->fail_job(5);
  StagedConnection conn(f.host, f.stager, small_chunks());
  auto w = f.job(TransferOp::kWrite, "never");
  ASSERT_TRUE(conn.post(w).ok());
  ASSERT_TRUE(w->wait_until(std::chrono::steady_clock::now() + 10s)) << "a failed chunk left the job hanging";
  EXPECT_EQ(w->result().code(), StatusCode::kRemoteError) << w->result().to_string();
  EXPECT_NE(w->result().message().find("injected failure"), std::string::npos);
  {
    std::lock_guard lock(f.host->mu_);
    EXPECT_TRUE(f.host->notes.empty()) << "a failed transfer must not notify";
  }
  // Every slot was returned: the next job completes.
  auto again = f.job(TransferOp::kWrite, std::nullopt);
  ASSERT_TRUE(conn.post(again).ok());
  ASSERT_TRUE(again->wait_until(std::chrono::steady_clock::now() + 10s));
  EXPECT_TRUE(again->result().ok()) << again->result().to_string();
  EXPECT_TRUE(f.peer_matches());
}

TEST(StagedConnection, CancelInFlightReturnsPromptly) {
  Fixture f(1u << 20);
  f.host->hold();  // host jobs never complete by themselves
  StagedConnection conn(f.host, f.stager, small_chunks());
  auto w = f.job(TransferOp::kRead, std::nullopt);
  ASSERT_TRUE(conn.post(w).ok());
  std::this_thread::sleep_for(50ms);  // chunks are posted and stuck
  const auto t0 = std::chrono::steady_clock::now();
  conn.cancel(w);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ASSERT_TRUE(w->finished());
  EXPECT_EQ(w->result().code(), StatusCode::kCancelled);
  std::lock_guard lock(f.host->mu_);
  EXPECT_GE(f.host->cancelled, 1);
}

TEST(StagedConnection, DestructionFailsJobsInFlight) {
  Fixture f(1u << 20);
  f.host->hold();
  auto w = f.job(TransferOp::kWrite, "x");
  {
    StagedConnection conn(f.host, f.stager, small_chunks());
    ASSERT_TRUE(conn.post(w).ok());
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(w->finished());
  EXPECT_FALSE(w->result().ok());
}

// A run that never had a chunk in flight (every slot taken by another job) is removed
// when cancelled: nothing keeps it (or its job) alive afterwards.
TEST(StagedConnection, CancelBeforeAnyChunkStartedRemovesTheRun) {
  Fixture f(1u << 20);
  f.host->hold();  // job a takes every slot and keeps them
  StagedConnection conn(f.host, f.stager, small_chunks());
  auto a = f.job(TransferOp::kRead, std::nullopt);
  ASSERT_TRUE(conn.post(a).ok());
  auto b = f.job(TransferOp::kRead, std::nullopt);
  ASSERT_TRUE(conn.post(b).ok());
  std::this_thread::sleep_for(50ms);
  conn.cancel(b);
  ASSERT_TRUE(b->finished());
  EXPECT_EQ(b->result().code(), StatusCode::kCancelled);
  std::weak_ptr<TransferJob> gone = b;
  b.reset();
  EXPECT_TRUE(gone.expired()) << "the cancelled run (and its job) stayed in the connection";
  conn.cancel(a);
  EXPECT_TRUE(a->finished());
}

// A GPU copy already started cannot be recalled: cancel() returns only once it ended,
// and the job is not reported finished while the copy may still write our memory.
TEST(StagedConnection, CancelWaitsForGpuCopiesAlreadyStarted) {
  Fixture f(1u << 20);
  StagingConfig cfg = small_chunks();
  cfg.drain_timeout = 100ms;
  StagedConnection conn(f.host, f.stager, cfg);
  f.stager->hold();
  auto w = f.job(TransferOp::kWrite, std::nullopt);  // gathers first: stuck on the GPU
  ASSERT_TRUE(conn.post(w).ok());
  std::this_thread::sleep_for(50ms);
  auto cancelled = std::async(std::launch::async, [&] { conn.cancel(w); });
  EXPECT_EQ(cancelled.wait_for(400ms), std::future_status::timeout) << "cancel returned while a GPU copy ran";
  EXPECT_FALSE(w->finished()) << "the job was finished while a GPU copy may still run";
  f.stager->release();
  ASSERT_EQ(cancelled.wait_for(5s), std::future_status::ready);
  ASSERT_TRUE(w->finished());
  EXPECT_EQ(w->result().code(), StatusCode::kCancelled);
}

// The engine, and the host connection it holds, die on the thread that destroys the
// connection, even while another component's thread still holds one of its callbacks
// (here the stager's, which keeps a finished copy's callback for 500 ms; under load a
// preempted thread does the same). When that callback held the engine, its last reference
// went on the stager's thread, which then destroyed the host connection and, once the
// owner had let go of the stager too, the stager itself: a join of its own thread,
// std::terminate, after the test had passed.
TEST(StagedConnection, DiesOnTheOwnersThreadWhileAnotherThreadHoldsItsCallback) {
  Fixture f(32u << 10);  // one chunk
  f.stager->linger(500ms);
  std::weak_ptr<HostConnection> host = f.host;
  {
    StagedConnection conn(std::move(f.host), f.stager, small_chunks());
    auto w = f.job(TransferOp::kWrite, std::nullopt);
    ASSERT_TRUE(conn.post(w).ok());
    ASSERT_TRUE(w->wait_until(std::chrono::steady_clock::now() + 10s));
    ASSERT_TRUE(w->result().ok()) << w->result().to_string();
    EXPECT_TRUE(f.peer_matches());
  }
  EXPECT_TRUE(host.expired()) << "the host connection outlived the staged connection (held from another thread)";
}

}  // namespace
}  // namespace kvferry::detail
