// CopyPool: a few threads that copy the slices of large jobs in parallel.
//
// A job is a list of slices; every idle worker claims batches of its slices through an
// atomic cursor (so uneven slices balance out), and whoever finishes the last batch
// runs the job's completion. Cancel waits until no worker is inside the job.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail::shm {

struct CopyWork {
  std::size_t slices = 0;
  // Slices a worker claims at a time. Each claim costs a few atomics and a shared lock on
  // lines every worker touches; 16 slices of 64 KiB-1 MiB hide that, 16 of 512 B do not.
  std::size_t batch = 16;
  // Copies slices [begin, end); returns an error to stop the job.
  std::function<Status(std::size_t begin, std::size_t end)> copy;
  // Runs once, after every slice was copied or the job stopped (first error wins).
  std::function<void(Status)> complete;
  // Jobs that read the same rows of our memory for different peers, each a part of every
  // row (a prefill rank's heads split between two decode ranks). A job submitted while an
  // earlier one with the same key (nonzero) and a `base` less than `span` away is queued
  // rides on it: workers claim a batch of the earlier job, then one of the rider, so the
  // rider reads rows the first batch just brought into the cache instead of memory. Pairs
  // only; each job keeps its own slices, cursor, completion and cancel.
  struct Twin {
    std::uint64_t key = 0;
    std::uint64_t base = 0;
    std::uint64_t span = 0;
  };
  Twin twin;

  // Internal state.
  std::atomic<std::size_t> cursor{0};
  std::atomic<std::size_t> done{0};
  std::atomic<int> active{0};
  std::atomic<bool> stopped{false};
  std::atomic<bool> completed{false};
  std::mutex mu;
  std::condition_variable idle;
  Status first_error;
  std::atomic<CopyWork*> rider{nullptr};    // published once; kept alive by rider_owner
  std::shared_ptr<CopyWork> rider_owner;    // the pool's mutex
  bool riding = false;                      // the pool's mutex: this job is a rider
};

class CopyPool {
 public:
  explicit CopyPool(unsigned threads);
  ~CopyPool();
  unsigned threads() const { return static_cast<unsigned>(workers_.size()); }
  void submit(std::shared_ptr<CopyWork> work);
  // Runs a job on the calling thread (small jobs: no hand-off).
  static void run_inline(CopyWork& work);
  // Stops the job: no new batch starts; returns once no worker is inside it.
  static void stop_and_wait(CopyWork& work, Status why);

 private:
  // One claim of `work`'s next batch; false once it has none left for this worker.
  static bool run_batch(CopyWork& work);
  // `work`'s batches, alternating with its rider's.
  static void run_batches(CopyWork& work);
  static void try_complete(CopyWork& work);
  void worker();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<CopyWork>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kvferry::detail::shm
