#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "core/completion_sink.h"

namespace kvferry {

namespace detail {

void CompletionSink::expect() {
  std::lock_guard lock(mu_);
  ++in_flight_;
}

void CompletionSink::push(Completion c) {
  {
    std::lock_guard lock(mu_);
    if (in_flight_ > 0) --in_flight_;
    queue_.push_back(std::move(c));
    if (queue_.size() == 1) {
      const std::uint64_t one = 1;
      // Cannot fail short of a counter overflow, which the read-back on drain prevents.
      [[maybe_unused]] ssize_t n = ::write(event_.get(), &one, sizeof one);
    }
  }
  cv_.notify_all();
}

std::vector<Completion> CompletionSink::drain(std::size_t max) {
  std::lock_guard lock(mu_);
  std::vector<Completion> out;
  const std::size_t n = std::min(max, queue_.size());
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (n > 0 && queue_.empty()) {
    std::uint64_t value;
    [[maybe_unused]] ssize_t r = ::read(event_.get(), &value, sizeof value);  // non-blocking: resets to 0
  }
  return out;
}

bool CompletionSink::wait(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); });
}

std::size_t CompletionSink::size() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::size_t CompletionSink::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

}  // namespace detail

Result<CompletionQueue> CompletionQueue::create() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return IoErrorFromErrno("completion queue: eventfd", errno);
  return CompletionQueue(std::make_shared<detail::CompletionSink>(detail::UniqueFd(fd)));
}

int CompletionQueue::fd() const { return sink_->fd(); }
std::vector<Completion> CompletionQueue::drain(std::size_t max) { return sink_->drain(max); }
bool CompletionQueue::wait(std::chrono::nanoseconds timeout) { return sink_->wait(timeout); }
std::size_t CompletionQueue::size() const { return sink_->size(); }
std::size_t CompletionQueue::in_flight() const { return sink_->in_flight(); }

std::size_t post_batch(std::span<TransferRequest> requests, CompletionQueue& queue) {
  std::size_t started = 0;
  for (TransferRequest& r : requests)
    if (r.post(queue).ok()) ++started;
  return started;
}

}  // namespace kvferry
