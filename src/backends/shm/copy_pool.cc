#include "backends/shm/copy_pool.h"

#include <algorithm>

namespace kvferry::detail::shm {
CopyPool::CopyPool(unsigned threads) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) workers_.emplace_back([this] { worker(); });
}

CopyPool::~CopyPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (auto& w : queue_) stop_and_wait(*w, Cancelled("copy pool shut down"));
}

void CopyPool::submit(std::shared_ptr<CopyWork> work) {
  {
    std::lock_guard lock(mu_);
    if (work->twin.key != 0) {
      for (const std::shared_ptr<CopyWork>& q : queue_) {
        const CopyWork::Twin& t = q->twin;
        const std::uint64_t apart = t.base > work->twin.base ? t.base - work->twin.base : work->twin.base - t.base;
        if (t.key != work->twin.key || apart >= t.span || q->riding || q->rider_owner || q->slices != work->slices ||
            q->cursor.load(std::memory_order_relaxed) >= q->slices)
          continue;
        q->rider_owner = work;
        work->riding = true;
        q->rider.store(work.get(), std::memory_order_release);
        break;
      }
    }
    queue_.push_back(std::move(work));
  }
  cv_.notify_all();
}

void CopyPool::try_complete(CopyWork& work) {
  if (work.completed.exchange(true, std::memory_order_acq_rel)) return;
  Status result;
  {
    std::lock_guard lock(work.mu);
    result = work.first_error;
  }
  work.complete(result);
}

bool CopyPool::run_batch(CopyWork& work) {
  work.active.fetch_add(1, std::memory_order_acq_rel);
  const std::size_t begin =
      work.stopped.load(std::memory_order_acquire) ? work.slices : work.cursor.fetch_add(work.batch);
  std::size_t finished = work.done.load(std::memory_order_acquire);
  if (begin < work.slices) {
    const std::size_t end = std::min(begin + work.batch, work.slices);
    Status s = work.copy(begin, end);
    if (!s.ok()) {
      std::lock_guard lock(work.mu);
      if (work.first_error.ok()) work.first_error = s;
      work.stopped.store(true, std::memory_order_release);
    }
    // acq_rel: the completing thread sees every other worker's copies.
    finished = work.done.fetch_add(end - begin, std::memory_order_acq_rel) + (end - begin);
  }
  const bool last_out = work.active.fetch_sub(1, std::memory_order_acq_rel) == 1;
  if (last_out) {
    std::lock_guard lock(work.mu);  // pairs with stop_and_wait's predicate check
    work.idle.notify_all();
  }
  if (finished == work.slices || (last_out && work.stopped.load(std::memory_order_acquire))) {
    try_complete(work);
    return false;
  }
  return begin < work.slices;  // nothing left to claim: others finish their batches
}

void CopyPool::run_batches(CopyWork& work) {
  CopyWork* rider = work.rider.load(std::memory_order_acquire);
  bool mine = true, theirs = rider != nullptr;
  while (mine || theirs) {
    if (mine) mine = run_batch(work);
    if (!rider && (rider = work.rider.load(std::memory_order_acquire))) theirs = true;
    if (theirs) theirs = run_batch(*rider);
  }
}

void CopyPool::run_inline(CopyWork& work) {
  if (work.slices == 0) {
    try_complete(work);
    return;
  }
  run_batches(work);
}

void CopyPool::stop_and_wait(CopyWork& work, Status why) {
  {
    std::unique_lock lock(work.mu);
    if (work.first_error.ok()) work.first_error = why;
    work.stopped.store(true, std::memory_order_release);
    work.idle.wait(lock, [&] { return work.active.load(std::memory_order_acquire) == 0; });
  }
  try_complete(work);
}

void CopyPool::worker() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::shared_ptr<CopyWork> work = queue_.front();
    lock.unlock();
    run_batches(*work);
    lock.lock();
    // Once its cursor is exhausted nobody needs to pick the job up again.
    if (!queue_.empty() && queue_.front() == work &&
        (work->cursor.load() >= work->slices || work->stopped.load()))
      queue_.pop_front();
  }
}

}  // namespace kvferry::detail::shm
