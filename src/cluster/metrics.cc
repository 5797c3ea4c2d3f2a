#include "cluster/metrics.h"

#include <cstdio>

namespace kvferry::detail {

namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string labels(std::initializer_list<std::pair<const char*, std::string_view>> kv) {
  std::string out = "{";
  for (const auto& [k, v] : kv) {
    if (out.size() > 1) out += ',';
    out += k;
    out += "=\"";
    out += escape_label_value(v);
    out += '"';
  }
  return out + "}";
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, const std::string& label_text, double value) {
  out += name;
  out += label_text;
  out += ' ';
  out += number(value);
  out += '\n';
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void LatencyHistogram::observe(std::chrono::nanoseconds latency) {
  const double s = static_cast<double>(latency.count()) * 1e-9;
  std::size_t i = 0;
  while (i < kBoundsSeconds.size() && s > kBoundsSeconds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, latency.count())), std::memory_order_relaxed);
}

std::array<std::uint64_t, LatencyHistogram::kBoundsSeconds.size() + 1> LatencyHistogram::buckets() const {
  std::array<std::uint64_t, kBoundsSeconds.size() + 1> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

void TransferCounters::record(TransferOp op, std::uint64_t n, std::chrono::nanoseconds latency, const Status& result) {
  OpCounters& c = op == TransferOp::kRead ? read : write;
  c.requests.fetch_add(1, std::memory_order_relaxed);
  if (result.ok()) {
    c.bytes.fetch_add(n, std::memory_order_relaxed);
    c.latency.observe(latency);
  } else {
    c.errors.fetch_add(1, std::memory_order_relaxed);
    const auto code = static_cast<std::size_t>(result.code());
    if (errors_by_code && code < errors_by_code->by_code.size())
      errors_by_code->by_code[code].fetch_add(1, std::memory_order_relaxed);
  }
}

std::shared_ptr<TransferCounters> AgentMetrics::counters(const std::string& backend, const std::string& peer) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(backend, peer);
  if (series_.size() >= kMaxSeries && !series_.count(key)) key.second = "_other";
  auto& slot = series_[key];
  if (!slot) {
    slot = std::make_shared<TransferCounters>();
    slot->backend = key.first;
    slot->peer = key.second;
    slot->errors_by_code = errors_;
  }
  return slot;
}

void AgentMetrics::count_peer_event(std::string_view kind) {
  std::lock_guard lock(mu_);
  ++peer_events_[std::string(kind)];
}

