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
  // Copies slices [begin, end); returns an error to stop the job.
  std::function<Status(std::size_t begin, std::size_t end)> copy;
  // Runs once, after every slice was copied or the job stopped (first error wins).
  std::function<void(Status)> complete;

  // Internal state.
  std::atomic<std::size_t> cursor{0};
  std::atomic<std::size_t> done{0};
  std::atomic<int> active{0};
  std::atomic<bool> stopped{false};
  std::atomic<bool> completed{false};
  std::mutex mu;
  std::condition_variable idle;
  Status first_error;
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
