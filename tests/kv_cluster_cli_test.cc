// `kvferry serve` and `kvferry pull` meeting through etcd alone: no address is given but
// the metadata service's URL. Three clients pull verified blocks, the server's metrics
// read back with `kvferry stats`, then the server is killed (SIGKILL: no goodbye) and
// every client reports it within the lease.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "etcd_server.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(KvCluster, ServeAndThreePullsMeetThroughEtcdAndSeeTheServerDie) {
  if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built: " << cli_path();
  std::string why;
  auto etcd = EtcdServer::start(&why);
  if (!etcd) GTEST_SKIP() << "no etcd: " << why;
  const std::string url = etcd->url("kv-cli");
  const std::vector<std::string> pool = {"--layers", "4", "--pool-blocks", "64"};
  constexpr int kLeaseS = 2;

  std::vector<std::string> serve_args = {"serve", "--metadata", url, "--lease-s", std::to_string(kLeaseS),
                                         "--backend", "tcp", "--metrics", "127.0.0.1:0", "--json"};
  serve_args.insert(serve_args.end(), pool.begin(), pool.end());
  auto server = Cli::start(serve_args);
  ASSERT_TRUE(server);
  const auto listening = server->line_with("\"listening\"", 30s);
  ASSERT_TRUE(listening) << server->err();
  const nlohmann::json event = nlohmann::json::parse(*listening);
  EXPECT_FALSE(event.contains("port")) << "no side channel was asked for: " << *listening;
  EXPECT_EQ(event.value("metadata", ""), url);
  const std::string metrics = event.value("metrics", "");
  ASSERT_FALSE(metrics.empty()) << *listening;

  std::vector<std::unique_ptr<Cli>> pulls;
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> args = {"pull",    "--metadata", url,       "--lease-s", std::to_string(kLeaseS),
                                     "--tokens", "256",       "--steps", "2",         "--hold-s",
                                     "60",       "--json"};
    args.insert(args.end(), pool.begin(), pool.end());
    pulls.push_back(Cli::start(args));
    ASSERT_TRUE(pulls.back());
  }
  for (auto& pull : pulls) {
    const auto result = pull->line_with("\"verified\"", 60s);
    ASSERT_TRUE(result) << "no result: " << pull->err();
    const nlohmann::json r = nlohmann::json::parse(*result, nullptr, false);
    ASSERT_TRUE(r.is_object()) << *result;
    EXPECT_TRUE(r.value("verified", false)) << *result;
    EXPECT_GT(r.value("bytes", 0ull), 0ull) << *result;
  }

  // The server's metrics, read back as a table.
  auto stats = Cli::start({"stats", metrics});
  ASSERT_TRUE(stats);
  ASSERT_EQ(stats->wait_exit(20s), std::optional<int>(0)) << stats->err();
  EXPECT_NE(stats->out().find("kvferry_registered_bytes"), std::string::npos) << stats->out();
  EXPECT_NE(stats->out().find("kvferry_metadata_service_up"), std::string::npos) << stats->out();

  // No goodbye: the clients learn of the death from the lease running out.
  const auto killed_at = Clock::now();
  server->signal(SIGKILL);
  for (auto& pull : pulls) {
    const auto left = pull->line_with("server_left", std::chrono::seconds(kLeaseS + 4));
    ASSERT_TRUE(left) << "a client did not report the dead server: " << pull->err();
    const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
    EXPECT_LE(seconds, kLeaseS) << "reported after " << seconds << " s";
    std::printf("a client reported the killed server after %.2f s (lease %d s)\n", seconds, kLeaseS);
    EXPECT_EQ(pull->wait_exit(10s), std::optional<int>(1));
    EXPECT_NE(pull->err().find("lease ran out"), std::string::npos) << pull->err();
  }
}

}  // namespace
}  // namespace kvferry::testing
