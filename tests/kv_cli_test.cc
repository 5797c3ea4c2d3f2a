// The KV subcommands of the real `kvferry` tool, run as processes. `serve` / `pull` on
// small pools (4 layers x 64 blocks): clients one after another and at the same time,
// a geometry mismatch refused by both sides, a server killed mid-pull, a clean stop on
// SIGTERM. `estimate`: its arithmetic and its chart. Every child is killed and reaped
// on every path.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_runner.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kSmallPool = {"--layers", "4", "--pool-blocks", "64"};

std::vector<std::string> with_pool(std::vector<std::string> args,
                                   const std::vector<std::string>& pool = kSmallPool) {
  args.insert(args.end(), pool.begin(), pool.end());
  return args;
}

class KvServePull : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built: " << cli_path();
  }
  // Starts a server on a free port (offering `backends`; none: all it can); returns
  // its "HOST:PORT".
  std::string start_server(const std::vector<std::string>& backends = {"tcp"}) {
    std::vector<std::string> args = {"serve", "--listen", "127.0.0.1:0", "--json"};
    for (const std::string& backend : backends) args.insert(args.end(), {"--backend", backend});
    server_ = Cli::start(with_pool(args));
    EXPECT_TRUE(server_);
    if (!server_) return {};
    const auto line = server_->line_with("\"listening\"", 20s);
    EXPECT_TRUE(line) << "server did not start: " << server_->err();
    if (!line) return {};
    const nlohmann::json event = nlohmann::json::parse(*line);
    return "127.0.0.1:" + std::to_string(event["port"].get<int>());
  }
  std::unique_ptr<Cli> start_pull(const std::string& peer, std::vector<std::string> extra = {},
                                  int steps = 3) {
    std::vector<std::string> args =
        with_pool({"pull", "--peer", peer, "--tokens", "256", "--steps", std::to_string(steps), "--json"});
    args.insert(args.end(), extra.begin(), extra.end());
    return Cli::start(args);
  }
  // Runs a pull to its end and returns its JSON result (checks exit code 0).
  nlohmann::json pull_to_end(const std::string& peer, std::vector<std::string> extra = {}) {
    auto pull = start_pull(peer, std::move(extra));
    const auto code = pull->wait_exit(30s);
    EXPECT_EQ(code, std::optional<int>(0)) << pull->err();
    const auto json = nlohmann::json::parse(pull->out(), nullptr, false);
    EXPECT_TRUE(json.is_object()) << pull->out();
    return json;
  }

  std::unique_ptr<Cli> server_;
};

TEST_F(KvServePull, ClientsOneAfterAnotherThenCleanStopOnSigterm) {
  const std::string peer = start_server();
  ASSERT_FALSE(peer.empty());
  for (const char* pattern : {"scattered", "contiguous"}) {
    const nlohmann::json result = pull_to_end(peer, {"--pattern", pattern, "--transfers", "2"});
    EXPECT_TRUE(result.value("verified", false)) << result.dump();
    EXPECT_EQ(result["steps"].size(), 4u);  // one warm-up + 3
    EXPECT_EQ(result.value("bytes", 0ull), 16ull * 4 * 64 * 1024);
  }
  // A prefix-cache hit: 100 of 256 tokens cached -> 6 whole blocks stay, 10 move.
  const nlohmann::json partial = pull_to_end(peer, {"--cached-tokens", "100"});
  EXPECT_EQ(partial.value("blocks_pulled", 0), 10);
  EXPECT_TRUE(partial.value("verified", false));

  server_->signal(SIGTERM);
  const auto started = Clock::now();
  EXPECT_EQ(server_->wait_exit(10s), std::optional<int>(0)) << server_->err();
  EXPECT_LT(Clock::now() - started, 3s);
  EXPECT_NE(server_->out().find("\"event\":\"stopped\""), std::string::npos) << server_->out();
  EXPECT_NE(server_->out().find("\"steps\":12"), std::string::npos) << server_->out();
}

TEST_F(KvServePull, ClientsAtTheSameTime) {
  const std::string peer = start_server();
  ASSERT_FALSE(peer.empty());
  std::vector<std::unique_ptr<Cli>> pulls;
  for (int i = 0; i < 3; ++i) pulls.push_back(start_pull(peer, {"--seed", std::to_string(i + 1)}, 5));
  for (auto& pull : pulls) {
    EXPECT_EQ(pull->wait_exit(30s), std::optional<int>(0)) << pull->err();
    EXPECT_NE(pull->out().find("\"verified\":true"), std::string::npos) << pull->out();
  }
  EXPECT_TRUE(server_->line_with("\"done\"", 5s));
  server_->signal(SIGINT);
  EXPECT_EQ(server_->wait_exit(10s), std::optional<int>(0));
}

TEST_F(KvServePull, GeometryMismatchIsRefusedByBothSides) {
  const std::string peer = start_server();
  ASSERT_FALSE(peer.empty());
  auto pull = start_pull(peer, {"--kv-heads", "4", "--dtype", "fp16"});
  const auto code = pull->wait_exit(20s);
  EXPECT_EQ(code, std::optional<int>(1));
  EXPECT_NE(pull->err().find("kv geometry mismatch"), std::string::npos) << pull->err();
  EXPECT_NE(pull->err().find("kv_heads 4 vs 8, dtype fp16 vs bf16"), std::string::npos) << pull->err();
  const auto refused = server_->line_with("\"refused\"", 5s);
  ASSERT_TRUE(refused) << server_->out();
  EXPECT_NE(refused->find("kv_heads 8 vs 4"), std::string::npos) << *refused;
  // The server keeps serving compatible clients.
  EXPECT_TRUE(pull_to_end(peer).value("verified", false));
}

