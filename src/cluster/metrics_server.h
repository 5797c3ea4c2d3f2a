// MetricsServer: a minimal HTTP/1.0 endpoint for Prometheus scrapers. GET /metrics answers
// the text the callback renders; anything else is 404. One thread, one connection at a
// time, every read and write bounded (a slow or silent client is dropped after 2 s), the
// request capped at 8 KiB: a scraper is a trusted operator tool, but the port is not.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/socket_util.h"
#include "kvferry/status.h"

namespace kvferry::detail {

class MetricsServer {
 public:
  // "ADDRESS:PORT" (port 0: a free one).
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& address, std::function<std::string()> render);
  ~MetricsServer();  // stops the thread
  std::uint16_t port() const { return port_; }

 private:
  MetricsServer() = default;
  void run();
  void serve(int fd);

  UniqueFd listener_;
  UniqueFd wake_;
  std::uint16_t port_ = 0;
  std::function<std::string()> render_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One GET of http://HOST:PORT/metrics (for `kvferry stats` and tests), within `timeout`.
Result<std::string> scrape_metrics_text(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);

}  // namespace kvferry::detail
