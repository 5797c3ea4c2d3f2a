// NotificationInbox: a bounded, thread-safe store of the notifications an agent received.
//
// Several consumers may share one agent: each takes what it asked for (by peer, by tag,
// or an exact set of (peer, tag) keys) and leaves everything else in place.
// A notification that cannot be kept (inbox full, larger than this agent accepts, a
// malformed envelope) is refused: deliver() says why, and the backend that carried it
// fails the sender's request with that reason, so no notification is acknowledged and
// then lost.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry::detail {

class NotificationInbox {
 public:
  NotificationInbox(std::string owner, std::size_t capacity, std::size_t max_message_bytes)
      : owner_(std::move(owner)), capacity_(capacity), max_message_bytes_(max_message_bytes) {}

  // Decodes a notification's wire bytes (core/notification_wire.h) and keeps it, or says
  // why not (the caller reports that to the sender). Refusals are counted.
  Status deliver(std::string from, std::string_view envelope);
  Status push(Notification n);

  std::vector<Notification> take(const NotificationFilter& filter);
  bool wait_nonempty(std::chrono::nanoseconds timeout);
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }
  // Waits until every key has a matching notification, then takes the oldest match per
  // key (in key order). On timeout it takes nothing and names the missing keys.
  Result<std::vector<Notification>> wait_for(std::span<const NotificationKey> keys, std::chrono::nanoseconds timeout);
  std::uint64_t refused() const;

 private:
  // Positions in queue_ of the oldest match of each key; false if one has none.
  bool find_all(std::span<const NotificationKey> keys, std::vector<std::size_t>& at,
                std::vector<std::size_t>* missing) const;

  const std::string owner_;
  const std::size_t capacity_;
  const std::size_t max_message_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Notification> queue_;
  std::uint64_t refused_ = 0;
};

}  // namespace kvferry::detail
