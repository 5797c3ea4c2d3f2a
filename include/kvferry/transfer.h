// kvferry/transfer.h — transfer requests, their states and telemetry; notifications.
//
// Contract
// - A `TransferRequest` is created by `Agent::create_transfer` (validated, not yet
//   posted). `post()` hands it to a backend and returns without waiting for data.
// - States: kReady (created or finished and reposted-able) -> kInProgress -> kDone or
//   kError. A request that is kDone or kError can be posted again; posting one that is
//   kInProgress is an error.
// - Requests in flight may complete into a CompletionQueue instead of being waited for
//   one by one (completion_queue.h: post(queue), post_batch).
// - `wait(timeout)` blocks the caller up to `timeout` (spins briefly first, then sleeps).
//   It returns OK when done, Timeout if still in progress (the transfer continues), or
//   the transfer's error.
// - `cancel()` is safe at any time. When it returns, no backend touches the request's
//   local memory any more. For a write, the remote destination holds undefined bytes.
// - Destroying a request that is in progress cancels it first. Destroying or cancelling
//   never blocks for longer than the backend needs to quiesce (bounded, no network wait).
// - All methods are thread-safe. A request may outlive its Agent: it then reports
//   errors, never touches freed state.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry {

// Direction of a one-sided transfer, seen from the initiator.
enum class TransferOp : std::uint8_t {
  kRead = 0,   // remote -> local
  kWrite = 1,  // local -> remote
};
std::string_view to_string(TransferOp op) noexcept;

enum class TransferState : std::uint8_t { kReady, kInProgress, kDone, kError };
std::string_view to_string(TransferState state) noexcept;

struct TransferTelemetry {
  std::string backend;                  // which backend served the last post
  std::uint64_t bytes = 0;              // total bytes of the request
  std::uint64_t descriptors_requested = 0;  // pairs as the caller gave them
  std::uint64_t descriptors_merged = 0;     // pairs after merging contiguous runs
  std::uint64_t prepare_ns = 0;         // time spent building (validation, merging)
  std::uint64_t post_ns = 0;            // time spent inside the last post()
  std::uint64_t transfer_ns = 0;        // post() start to completion of the last post
  std::uint32_t posts = 0;              // how many times it was posted
};

struct Notification {
  std::string from;       // the sending agent's name (as its backend link identified it)
  std::string message;    // opaque bytes
  std::uint64_t tag = 0;  // the sender's TransferOptions::tag (or notify()'s tag)
};

// Which notifications to take: a field left empty matches any.
struct NotificationFilter {
  std::optional<std::string> from;
  std::optional<std::uint64_t> tag;
};

// One awaited notification: from this peer, with this tag.
struct NotificationKey {
  std::string from;
  std::uint64_t tag = 0;
};

namespace detail {
class RequestState;
}
class CompletionQueue;

class TransferRequest {
 public:
  TransferRequest(TransferRequest&&) noexcept;
  TransferRequest& operator=(TransferRequest&&) noexcept;
  TransferRequest(const TransferRequest&) = delete;
  TransferRequest& operator=(const TransferRequest&) = delete;
  ~TransferRequest();  // cancels if in progress

  // Starts the transfer. Never blocks on data. Fails fast if the peer is known lost,
  // the request is in progress, or its memory was deregistered since creation.
  Status post();
  // The same, and the end of this post (tag, status, telemetry) is pushed to `queue`
  // (completion_queue.h); exactly one completion per call, an error return included.
  Status post(CompletionQueue& queue);

  TransferState state() const noexcept;
  // The reason of a kError state; OK otherwise.
  Status error() const;
  // Blocks up to `timeout`: OK when done, Timeout while in progress, else the error.
  Status wait(std::chrono::nanoseconds timeout);
  // Stops the transfer if in progress (state becomes kError with kCancelled).
  void cancel();

  TransferTelemetry telemetry() const;
  const std::string& peer() const;
  TransferOp op() const;
  // TransferOptions::tag of its creation.
  std::uint64_t tag() const;

 private:
  friend class Agent;
  explicit TransferRequest(std::shared_ptr<detail::RequestState> state);
  std::shared_ptr<detail::RequestState> state_;
};

}  // namespace kvferry
