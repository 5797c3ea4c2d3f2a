// kvferry/metrics.h — reading an agent's metrics (AgentOptions::metrics_address).
//
// An agent with a metrics address serves the Prometheus text exposition format at
// http://ADDRESS:PORT/metrics; any Prometheus scraper reads it. These helpers read it
// back without one (`kvferry stats`, tests). Stateless and thread-safe; input is
// untrusted (bounded, and malformed text is an error naming the line).
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/status.h"

namespace kvferry {

struct MetricSample {
  std::string name;                           // e.g. "kvferry_transfer_bytes_total"
  std::map<std::string, std::string> labels;  // e.g. {"backend": "tcp", "op": "read"}
  double value = 0;
};

// Parses the text format (comments and blank lines skipped; an optional timestamp
// after the value ignored).
Result<std::vector<MetricSample>> parse_metrics_text(std::string_view text);

// GET http://HOST:PORT/metrics within `timeout`: the body.
Result<std::string> scrape_metrics(const std::string& host_port,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace kvferry
