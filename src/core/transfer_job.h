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
#include <iterator>
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

// Blocks consecutive on both sides: local blocks [local_first, +count) pair with remote
// blocks [remote_first, +count).
struct StridedRun {
  std::uint32_t local_first = 0;
  std::uint32_t remote_first = 0;
  std::uint32_t count = 0;
};

// A transfer as lanes x block runs (block_lanes.h) rather than expanded pairs: lane l's
// block b lies at lanes[l] + b * stride on each side. Piece i is run i % runs.size() of
// lane i / runs.size() (lane-major), count * block_bytes long: runs longer than one
// block exist only when both strides equal block_bytes (so a run is contiguous).
struct StridedPieces {
  std::vector<std::uint64_t> local_lanes;
  std::vector<std::uint64_t> remote_lanes;
  std::vector<StridedRun> runs;
  std::uint64_t local_stride = 0;
  std::uint64_t remote_stride = 0;
  std::uint64_t block_bytes = 0;
  std::uint32_t local_device = 0;
  std::uint32_t remote_device = 0;

  TransferPiece piece(std::size_t lane, const StridedRun& run) const {
    return TransferPiece{local_lanes[lane] + run.local_first * local_stride,
                         remote_lanes[lane] + run.remote_first * remote_stride, run.count * block_bytes,
                         local_device, remote_device};
  }
};

// The pieces of one request, in one of two forms: an explicit list, or the strided form
// (built in O(lanes + blocks) by a strided create_transfer, never expanded on the
// caller's thread). Backends iterate or index it (pieces by value, computed on the fly);
// those that need a vector call expanded(), which builds it once, on their thread.
// Immutable once made, except for that cache; safe to share between threads.
class PieceList {
 public:
  explicit PieceList(std::vector<TransferPiece> pieces) : explicit_(std::move(pieces)), size_(explicit_.size()) {}
  explicit PieceList(StridedPieces strided)
      : strided_(std::make_unique<StridedPieces>(std::move(strided))),
        size_(strided_->local_lanes.size() * strided_->runs.size()) {}

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  TransferPiece operator[](std::size_t i) const {
    if (!strided_) return explicit_[i];
    const std::size_t runs = strided_->runs.size();
    return strided_->piece(i / runs, strided_->runs[i % runs]);
  }
  // The strided form, or null for an explicit list.
  const StridedPieces* strided() const { return strided_.get(); }
  // Every piece in one vector (the strided form is expanded on the first call).
  const std::vector<TransferPiece>& expanded() const;

  // Walks the pieces in order without a division per step (lane and run advance).
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = TransferPiece;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = TransferPiece;
    Iterator() = default;
    Iterator(const PieceList* list, std::size_t i) : list_(list), i_(i) {}
    TransferPiece operator*() const {
      const StridedPieces* s = list_->strided_.get();
      return s ? s->piece(lane_, s->runs[run_]) : list_->explicit_[i_];
    }
    Iterator& operator++() {
      ++i_;
      if (const StridedPieces* s = list_->strided_.get(); s && ++run_ == s->runs.size()) {
        run_ = 0;
        ++lane_;
      }
      return *this;
    }
    Iterator operator++(int) {
      Iterator old = *this;
      ++*this;
      return old;
    }
    bool operator==(const Iterator& o) const { return i_ == o.i_; }
    bool operator!=(const Iterator& o) const { return i_ != o.i_; }

   private:
    const PieceList* list_ = nullptr;
    std::size_t i_ = 0;
    std::size_t lane_ = 0;
    std::size_t run_ = 0;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, size_); }

 private:
  std::vector<TransferPiece> explicit_;
  std::unique_ptr<StridedPieces> strided_;
  std::size_t size_ = 0;
  mutable std::once_flag expand_once_;
  mutable std::vector<TransferPiece> expanded_;
};

class TransferJob {
 public:
  TransferJob(TransferOp op, std::shared_ptr<const PieceList> pieces, std::uint64_t total_bytes,
              std::optional<std::string> notification, std::function<void(const Status&)> on_finish);
  // An explicit list of pieces (the core's staging and tests).
  TransferJob(TransferOp op, std::shared_ptr<const std::vector<TransferPiece>> pieces, std::uint64_t total_bytes,
              std::optional<std::string> notification, std::function<void(const Status&)> on_finish);

  TransferOp op() const { return op_; }
  const PieceList& pieces() const { return *pieces_; }
  // The same pieces as shared by every post of one request: a backend may key caches of
  // per-request work on it (hold it weakly: the request may go away).
  const std::shared_ptr<const PieceList>& shared_pieces() const { return pieces_; }
  std::uint64_t total_bytes() const { return total_bytes_; }
  const std::optional<std::string>& notification() const { return notification_; }
  // The local side is a staging slot whose bytes a GPU copy reads next or has just
  // written (core/staged_connection.h). A backend then copies with ordinary stores, never
  // streaming (non-temporal) ones: on the GPU machine a slot filled with streaming stores
  // went to the GPU ~10% slower (docs/benchmarks.md, "shm staged and streaming stores").
  // Set before post(); read-only afterwards.
  void set_local_is_staging(bool v) { local_is_staging_ = v; }
  bool local_is_staging() const { return local_is_staging_; }

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
  const std::shared_ptr<const PieceList> pieces_;
  const std::uint64_t total_bytes_;
  const std::optional<std::string> notification_;
  bool local_is_staging_ = false;
  std::function<void(const Status&)> on_finish_;
  std::function<void()> poller_;  // guarded by mu_

  std::atomic<bool> finished_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Status result_;
  std::chrono::steady_clock::time_point finished_at_{};
};

}  // namespace kvferry::detail
