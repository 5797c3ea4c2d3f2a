#include "core/notification_inbox.h"

#include <algorithm>
#include <cstdint>

#include "core/notification_wire.h"

namespace kvferry::detail {

namespace {

bool matches(const Notification& n, const NotificationFilter& f) {
  return (!f.from || n.from == *f.from) && (!f.tag || n.tag == *f.tag);
}

}  // namespace

Status NotificationInbox::deliver(std::string from, std::string_view envelope) {
  Result<DecodedNotification> d = decode_notification(envelope);
  if (!d.ok()) {
    std::lock_guard lock(mu_);
    ++refused_;
    return d.status().with_context("agent '" + owner_ + "' refused a notification from '" + from + "'");
  }
  if (d->message.size() > max_message_bytes_) {
    std::lock_guard lock(mu_);
    ++refused_;
    return RemoteError("agent '" + owner_ + "' refused a notification of " + std::to_string(d->message.size()) +
                       " bytes from '" + from + "': it accepts at most " + std::to_string(max_message_bytes_));
  }
  return push(Notification{std::move(from), std::move(d->message), d->tag});
}

Status NotificationInbox::push(Notification n) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= capacity_) {
      ++refused_;
      return RemoteError("the inbox of agent '" + owner_ + "' is full (" + std::to_string(capacity_) +
                         " notifications waiting to be taken); the notification from '" + n.from +
                         "' was not delivered");
    }
    queue_.push_back(std::move(n));
  }
  cv_.notify_all();
  return Status::Ok();
}

std::vector<Notification> NotificationInbox::take(const NotificationFilter& filter) {
  std::lock_guard lock(mu_);
  std::vector<Notification> out;
  if (!filter.from && !filter.tag) {
    out.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
    return out;
  }
  std::deque<Notification> keep;
  for (auto& n : queue_) {
    if (matches(n, filter)) out.push_back(std::move(n));
    else keep.push_back(std::move(n));
  }
  queue_.swap(keep);
  return out;
}

bool NotificationInbox::wait_nonempty(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); });
}

bool NotificationInbox::find_all(std::span<const NotificationKey> keys, std::vector<std::size_t>& at,
                                 std::vector<std::size_t>* missing) const {
  at.assign(keys.size(), SIZE_MAX);
  std::vector<bool> claimed(queue_.size(), false);
  bool all = true;
  for (std::size_t k = 0; k < keys.size(); ++k) {
    for (std::size_t i = 0; i < queue_.size(); ++i) {
      if (claimed[i] || queue_[i].tag != keys[k].tag || queue_[i].from != keys[k].from) continue;
      claimed[i] = true;
      at[k] = i;
      break;
    }
    if (at[k] == SIZE_MAX) {
      all = false;
      if (!missing) return false;
      missing->push_back(k);
    }
  }
  return all;
}

Result<std::vector<Notification>> NotificationInbox::wait_for(std::span<const NotificationKey> keys,
                                                              std::chrono::nanoseconds timeout) {
  std::vector<std::size_t> at;
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return find_all(keys, at, nullptr); })) {
    std::vector<std::size_t> missing;
    find_all(keys, at, &missing);
    std::string names;
    for (std::size_t i = 0; i < missing.size() && i < 16; ++i)
      names += (i ? ", " : "") + std::string("('") + keys[missing[i]].from + "', " +
               std::to_string(keys[missing[i]].tag) + ")";
    if (missing.size() > 16) names += ", ...";
    return Timeout(std::to_string(missing.size()) + " of " + std::to_string(keys.size()) +
                   " notifications (peer, tag) did not arrive within " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
                   " ms: " + names);
  }
  std::vector<Notification> out;
  out.reserve(keys.size());
  for (std::size_t i : at) out.push_back(std::move(queue_[i]));
  std::vector<std::size_t> sorted = at;
  std::sort(sorted.begin(), sorted.end());
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it)
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(*it));
  return out;
}

std::uint64_t NotificationInbox::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
}

}  // namespace kvferry::detail
