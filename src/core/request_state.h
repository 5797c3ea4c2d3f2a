// RequestState: what a TransferRequest owns. Shared with nothing but the jobs' hooks.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/metrics.h"
#include "core/backend.h"
#include "core/instance_id.h"
#include "core/completion_sink.h"
#include "core/memory_registry.h"
#include "core/transfer_job.h"
#include "kvferry/transfer.h"

namespace kvferry::detail {

class RequestState {
 public:
  struct Plan {
    InstanceId owner;  // the agent instance that created it (an id, never a pointer)
    std::string peer;
    TransferOp op = TransferOp::kRead;
    std::shared_ptr<const PieceList> pieces;
    std::shared_ptr<const std::vector<std::uint64_t>> local_regions;
    std::uint64_t total_bytes = 0;
    std::uint64_t descriptors_requested = 0;
    std::uint64_t prepare_ns = 0;
    std::optional<std::string> notification;  // wire bytes (core/notification_wire.h)
    std::uint64_t tag = 0;
    std::string backend_name;
    // Weak: forgetting or reloading the peer invalidates the request.
    std::weak_ptr<BackendConnection> connection;
    std::shared_ptr<MemoryRegistry> registry;
    // Where completions are counted (cluster/metrics.h); may be null.
    std::shared_ptr<TransferCounters> counters;
  };

  explicit RequestState(Plan plan) : plan_(std::move(plan)) {}
  ~RequestState();

  // With a sink, exactly one Completion is pushed for this call (an error return too).
  Status post(std::shared_ptr<CompletionSink> sink = nullptr);
  TransferState state() const;
  Status error() const;
  Status wait(std::chrono::nanoseconds timeout);
  void cancel();
  TransferTelemetry telemetry() const;
  const std::string& peer() const { return plan_.peer; }
  TransferOp op() const { return plan_.op; }
  std::uint64_t tag() const { return plan_.tag; }

 private:
  std::shared_ptr<TransferJob> current_job() const;
  TransferTelemetry fixed_telemetry() const;  // what does not change between posts
  Status post_locked(const std::shared_ptr<CompletionSink>& sink, std::chrono::steady_clock::time_point t0,
                     bool* completed);

  const Plan plan_;
  mutable std::mutex mu_;
  std::shared_ptr<TransferJob> job_;
  std::chrono::steady_clock::time_point posted_at_{};
  std::uint64_t post_ns_ = 0;
  std::uint32_t posts_ = 0;
};

}  // namespace kvferry::detail
