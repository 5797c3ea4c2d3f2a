#include "core/revocation.h"

#include <algorithm>
#include <utility>

namespace kvferry::detail {

TargetRevocation::TargetRevocation(std::string backend, std::chrono::milliseconds peer_timeout)
    : backend_(std::move(backend)), peer_timeout_(peer_timeout) {}

TargetRevocation::LinkId TargetRevocation::join(Link link) {
  std::lock_guard lock(mu_);
  const LinkId id = next_id_++;
  joined_[id] = Joined{std::move(link), {}};
  return id;
}

void TargetRevocation::leave(LinkId id) {
  std::lock_guard lock(mu_);
  if (joined_.erase(id) > 0) cv_.notify_all();
}

void TargetRevocation::confirmed(LinkId id, std::uint64_t region) {
  std::lock_guard lock(mu_);
  auto it = joined_.find(id);
  if (it == joined_.end()) return;
  auto& u = it->second.unconfirmed;
  if (auto r = std::find(u.begin(), u.end(), region); r != u.end()) {
    u.erase(r);
    cv_.notify_all();
  }
}

bool TargetRevocation::awaits(std::uint64_t region) const {
  return std::any_of(joined_.begin(), joined_.end(), [region](const auto& j) {
    const auto& u = j.second.unconfirmed;
    return std::find(u.begin(), u.end(), region) != u.end();
  });
}

void TargetRevocation::cut_off(std::vector<std::pair<LinkId, Link>>& links, const std::string& why) {
  for (auto& [id, link] : links) {
    leave(id);
    if (link.cut_off) link.cut_off(why);
  }
}

std::size_t TargetRevocation::revoke(std::uint64_t region) {
  const auto deadline = std::chrono::steady_clock::now() + peer_timeout_;
  // Marked unconfirmed before the send, so that an answer faster than our bookkeeping
  // is not lost.
  std::vector<std::pair<LinkId, Link>> to_send;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, j] : joined_) {
      j.unconfirmed.push_back(region);
      to_send.emplace_back(id, j.link);
    }
  }
  std::vector<std::pair<LinkId, Link>> failed;
  for (auto& [id, link] : to_send)
    if (!link.send_revoke(region).ok()) failed.emplace_back(id, std::move(link));
  // A link that did not get the revoke keeps its mapping: it cannot stay.
  cut_off(failed, backend_ + ": the revoke of region " + std::to_string(region) + " could not be sent");
  std::vector<std::pair<LinkId, Link>> silent;
  {
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return !awaits(region); })) {
      for (auto& [id, j] : joined_) {
        const auto& u = j.unconfirmed;
        if (std::find(u.begin(), u.end(), region) != u.end()) silent.emplace_back(id, j.link);
      }
    }
  }
  cut_off(silent, backend_ + ": no confirmation of the revoke of region " + std::to_string(region) + " within " +
                      std::to_string(peer_timeout_.count()) + " ms");
  return failed.size() + silent.size();
}

std::size_t TargetRevocation::links() const {
  std::lock_guard lock(mu_);
  return joined_.size();
}

Status answer_revoke(std::uint64_t region, const std::function<void(std::uint64_t)>& mark,
                     const std::function<void(std::uint64_t)>& drain,
                     const std::function<Status(std::uint64_t)>& confirm) {
  if (mark) mark(region);
  if (drain) drain(region);
  return confirm(region);
}

void answer_revoke_later(std::uint64_t region, const std::function<void(std::uint64_t)>& mark,
                         const std::function<void(std::uint64_t, Drained)>& drain,
                         std::function<Status(std::uint64_t)> confirm, std::function<void(Status)> on_error) {
  if (mark) mark(region);
  drain(region, [region, confirm = std::move(confirm), on_error = std::move(on_error)] {
    Status s = confirm(region);
    if (!s.ok() && on_error) on_error(std::move(s));
  });
}

}  // namespace kvferry::detail