TEST_F(KvServePull, ServerKilledMidPullIsAClearErrorWithinTheBound) {
  const std::string peer = start_server();
  ASSERT_FALSE(peer.empty());
  auto pull = Cli::start(with_pool({"pull", "--peer", peer, "--tokens", "1024", "--steps", "1000000",
                                    "--peer-timeout-ms", "2000", "--timeout-s", "20"}));
  ASSERT_TRUE(pull->line_with("(warm-up)", 20s)) << pull->err();
  ASSERT_TRUE(pull->line_with("yes", 10s));  // measured steps are running
  server_->signal(SIGKILL);
  const auto killed_at = Clock::now();
  const auto code = pull->wait_exit(15s);
  const auto took = Clock::now() - killed_at;
  ASSERT_TRUE(code) << "the client did not notice its server died";
  EXPECT_NE(*code, 0);
  EXPECT_LT(took, 5s) << "bound: peer timeout 2 s plus slack";
  EXPECT_NE(pull->err().find("kvferry pull: step"), std::string::npos) << pull->err();
  EXPECT_NE(pull->err().find("server"), std::string::npos) << pull->err();
}

// Every backend here that joins two processes (tcp; shm when built), from one server
// offering them all (its pool then comes from shared memory, for shm).
TEST_F(KvServePull, OverEveryCrossProcessBackend) {
  auto info = Cli::start({"info", "--json"});
  ASSERT_EQ(info->wait_exit(20s), std::optional<int>(0));
  std::vector<std::string> backends;
  const nlohmann::json listed = nlohmann::json::parse(info->out());
  for (const auto& b : listed["backends"])
    if (b.value("usable", false) && b.value("crosses_processes", false)) backends.push_back(b["name"]);
  ASSERT_FALSE(backends.empty()) << info->out();
  const std::string peer = start_server({});
  ASSERT_FALSE(peer.empty());
  for (const std::string& backend : backends) {
    const nlohmann::json result = pull_to_end(peer, {"--backend", backend});
    EXPECT_TRUE(result.value("verified", false)) << backend << ": " << result.dump();
    EXPECT_EQ(result.value("backend", ""), backend);
  }
}

TEST_F(KvServePull, NoServerIsAClearError) {
  auto pull = Cli::start(with_pool({"pull", "--peer", "127.0.0.1:1", "--tokens", "64"}));
  EXPECT_EQ(pull->wait_exit(20s), std::optional<int>(1));
  EXPECT_NE(pull->err().find("is `kvferry serve` running there?"), std::string::npos) << pull->err();
}

TEST(KvEstimateCli, TransferShareFromMeasuredAndAssumedBandwidths) {
  if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built";
  const std::string dir = ::testing::TempDir();
  const std::string bench = dir + "/kv_estimate_bench.json", plot = dir + "/kv_estimate.svg";
  {
    std::ofstream out(bench);  // two cases of one backend: the read of the larger request wins
    out << R"({"backend":"tcp","op":"write","bytes":671088640,"gbps":9.0})"
        << "\n"
        << R"({"backend":"tcp","op":"read","bytes":1048576,"gbps":1.0})"
        << "\n"
        << R"({"backend":"tcp","op":"read","bytes":671088640,"gbps":2.0})"
        << "\n"
        << R"({"backend":"tcp","op":"write+notify","bytes":8,"gbps":0.0,"p50_us":1000})"
        << "\n";
  }
  auto run =
      Cli::start({"estimate", "--bench", bench, "--assume", "fast=20", "--tokens", "4096,1024",
                  "--prefill-tokens-per-s", "4096", "--decode-step-ms", "10", "--plot", plot, "--json"});
  ASSERT_EQ(run->wait_exit(20s), std::optional<int>(0)) << run->err();
  const nlohmann::json j = nlohmann::json::parse(run->out());
  ASSERT_EQ(j["paths"].size(), 2u);
  EXPECT_EQ(j["paths"][0]["gbps"], 2.0);
  EXPECT_EQ(j["paths"][0]["latency_us"], 1000.0);
  const nlohmann::json& row = j["rows"][1];  // sorted: 1024, 4096
  EXPECT_EQ(row["tokens"], 4096);
  EXPECT_EQ(row["kv_bytes"], 671088640);  // 256 blocks x 40 layers x 64 KiB
  EXPECT_DOUBLE_EQ(row["prefill_ms"].get<double>(), 1000.0);
  const double transfer = 1.0 + 671088640 / 2e9 * 1e3;  // latency + bytes / bandwidth
  EXPECT_DOUBLE_EQ(row["paths"][0]["transfer_ms"].get<double>(), transfer);
  EXPECT_DOUBLE_EQ(row["paths"][0]["share"].get<double>(), transfer / (1000.0 + transfer + 10.0));
  std::ifstream svg(plot);
  const std::string chart((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_NE(chart.find("<svg"), std::string::npos);
  EXPECT_NE(chart.find("tcp 2.0 GB/s"), std::string::npos);
  EXPECT_NE(chart.find("fast 20.0 GB/s"), std::string::npos);
}

TEST(KvEstimateCli, WithoutBandwidthItSaysWhatToGive) {
  if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built";
  auto run = Cli::start({"estimate", "--plot", ""});
  EXPECT_EQ(run->wait_exit(20s), std::optional<int>(2));
  EXPECT_NE(run->err().find("--bench FILE"), std::string::npos) << run->err();
}

}  // namespace
}  // namespace kvferry::testing
