#include "cluster/metrics_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvferry::detail {

namespace {
constexpr std::size_t kMaxRequestBytes = 8 << 10;
constexpr std::chrono::milliseconds kClientLimit{2000};
constexpr std::size_t kMaxScrapeBytes = 64u << 20;
}  // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address,
                                                            std::function<std::string()> render) {
  std::string host;
  std::uint16_t port = 0;
  KVF_RETURN_IF_ERROR(parse_host_port(address, &host, &port).with_context("metrics_address '" + address + "'"));
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  KVF_ASSIGN_OR_RETURN(s->listener_, tcp_listen(host, port, 16));
  KVF_ASSIGN_OR_RETURN(s->port_, local_port(s->listener_.get()));
  KVF_ASSIGN_OR_RETURN(s->wake_, make_eventfd("metrics endpoint"));
  s->render_ = std::move(render);
  s->thread_ = std::thread([p = s.get()] { p->run(); });
  return s;
}

MetricsServer::~MetricsServer() {
  stop_ = true;
  ring_eventfd(wake_.get());
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::run() {
  while (!stop_) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, 1000) <= 0) continue;
    if (fds[1].revents) continue;  // stop_ is checked by the loop
    UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client.valid()) continue;
    serve(client.get());
  }
}

void MetricsServer::serve(int fd) {
  const Deadline deadline = deadline_after(kClientLimit);
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    request.append(buf, static_cast<std::size_t>(n));
    if (request.size() > kMaxRequestBytes) return;
  }
  const bool metrics = request.rfind("GET /metrics ", 0) == 0 || request.rfind("GET /metrics?", 0) == 0 ||
                       request.rfind("GET / ", 0) == 0;
  const std::string body = metrics ? render_() : std::string("not found: try /metrics\n");
  const std::string head = std::string(metrics ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") +
                           "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  if (!send_all(fd, head.data(), head.size(), deadline).ok()) return;
  (void)send_all(fd, body.data(), body.size(), deadline);
}

Result<std::string> scrape_metrics_text(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  const Deadline deadline = deadline_after(timeout);
  const std::string where = host + ":" + std::to_string(port);
  KVF_ASSIGN_OR_RETURN(UniqueFd fd, tcp_connect(host, port, deadline));
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
  KVF_RETURN_IF_ERROR(send_all(fd.get(), request.data(), request.size(), deadline).with_context(where));
  std::string answer;
  char buf[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd.get(), POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0)
      return Timeout("metrics at " + where + ": no complete answer within " + std::to_string(timeout.count()) + " ms");
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return IoErrorFromErrno("metrics at " + where, errno);
    if (n == 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
    if (answer.size() > kMaxScrapeBytes) return Corrupt("metrics at " + where + ": answer exceeds 64 MiB");
  }
  const auto end = answer.find("\r\n\r\n");
  if (answer.rfind("HTTP/1.", 0) != 0 || end == std::string::npos)
    return Corrupt("metrics at " + where + ": not an HTTP answer");
  if (answer.compare(9, 3, "200") != 0)
    return RemoteError("metrics at " + where + ": " + answer.substr(0, answer.find('\r')));
  return answer.substr(end + 4);
}

}  // namespace kvferry::detail
