#include "core/request_state.h"

namespace kvferry::detail {

using std::chrono::steady_clock;

RequestState::~RequestState() { cancel(); }

std::shared_ptr<TransferJob> RequestState::current_job() const {
  std::lock_guard lock(mu_);
  return job_;
}

Status RequestState::post(std::shared_ptr<CompletionSink> sink) {
  const auto t0 = steady_clock::now();
  if (sink) sink->expect();
  std::lock_guard lock(mu_);
  bool completed = false;  // the job's hook already pushed this post's completion
  Status s = post_locked(sink, t0, &completed);
  if (!s.ok() && sink && !completed) {  // did not start: complete at once, with the reason
    TransferTelemetry t = fixed_telemetry();
    t.posts = posts_;
    sink->push(Completion{plan_.tag, s, plan_.peer, std::move(t)});
  }
  return s;
}

Status RequestState::post_locked(const std::shared_ptr<CompletionSink>& sink, steady_clock::time_point t0,
                                 bool* completed) {
  if (job_ && !job_->finished()) return FailedPrecondition("post: the request is already in progress");
  if (!instance_alive_here(plan_.owner))
    return FailedPrecondition("post: the agent that created this request (instance " + plan_.owner.hex() +
                              ") was destroyed");
  auto conn = plan_.connection.lock();
  if (!conn)
    return NotFound("post: peer '" + plan_.peer + "' was forgotten or reloaded since this request was created");
  KVF_RETURN_IF_ERROR(conn->health().with_context("post to '" + plan_.peer + "'"));
  KVF_RETURN_IF_ERROR(plan_.registry->pin(*plan_.local_regions));
  // The hook releases the pins however the job ends (done, error, cancel), records the
  // metrics, and hands the completion to the queue, if any (under the job's lock: the sink
  // takes only its own).
  std::function<void(const Status&)> hook;
  if (sink) {
    TransferTelemetry t = fixed_telemetry();
    t.posts = posts_ + 1;
    hook = [registry = plan_.registry, regions = plan_.local_regions, counters = plan_.counters, op = plan_.op,
            bytes = plan_.total_bytes, sink, t = std::move(t), t0, tag = plan_.tag,
            peer = plan_.peer](const Status& st) mutable {
      registry->unpin(*regions);
      if (counters) counters->record(op, bytes, steady_clock::now() - t0, st);
      t.transfer_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(steady_clock::now() - t0).count());
      sink->push(Completion{tag, st, std::move(peer), std::move(t)});
    };
  } else {
    hook = [registry = plan_.registry, regions = plan_.local_regions, counters = plan_.counters, op = plan_.op,
            bytes = plan_.total_bytes, t0](const Status& result) {
      registry->unpin(*regions);
      if (counters) counters->record(op, bytes, steady_clock::now() - t0, result);
    };
  }
  auto job = std::make_shared<TransferJob>(plan_.op, plan_.pieces, plan_.total_bytes, plan_.notification,
                                           std::move(hook));
  posted_at_ = t0;
  Status s = conn->post(job);
  if (!s.ok()) {
    job->finish(s);  // runs the hook: with a sink, that is this post's one completion
    *completed = true;
    return s.with_context("post to '" + plan_.peer + "'");
  }
  job_ = std::move(job);
  ++posts_;
  post_ns_ = static_cast<std::uint64_t>(std::chrono::nanoseconds(steady_clock::now() - t0).count());
  return Status::Ok();
}

TransferState RequestState::state() const {
  auto job = current_job();
  if (!job) return TransferState::kReady;
  if (!job->finished()) return TransferState::kInProgress;
  return job->result().ok() ? TransferState::kDone : TransferState::kError;
}

Status RequestState::error() const {
  auto job = current_job();
  if (!job || !job->finished()) return Status::Ok();
  return job->result();
}

Status RequestState::wait(std::chrono::nanoseconds timeout) {
  auto job = current_job();
  if (!job) return FailedPrecondition("wait: the request was never posted");
  if (!job->wait_until(steady_clock::now() + timeout))
    return Timeout("transfer to '" + plan_.peer + "' still in progress after " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) + " ms");
  return job->result();
}

void RequestState::cancel() {
  auto job = current_job();
  if (!job || job->finished()) return;
  if (auto conn = plan_.connection.lock()) conn->cancel(job);
  // A connection that is gone has already failed its jobs; this covers any other path.
  job->finish(Cancelled("transfer cancelled"));
}

TransferTelemetry RequestState::fixed_telemetry() const {
  TransferTelemetry t;
  t.backend = plan_.backend_name;
  t.bytes = plan_.total_bytes;
  t.descriptors_requested = plan_.descriptors_requested;
  t.descriptors_merged = plan_.pieces->size();
  t.prepare_ns = plan_.prepare_ns;
  return t;
}

TransferTelemetry RequestState::telemetry() const {
  TransferTelemetry t = fixed_telemetry();
  std::lock_guard lock(mu_);
  t.post_ns = post_ns_;
  t.posts = posts_;
  if (job_ && job_->finished())
    t.transfer_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(job_->finished_at() - posted_at_).count());
  return t;
}

}  // namespace kvferry::detail
