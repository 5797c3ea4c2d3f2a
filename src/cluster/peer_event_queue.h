// PeerEventQueue: the agent's record of joins, updates, restarts and departures
// (kvferry/peer_events.h), bounded: past the cap the oldest events are dropped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "kvferry/peer_events.h"

namespace kvferry::detail {

class PeerEventQueue {
 public:
  static constexpr std::size_t kCap = 1u << 16;

  void push(PeerEvent event) {
    {
      std::lock_guard lock(mu_);
      if (events_.size() >= kCap) events_.pop_front();
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
  }
  std::vector<PeerEvent> take_all() {
    std::lock_guard lock(mu_);
    std::vector<PeerEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }
  bool wait_nonempty(std::chrono::nanoseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  }
 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PeerEvent> events_;
};

}  // namespace kvferry::detail
