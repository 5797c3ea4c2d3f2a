// NotificationInbox: a bounded, thread-safe queue of notifications received.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "kvferry/transfer.h"

namespace kvferry::detail {

class NotificationInbox {
 public:
  explicit NotificationInbox(std::size_t capacity) : capacity_(capacity) {}
  // Drops (and counts) the notification when full, so a flooding peer cannot grow us.
  void push(Notification n);
  std::vector<Notification> take_all();
  bool wait_nonempty(std::chrono::nanoseconds timeout);
  std::uint64_t dropped() const;
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Notification> queue_;
  std::uint64_t dropped_ = 0;
};

}  // namespace kvferry::detail
