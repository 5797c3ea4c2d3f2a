#include "core/closer.h"

#include <pthread.h>

#include <utility>

namespace kvferry::detail {

void Closer::hand(std::shared_ptr<void> doomed) {
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      queue_.push_back(std::move(doomed));
      if (!thread_.joinable()) {
        thread_ = std::thread([this] { run(); });
        ::pthread_setname_np(thread_.native_handle(), "kvf-closer");
      }
    }
  }
  cv_.notify_one();
  // Stopped: `doomed` (if still here) goes with this frame.
}

void Closer::stop() {
  std::thread t;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    t = std::move(thread_);
  }
  cv_.notify_one();
  if (t.joinable()) t.join();
}

void Closer::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopped, and all destroyed
    std::shared_ptr<void> next = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    next.reset();
    lock.lock();
  }
}

}  // namespace kvferry::detail
