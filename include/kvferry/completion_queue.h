// kvferry/completion_queue.h — many requests in flight, their completions in one queue.
//
// An engine posts a batch of requests (one per prompt) and learns of each one's end from
// a queue it drains when convenient, instead of calling wait() per request. The queue's
// file descriptor is readable while completions wait, so an event loop (epoll, poll,
// asyncio's add_reader) sleeps on it alongside its sockets.
//
//   auto cq = CompletionQueue::create();
//   post_batch(requests, *cq);                  // each request's TransferOptions::tag
//   ... epoll_wait on cq->fd() ...
//   for (const Completion& c : cq->drain()) on_done(c.tag, c.status);
//
// Contract
// - Every post to a queue yields exactly one Completion, however the request ends: done,
//   error, cancelled, peer lost, request or agent destroyed; a post that cannot start
//   completes at once with the reason. Nothing is dropped: the queue holds every
//   completion until drained (it grows with what is in flight, which the caller bounds).
// - `fd()` is an eventfd owned by the queue: readable exactly while completions wait
//   (level-triggered). Only wait on it; never read, write or close it. drain() that
//   empties the queue makes it unreadable again.
// - Thread safety: every method may be called from any thread; completions are pushed by
//   the library's threads. `CompletionQueue` is a cheap handle: copies share one queue,
//   and requests posted to it keep it alive until their completion is pushed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry {

struct Completion {
  std::uint64_t tag = 0;  // the request's TransferOptions::tag
  Status status;          // OK when done, else why it failed
  std::string peer;
  // The request's telemetry as of its completion (post_ns is that of the post call only
  // when the post returned before the transfer finished; otherwise 0).
  TransferTelemetry telemetry;
};

namespace detail {
class CompletionSink;
}

class CompletionQueue {
 public:
  // Fails only if the system refuses an eventfd.
  static Result<CompletionQueue> create();

  int fd() const;
  // Takes up to `max` completions, oldest first.
  std::vector<Completion> drain(std::size_t max = std::numeric_limits<std::size_t>::max());
  // Blocks until a completion waits or `timeout` passes; returns whether one waits.
  bool wait(std::chrono::nanoseconds timeout);
  // Completions waiting to be drained.
  std::size_t size() const;
  // Posts made to this queue whose completion has not been pushed yet.
  std::size_t in_flight() const;

 private:
  friend class TransferRequest;
  friend std::size_t post_batch(std::span<TransferRequest>, CompletionQueue&);
  explicit CompletionQueue(std::shared_ptr<detail::CompletionSink> sink) : sink_(std::move(sink)) {}
  std::shared_ptr<detail::CompletionSink> sink_;
};

// Posts every request; each one's completion (tag, status, telemetry) goes to `queue`.
// Returns how many started; the others have already completed into the queue with the
// reason they could not start (so exactly requests.size() completions will arrive).
std::size_t post_batch(std::span<TransferRequest> requests, CompletionQueue& queue);

}  // namespace kvferry
