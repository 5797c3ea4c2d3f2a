// TransferJob: one post of a request, as a backend sees it.
//
// The core builds the pieces (merged descriptor pairs) once per request; each post()
// makes a new job that shares them. A backend calls finish() exactly once; the first call
// wins, later ones return false (so cancel and completion can race safely).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry::detail {

struct TransferPiece {
  std::uint64_t local;   // address in this process (or offset for file kind)
  std::uint64_t remote;  // address as the peer announced it
  std::uint64_t length;
  // The descriptors' devices: the GPU of vram, the registered file id of file memory.
  std::uint32_t local_device = 0;
  std::uint32_t remote_device = 0;
};

class TransferJob {
 public:
  TransferJob(TransferOp op, std::shared_ptr<const std::vector<TransferPiece>> pieces,
              std::uint64_t total_bytes, std::optional<std::string> notification,
              std::function<void(const Status&)> on_finish);

  TransferOp op() const { return op_; }
  const std::vector<TransferPiece>& pieces() const { return *pieces_; }
  // The same pieces as shared by every post of one request: a backend may key caches of
  // per-request work on it (hold it weakly: the request may go away).
  const std::shared_ptr<const std::vector<TransferPiece>>& shared_pieces() const { return pieces_; }
  std::uint64_t total_bytes() const { return total_bytes_; }
  const std::optional<std::string>& notification() const { return notification_; }

  // Completes the job; returns false if it was already finished.
  bool finish(Status result);
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  // The result once finished (OK when done).
  Status result() const;
  // When finish() was called (valid once finished()).
  std::chrono::steady_clock::time_point finished_at() const;
  // A backend may give a progress function that a spinning waiter calls (the "poll" of
  // post/poll/cancel): the waiter then completes the job itself without a wake-up.
  void set_poller(std::function<void()> poller);
  // Spins briefly, then sleeps; true if finished within the deadline.
  bool wait_until(std::chrono::steady_clock::time_point deadline) const;

 private:
  const TransferOp op_;
  const std::shared_ptr<const std::vector<TransferPiece>> pieces_;
  const std::uint64_t total_bytes_;
  const std::optional<std::string> notification_;
  std::function<void(const Status&)> on_finish_;
  std::function<void()> poller_;  // guarded by mu_

  std::atomic<bool> finished_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Status result_;
  std::chrono::steady_clock::time_point finished_at_{};
};

}  // namespace kvferry::detail
