// The Prometheus endpoint (AgentOptions::metrics_address), scraped over HTTP and parsed
// back: every figure checked against what the test did.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "kvferry/metrics.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

double value_of(const std::vector<MetricSample>& samples, const std::string& name,
                const std::map<std::string, std::string>& labels) {
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) return s.value;
  }
  return -1;
}

TEST(Metrics, EndpointCountsTransfersPeersMemoryAndErrors) {
  AgentOptions o;
  o.name = "metered";
  o.backends = {"tcp"};
  o.metrics_address = "127.0.0.1:0";
  auto created = Agent::create(o);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  auto a = std::move(created).value();
  auto b = make_agent("metered-peer", "tcp");
  ASSERT_TRUE(b);
  auto port = a->metrics_port();
  ASSERT_TRUE(port.ok());
  Buffer src(1 << 20), dst(1 << 20);
  src.randomize(1);
  ASSERT_TRUE(b->register_memory(src.whole()).ok());
  ASSERT_TRUE(a->register_memory(dst.whole()).ok());
  ASSERT_TRUE(a->load_remote(*b->local_metadata()).ok());
  ASSERT_TRUE(b->load_remote(*a->local_metadata()).ok());
  constexpr int kReads = 5;
  for (int i = 0; i < kReads; ++i) {
    auto r = a->create_transfer(TransferOp::kRead, dst.whole(), "metered-peer", src.whole());
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(r->post().ok());
    ASSERT_TRUE(r->wait(10s).ok());
  }
  auto w = a->create_transfer(TransferOp::kWrite, dst.whole(), "metered-peer", src.whole());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->post().ok());
  ASSERT_TRUE(w->wait(10s).ok());
  // A failing one: the peer deregisters what we write to; the target refuses it.
  Buffer gone(4096);
  ASSERT_TRUE(b->register_memory(gone.whole()).ok());
  ASSERT_TRUE(a->load_remote(*b->local_metadata()).ok());
  ASSERT_TRUE(b->deregister_memory(gone.whole()).ok());
  DescriptorList small(MemoryKind::kDram, {Descriptor{dst.addr(), 4096, 0}});
  auto bad = a->create_transfer(TransferOp::kWrite, small, "metered-peer", gone.whole());
  ASSERT_TRUE(bad.ok()) << bad.status().to_string();
  ASSERT_TRUE(bad->post().ok());
  const Status failed = bad->wait(10s);
  ASSERT_FALSE(failed.ok());

  auto text = scrape_metrics("127.0.0.1:" + std::to_string(*port), 5s);
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  auto samples = parse_metrics_text(*text);
  ASSERT_TRUE(samples.ok()) << samples.status().to_string();
  const std::map<std::string, std::string> read = {{"backend", "tcp"}, {"peer", "metered-peer"}, {"op", "read"}};
  const std::map<std::string, std::string> write = {{"backend", "tcp"}, {"peer", "metered-peer"}, {"op", "write"}};
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_requests_total", read), kReads);
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_bytes_total", read), double(kReads) * src.size());
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_requests_total", write), 2);
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_bytes_total", write), double(src.size()));
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_failures_total", write), 1);
  EXPECT_EQ(value_of(*samples, "kvferry_errors_total", {{"code", std::string(to_string(failed.code()))}}), 1);
  // The histogram: cumulative buckets ending in +Inf == count == successful reads.
  auto inf = read;
  inf["le"] = "+Inf";
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_latency_seconds_bucket", inf), kReads);
  EXPECT_EQ(value_of(*samples, "kvferry_transfer_latency_seconds_count", read), kReads);
  EXPECT_GT(value_of(*samples, "kvferry_transfer_latency_seconds_sum", read), 0);
  double previous = 0;
  for (const auto& s : *samples) {
    if (s.name != "kvferry_transfer_latency_seconds_bucket" || s.labels.at("op") != "read") continue;
    EXPECT_GE(s.value, previous) << "buckets must be cumulative";
    previous = s.value;
  }
  EXPECT_EQ(value_of(*samples, "kvferry_peers", {{"state", "connected"}}), 1);
  EXPECT_EQ(value_of(*samples, "kvferry_registered_bytes", {{"kind", "dram"}}), double(dst.size()));
  EXPECT_EQ(value_of(*samples, "kvferry_registered_regions", {{"kind", "dram"}}), 1);
  // Inbox depth: a notification waiting.
  ASSERT_TRUE(b->notify("metered", "hi").ok());
  ASSERT_TRUE(a->wait_for_notifications(5s));
  auto again = parse_metrics_text(a->metrics_text());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(value_of(*again, "kvferry_inbox_notifications", {}), 1);
  EXPECT_EQ(value_of(*again, "kvferry_peer_events_total", {{"kind", "joined"}}), 1);
}

TEST(Metrics, ParserRejectsMalformedTextNamingTheLine) {
  auto ok = parse_metrics_text("# HELP x y\nx{a=\"q\\\"uote\",b=\"2\"} 3.5 1700000000\ny +Inf\n");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].labels.at("a"), "q\"uote");
  EXPECT_EQ((*ok)[0].value, 3.5);
  for (const char* bad : {"x{a=\"1\" 2\n", "x 1\n{ 2\n", "x{a=1} 2\n", "x abc\n", "x\n"}) {
    auto r = parse_metrics_text(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << bad;
  }
  EXPECT_NE(parse_metrics_text("x 1\ny{ 2\n").status().message().find("line 2"), std::string::npos);
  AgentOptions o;
  o.name = "no-endpoint";
  o.backends = {"tcp"};
  auto a = Agent::create(o);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->metrics_port().status().code(), StatusCode::kNotFound);
  o.metrics_address = "nonsense";
  EXPECT_FALSE(Agent::create(o).ok());
}

}  // namespace
}  // namespace kvferry::testing