std::string AgentMetrics::render(const AgentGauges& g) const {
  std::vector<std::shared_ptr<TransferCounters>> series;
  std::map<std::string, std::uint64_t> events;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, c] : series_) series.push_back(c);
    events = peer_events_;
  }
  const std::string agent = agent_;
  std::string out;
  struct Op {
    const char* name;
    OpCounters TransferCounters::*member;
  };
  const Op ops[] = {{"read", &TransferCounters::read}, {"write", &TransferCounters::write}};
  header(out, "kvferry_transfer_requests_total", "counter", "Transfer posts completed (done or failed).");
  for (const auto& c : series)
    for (const Op& op : ops)
      sample(out, "kvferry_transfer_requests_total",
             labels({{"agent", agent}, {"backend", c->backend}, {"peer", c->peer}, {"op", op.name}}),
             static_cast<double>(((*c).*op.member).requests.load(std::memory_order_relaxed)));
  header(out, "kvferry_transfer_bytes_total", "counter", "Bytes moved by transfer posts that completed.");
  for (const auto& c : series)
    for (const Op& op : ops)
      sample(out, "kvferry_transfer_bytes_total",
             labels({{"agent", agent}, {"backend", c->backend}, {"peer", c->peer}, {"op", op.name}}),
             static_cast<double>(((*c).*op.member).bytes.load(std::memory_order_relaxed)));
  header(out, "kvferry_transfer_failures_total", "counter", "Transfer posts that ended in an error.");
  for (const auto& c : series)
    for (const Op& op : ops)
      sample(out, "kvferry_transfer_failures_total",
             labels({{"agent", agent}, {"backend", c->backend}, {"peer", c->peer}, {"op", op.name}}),
             static_cast<double>(((*c).*op.member).errors.load(std::memory_order_relaxed)));
  header(out, "kvferry_transfer_latency_seconds", "histogram", "Post-to-completion time of successful posts.");
  for (const auto& c : series) {
    for (const Op& op : ops) {
      const LatencyHistogram& h = ((*c).*op.member).latency;
      const auto buckets = h.buckets();
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < buckets.size(); ++i) {
        cumulative += buckets[i];
        const std::string le = i < LatencyHistogram::kBoundsSeconds.size()
                                   ? number(LatencyHistogram::kBoundsSeconds[i])
                                   : std::string("+Inf");
        sample(out, "kvferry_transfer_latency_seconds_bucket",
               labels({{"agent", agent}, {"backend", c->backend}, {"peer", c->peer}, {"op", op.name}, {"le", le}}),
               static_cast<double>(cumulative));
      }
      const std::string l = labels({{"agent", agent}, {"backend", c->backend}, {"peer", c->peer}, {"op", op.name}});
      sample(out, "kvferry_transfer_latency_seconds_sum", l, h.sum_seconds());
      sample(out, "kvferry_transfer_latency_seconds_count", l, static_cast<double>(cumulative));
    }
  }
  header(out, "kvferry_errors_total", "counter", "Failed transfer posts by status code.");
  for (std::size_t code = 1; code <= static_cast<std::size_t>(StatusCode::kInternal); ++code) {
    sample(out, "kvferry_errors_total",
           labels({{"agent", agent}, {"code", to_string(static_cast<StatusCode>(code))}}),
           static_cast<double>(errors_->by_code[code].load(std::memory_order_relaxed)));
  }
  header(out, "kvferry_peers", "gauge", "Loaded peers by state.");
  for (const auto& [state, n] : g.peers_by_state)
    sample(out, "kvferry_peers", labels({{"agent", agent}, {"state", state}}), static_cast<double>(n));
  header(out, "kvferry_peer_events_total", "counter", "Peers joined, updated, restarted, left.");
  for (const auto& [kind, n] : events)
    sample(out, "kvferry_peer_events_total", labels({{"agent", agent}, {"kind", kind}}), static_cast<double>(n));
  header(out, "kvferry_inbox_notifications", "gauge", "Notifications waiting in the inbox.");
  sample(out, "kvferry_inbox_notifications", labels({{"agent", agent}}), static_cast<double>(g.inbox_depth));
  header(out, "kvferry_inbox_dropped_total", "counter", "Notifications dropped because the inbox was full.");
  sample(out, "kvferry_inbox_dropped_total", labels({{"agent", agent}}), static_cast<double>(g.notifications_dropped));
  header(out, "kvferry_registered_bytes", "gauge", "Registered memory by kind.");
  for (const auto& [kind, n] : g.registered_bytes)
    sample(out, "kvferry_registered_bytes", labels({{"agent", agent}, {"kind", kind}}), static_cast<double>(n));
  header(out, "kvferry_registered_regions", "gauge", "Registered regions by kind.");
  for (const auto& [kind, n] : g.registered_regions)
    sample(out, "kvferry_registered_regions", labels({{"agent", agent}, {"kind", kind}}), static_cast<double>(n));
  header(out, "kvferry_metadata_revision", "gauge", "Revision of this agent's published metadata.");
  sample(out, "kvferry_metadata_revision", labels({{"agent", agent}}), static_cast<double>(g.metadata_revision));
  header(out, "kvferry_reactor_handlers_total", "counter", "Handlers, timers and tasks the agent's event loop ran.");
  sample(out, "kvferry_reactor_handlers_total", labels({{"agent", agent}}), static_cast<double>(g.reactor_runs));
  header(out, "kvferry_reactor_slow_handlers_total", "counter",
         "Event-loop handlers that ran longer than 50 ms (each one delayed every backend's progress).");
  sample(out, "kvferry_reactor_slow_handlers_total", labels({{"agent", agent}}), static_cast<double>(g.reactor_slow));
  header(out, "kvferry_reactor_longest_handler_seconds", "gauge", "The longest event-loop handler so far.");
  sample(out, "kvferry_reactor_longest_handler_seconds", labels({{"agent", agent}}), g.reactor_longest_seconds);
  if (g.service) {
    header(out, "kvferry_metadata_service_up", "gauge", "1 if the metadata service answered the last renewal.");
    sample(out, "kvferry_metadata_service_up", labels({{"agent", agent}}), g.service_healthy ? 1 : 0);
    header(out, "kvferry_metadata_service_bytes_total", "counter", "HTTP bytes exchanged with the metadata service.");
    sample(out, "kvferry_metadata_service_bytes_total", labels({{"agent", agent}, {"direction", "sent"}}),
           static_cast<double>(g.service_sent));
    sample(out, "kvferry_metadata_service_bytes_total", labels({{"agent", agent}, {"direction", "received"}}),
           static_cast<double>(g.service_received));
    header(out, "kvferry_metadata_service_requests_total", "counter", "HTTP requests made to the metadata service.");
    sample(out, "kvferry_metadata_service_requests_total", labels({{"agent", agent}}),
           static_cast<double>(g.service_requests));
    header(out, "kvferry_metadata_service_warnings_total", "counter",
           "Metadata service problems recovered from (unreachable, bad entries).");
    sample(out, "kvferry_metadata_service_warnings_total", labels({{"agent", agent}}),
           static_cast<double>(g.service_warnings));
  }
  return out;
}

}  // namespace kvferry::detail
