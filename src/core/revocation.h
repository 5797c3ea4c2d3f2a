// Revocation: what stops a peer from touching memory we deregistered, for backends whose
// initiators reach a target's memory directly (shared mappings, process_vm_*, IPC
// handles). docs/backend_guide.md §6, "Revocation".
//
// Target half, TargetRevocation: every initiator link that was handed our regions joins
// with two operations of the backend's: send it a revoke, cut it off. revoke(region)
// sends the revoke to every joined link and returns once each confirmed it or left, at
// most peer_timeout after the call; a link whose send failed, or that did not confirm by
// then, is cut off (the backend closes its socket: the initiator's mappings die with its
// jobs, which fail with PeerLost). So when revoke() returns, no initiator still uses
// the region, or it has been cut off.
//
// Initiator half, answer_revoke(): mark the region (every later post is refused), wait
// until no copy started before the mark uses it, then confirm; answer_revoke_later() does
// the same for a progress thread that must not wait.
//
// Thread-safe. The backend's operations run on the thread that called revoke(), never
// under TargetRevocation's lock (they may take the backend's own locks, and the backend
// may call join/leave/confirmed under those); they must be bounded (a send deadline).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

class TargetRevocation {
 public:
  using LinkId = std::uint64_t;  // never 0
  struct Link {
    // Sends a revoke of `region` to the initiator; an error means it did not go.
    std::function<Status(std::uint64_t region)> send_revoke;
    // Drops the link (idempotent; the backend then calls leave()). `why` names the cause.
    std::function<void(const std::string& why)> cut_off;
  };

  // `backend` names the backend in the cut-off causes.
  TargetRevocation(std::string backend, std::chrono::milliseconds peer_timeout);
  TargetRevocation(const TargetRevocation&) = delete;
  TargetRevocation& operator=(const TargetRevocation&) = delete;

  // A link that now holds our regions (join under the same lock as sending them, so
  // that a concurrent revoke either finds the link or the region was never sent).
  LinkId join(Link link);
  // The link is gone (dropped, closed): nothing waits for it any more. Unknown ids are
  // ignored.
  void leave(LinkId id);
  // The initiator confirmed that it no longer uses `region`.
  void confirmed(LinkId id, std::uint64_t region);

  // Sends the revoke and waits (bounded) as above; returns how many links were cut off.
  std::size_t revoke(std::uint64_t region);
  std::size_t links() const;

 private:
  struct Joined {
    Link link;
    std::vector<std::uint64_t> unconfirmed;  // regions revoked, not yet confirmed
  };
  bool awaits(std::uint64_t region) const;  // mu_ held
  void cut_off(std::vector<std::pair<LinkId, Link>>& links, const std::string& why);

  const std::string backend_;
  const std::chrono::milliseconds peer_timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  LinkId next_id_ = 1;
  std::unordered_map<LinkId, Joined> joined_;
};

// The initiator's answer to a revoke of `region`: `mark` makes every later post refuse
// the region, `drain` returns once no copy started before the mark touches it (either
// may be empty when the other does both), then `confirm` tells the target. Returns
// confirm's error (the caller fails the link: the target cuts it off anyway).
Status answer_revoke(std::uint64_t region, const std::function<void(std::uint64_t)>& mark,
                     const std::function<void(std::uint64_t)>& drain,
                     const std::function<Status(std::uint64_t)>& confirm);

// The same answer, never blocking, for a backend whose drain completes later on its
// progress thread (a flush callback): `drain` is handed `drained`, which it calls once no
// copy started before the mark touches the region (or never, when the drain failed: the
// target then cuts the link off at its bound); `confirm` runs inside `drained`, and
// `on_error` (may be empty) gets its error.
using Drained = std::function<void()>;
void answer_revoke_later(std::uint64_t region, const std::function<void(std::uint64_t)>& mark,
                         const std::function<void(std::uint64_t, Drained)>& drain,
                         std::function<Status(std::uint64_t)> confirm, std::function<void(Status)> on_error = {});

}  // namespace kvferry::detail
