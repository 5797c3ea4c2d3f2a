#include "core/notification_inbox.h"

namespace kvferry::detail {

void NotificationInbox::push(Notification n) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= capacity_) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(n));
  }
  cv_.notify_all();
}

std::vector<Notification> NotificationInbox::take_all() {
  std::lock_guard lock(mu_);
  std::vector<Notification> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

bool NotificationInbox::wait_nonempty(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); });
}

std::uint64_t NotificationInbox::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

}  // namespace kvferry::detail
