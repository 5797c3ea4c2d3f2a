// AgentMetrics: the counters behind an agent's Prometheus endpoint.
//
// The hot path touches only atomics: a request carries a pointer to the counters of its
// (backend, peer) pair, found once when the request is created (under the lock that
// choosing its route takes anyway), and its completion adds to them with relaxed atomic
// increments. Rendering takes the series lock; series are never removed (Prometheus
// counters must not go backwards), and past kMaxSeries new pairs share peer="_other".
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry::detail {

// Request latency, post to completion, in cumulative buckets.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBoundsSeconds = {1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                                            5e-3, 1e-2, 2.5e-2, 5e-2, 1e-1, 1.0, 10.0};
  void observe(std::chrono::nanoseconds latency);
  std::array<std::uint64_t, kBoundsSeconds.size() + 1> buckets() const;  // per bucket, +Inf last
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum_seconds() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9; }

 private:
  std::array<std::atomic<std::uint64_t>, kBoundsSeconds.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

struct ErrorCounters {
  std::array<std::atomic<std::uint64_t>, 32> by_code{};
};

// One (backend, peer, op) series.
struct OpCounters {
  std::atomic<std::uint64_t> requests{0};  // completed posts, successful or not
  std::atomic<std::uint64_t> bytes{0};     // of successful posts
  std::atomic<std::uint64_t> errors{0};
  LatencyHistogram latency;
};

struct TransferCounters {
  std::string backend;
  std::string peer;
  OpCounters read;
  OpCounters write;
  std::shared_ptr<ErrorCounters> errors_by_code;
  // A post finished with `result` after `latency`.
  void record(TransferOp op, std::uint64_t bytes, std::chrono::nanoseconds latency, const Status& result);
};

// What the agent knows at render time (not counted on the hot path).
struct AgentGauges {
  std::map<std::string, std::uint64_t> peers_by_state;       // "known", "connected", "lost"
  std::map<std::string, std::uint64_t> registered_bytes;     // by memory kind
  std::map<std::string, std::uint64_t> registered_regions;   // by memory kind
  std::uint64_t inbox_depth = 0;
  std::uint64_t notifications_dropped = 0;
  std::uint64_t metadata_revision = 0;
  // The agent's reactor (core/reactor.h): handlers run, those over Reactor::kSlow, the longest.
  std::uint64_t reactor_runs = 0, reactor_slow = 0;
  double reactor_longest_seconds = 0;
  // Metadata service traffic (absent without a service).
  bool service = false;
  bool service_healthy = false;
  std::uint64_t service_sent = 0, service_received = 0, service_requests = 0, service_warnings = 0;
};

class AgentMetrics {
 public:
  static constexpr std::size_t kMaxSeries = 4096;
  explicit AgentMetrics(std::string agent = {}) : agent_(std::move(agent)) {}
  void set_agent(std::string agent) { agent_ = std::move(agent); }

  // The series of (backend, peer); created on first use. Takes the series lock.
  std::shared_ptr<TransferCounters> counters(const std::string& backend, const std::string& peer);
  void count_peer_event(std::string_view kind);
  // Prometheus text exposition format, version 0.0.4.
  std::string render(const AgentGauges& gauges) const;

 private:
  std::string agent_;
  std::shared_ptr<ErrorCounters> errors_ = std::make_shared<ErrorCounters>();
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<TransferCounters>> series_;
  std::map<std::string, std::uint64_t> peer_events_;  // by kind, guarded by mu_
};

// A label value escaped for the text format (backslash, quote, newline).
std::string escape_label_value(std::string_view value);

}  // namespace kvferry::detail
