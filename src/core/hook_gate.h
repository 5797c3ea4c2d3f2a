// HookGate: lets an object that owns threads hand callbacks to another component's
// threads (a backend's worker, the stager's completion thread) and still die on its
// owner's thread.
//
// The callback holds the object weakly and passes the gate around its work; the object's
// owner, once nothing more is expected, closes the gate and waits for callbacks running
// now. After that no callback can take a strong reference, so the owner's reference is
// the last and the destructor runs on the owner's thread, never on a thread the object
// (or something it owns) would have to join.
//
// Threading: every method from any thread.
#pragma once

#include <condition_variable>
#include <mutex>

namespace kvferry::detail {

class HookGate {
 public:
  // False once closed: the callback must return without touching the object.
  bool enter() {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    ++running_;
    return true;
  }
  void leave() {
    std::lock_guard lock(mu_);
    if (--running_ == 0) cv_.notify_all();
  }
  // Refuses new callbacks and waits for those inside; never call it from one.
  void close_and_drain() {
    std::unique_lock lock(mu_);
    closed_ = true;
    cv_.wait(lock, [&] { return running_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;
  bool closed_ = false;
};

}  // namespace kvferry::detail
