// CompletionSink: the state behind a CompletionQueue handle (include/kvferry/completion_queue.h).
//
// Requests hold it shared and push from whichever thread finishes their job (inside
// TransferJob::finish, under the job's lock: push takes only the sink's own lock and
// never calls back, so no lock order is inverted). The eventfd is kept readable exactly
// while the queue is non-empty: written on the empty -> non-empty edge, read back when a
// drain empties it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

#include "core/socket_util.h"
#include "kvferry/completion_queue.h"

namespace kvferry::detail {

class CompletionSink {
 public:
  explicit CompletionSink(UniqueFd event) : event_(std::move(event)) {}
  int fd() const { return event_.get(); }
  void expect();  // a post is about to hand its completion to us
  void push(Completion c);
  std::vector<Completion> drain(std::size_t max);
  bool wait(std::chrono::nanoseconds timeout);
  std::size_t size() const;
  std::size_t in_flight() const;

 private:
  UniqueFd event_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Completion> queue_;
  std::size_t in_flight_ = 0;
};

}  // namespace kvferry::detail
