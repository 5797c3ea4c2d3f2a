// Closer: destroys, on a helper thread of its own, what must not be destroyed on the
// reactor thread. Closing a replaced peer's connections joins worker threads and waits for
// copies in flight; done in a side-channel handler it would hold every backend's progress.
//
// Threading: hand() from any thread; stop() from any thread but the helper's, and it
// returns once everything handed over has been destroyed. Ownership: the helper thread is
// started by the first hand-over and owned here; the destructor stops it.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace kvferry::detail {

class Closer {
 public:
  Closer() = default;
  ~Closer() { stop(); }
  Closer(const Closer&) = delete;
  Closer& operator=(const Closer&) = delete;

  // `doomed` is destroyed on the helper thread (the caller must hold no other reference);
  // after stop(), on the caller's thread.
  void hand(std::shared_ptr<void> doomed);
  // Destroys what was handed over, then ends the helper thread. Idempotent.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<void>> queue_;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace kvferry::detail
