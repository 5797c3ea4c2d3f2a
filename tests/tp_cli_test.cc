// Heterogeneous tensor parallelism through the real tool: `kvferry tp-demo` starts P
// prefill and D decode processes that talk over real sockets; every decode rank checks
// every element of its heads. Prompts are small (2-core CI). Also a prefill rank killed
// while the decode ranks wait on it: the error names it, within the peer timeout.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

class TpDemo : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built: " << cli_path();
  }
  // Runs tp-demo --json to its end; one JSON object per decode rank.
  std::vector<nlohmann::json> run(std::vector<std::string> args, int expected_code = 0) {
    args.insert(args.begin(), {"tp-demo", "--json", "--model", "llama-3.1-8b"});
    auto cli = Cli::start(args);
    EXPECT_TRUE(cli);
    if (!cli) return {};
    const auto code = cli->wait_exit(90s);
    EXPECT_EQ(code, std::optional<int>(expected_code)) << cli->out() << cli->err();
    std::vector<nlohmann::json> rows;
    std::size_t at = 0;
    const std::string& out = cli->out();
    while (at < out.size()) {
      const std::size_t end = out.find('\n', at);
      const auto j = nlohmann::json::parse(out.substr(at, end - at), nullptr, false);
      if (j.is_object()) rows.push_back(j);
      if (end == std::string::npos) break;
      at = end + 1;
    }
    err_ = cli->err();
    return rows;
  }
  // Every decode rank verified, with `sources` senders each.
  void expect_verified(const std::vector<nlohmann::json>& rows, std::size_t decode_tp, std::size_t sources,
                       const std::string& path = {}) {
    ASSERT_EQ(rows.size(), decode_tp) << err_;
    for (std::size_t d = 0; d < rows.size(); ++d) {
      SCOPED_TRACE(rows[d].dump());
      EXPECT_EQ(rows[d].value("decode_rank", 99u), d);
      EXPECT_TRUE(rows[d].value("verified", false));
      EXPECT_EQ(rows[d].value("sources", 0u), sources);
      EXPECT_GT(rows[d].value("bytes", 0ull), 0u);
      if (!path.empty()) {
        EXPECT_EQ(rows[d].value("path", ""), path);
      }
    }
  }
  std::string err_;
};

TEST_F(TpDemo, TwoPrefillRanksIntoOneDecodeRankByHostStaging) {
  const auto rows = run({"--prefill-tp", "2", "--decode-tp", "1", "--tokens", "77", "--path", "host"});
  expect_verified(rows, 1, 2, "host");
  if (!rows.empty()) {
    EXPECT_EQ(rows[0].value("bytes", 0ull), 77ull * 32 * 2 * 8 * 128 * 2);
  }
}

TEST_F(TpDemo, OnePrefillRankIntoTwoDecodeRanksDirect) {
  expect_verified(run({"--prefill-tp", "1", "--decode-tp", "2", "--tokens", "70", "--path", "direct",
                       "--src-layout", "vllm-hnd", "--dst-layout", "vllm-hnd"}),
                  2, 1, "direct");
}

// The processes whose parent is `parent` (from /proc/<pid>/stat).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const std::size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

// A rank stopped and continued (a loaded machine's scheduler, a debugger, a VM pause) sees
// its blocking waits return EINTR on Linux; the decode ranks' wait for the start signal
// once took that for its end ("no start signal ... within 60 s" after a few seconds).
TEST_F(TpDemo, RanksStoppedAndContinuedWhileStartingStillFinish) {
  auto cli = Cli::start({"tp-demo", "--json", "--model", "llama-3.1-8b", "--prefill-tp", "1", "--decode-tp", "2",
                         "--tokens", "70", "--path", "direct", "--src-layout", "vllm-hnd", "--dst-layout", "vllm-hnd"});
  ASSERT_TRUE(cli);
  std::atomic<bool> ended{false};
  std::thread pauser([&] {
    const auto until = std::chrono::steady_clock::now() + 4s;
    while (!ended && std::chrono::steady_clock::now() < until) {
      for (pid_t demo : children_of(getpid())) {
        for (pid_t rank : children_of(demo)) {
          ::kill(rank, SIGSTOP);
          std::this_thread::sleep_for(2ms);
          ::kill(rank, SIGCONT);
        }
      }
      std::this_thread::sleep_for(10ms);
    }
  });
  const auto code = cli->wait_exit(90s);
  ended = true;
  pauser.join();
  EXPECT_EQ(code, std::optional<int>(0)) << cli->out() << cli->err();
  EXPECT_EQ(cli->out().find("start signal"), std::string::npos) << cli->out();
}

TEST_F(TpDemo, FourIntoTwoOverShmChunked) {
  expect_verified(run({"--prefill-tp", "4", "--decode-tp", "2", "--tokens", "96", "--backend", "shm",
                       "--chunk-tokens", "32", "--path", "host"}),
                  2, 2, "host");
}

// The direct path's strided form: hnd block units with chunks that start and end inside
// blocks (their partial blocks go by the explicit plan), and nhd token units, over both
// host backends.
TEST_F(TpDemo, DirectStridedUnitsWithUnalignedChunks) {
  for (const char* backend : {"shm", "tcp"}) {
    expect_verified(run({"--prefill-tp", "4", "--decode-tp", "2", "--tokens", "100", "--backend", backend,
                         "--src-layout", "vllm-hnd", "--dst-layout", "vllm-hnd", "--chunk-tokens", "37", "--path",
                         "direct"}),
                    2, 2, "direct");
    expect_verified(run({"--prefill-tp", "2", "--decode-tp", "4", "--tokens", "77", "--backend", backend,
                         "--src-layout", "vllm-nhd", "--dst-layout", "vllm-nhd", "--dst-block-tokens", "32",
                         "--chunk-tokens", "30", "--path", "direct"}),
                    4, 1, "direct");
  }
}

// kAuto counts the backend the bytes take: vllm-nhd pools cut a share into 512 B token
// rows, which shm copies at memcpy cost but tcp's kernel copies as one iovec each at a
// row stride (a little more than host staging's two passes), so auto takes direct on shm
// and host staging on tcp; vllm-hnd's 8 KiB block rows go direct on both.
TEST_F(TpDemo, AutoCountsTheBackendTheBytesTake) {
  const std::vector<std::string> nhd = {"--src-layout", "vllm-nhd", "--dst-layout", "vllm-nhd"};
  const std::vector<std::string> hnd = {"--src-layout", "vllm-hnd", "--dst-layout", "vllm-hnd"};
  struct Case {
    const char* backend;
    const std::vector<std::string>& layouts;
    const char* path;
  };
  for (const Case& c : {Case{"shm", nhd, "direct"}, Case{"tcp", nhd, "host"}, Case{"tcp", hnd, "direct"}}) {
    SCOPED_TRACE(std::string(c.backend) + " " + c.layouts[1] + " -> " + c.path);
    std::vector<std::string> args = {"--prefill-tp", "4", "--decode-tp", "2", "--tokens", "64", "--backend", c.backend,
                                     "--path", "auto"};
    args.insert(args.end(), c.layouts.begin(), c.layouts.end());
    expect_verified(run(args), 2, 2, c.path);
  }
}

// Pieces of 8 MiB and more: shm and the head gather/scatter copy them with streaming
// stores. Every path, every element verified.
TEST_F(TpDemo, LargePiecesOverShm) {
  for (const char* layout : {"vllm-nhd", "vllm-hnd"}) {
    for (const char* path : {"direct", "host"}) {
      SCOPED_TRACE(std::string(layout) + " " + path);
      expect_verified(run({"--prefill-tp", "2", "--decode-tp", "1", "--tokens", "300", "--backend", "shm",
                           "--src-layout", layout, "--dst-layout", layout, "--path", path, "--requests", "2"}),
                      1, 2, path);
    }
  }
}

TEST_F(TpDemo, TwoIntoFourAuto) {
  expect_verified(run({"--prefill-tp", "2", "--decode-tp", "4", "--tokens", "50"}), 4, 1);
}

// kv_heads 2 on TP 4: every head lives on two prefill ranks; each decode rank reads one replica.
TEST_F(TpDemo, ReplicatedHeadsFourIntoTwo) {
  const auto rows = run({"--prefill-tp", "4", "--decode-tp", "2", "--kv-heads", "2", "--tokens", "64", "--path", "direct"});
  expect_verified(rows, 2, 1, "direct");
}

TEST_F(TpDemo, LayoutsAndBlockSizesConvert) {
  expect_verified(run({"--prefill-tp", "2", "--decode-tp", "1", "--tokens", "45", "--src-layout", "vllm-hnd",
                       "--src-block-tokens", "16", "--dst-layout", "flashinfer", "--dst-block-tokens", "8", "--path",
                       "host"}),
                  1, 2, "host");
  expect_verified(run({"--prefill-tp", "1", "--decode-tp", "2", "--tokens", "45", "--src-layout", "sglang",
                       "--src-block-tokens", "1", "--dst-layout", "vllm-nhd", "--dst-block-tokens", "16", "--path",
                       "direct", "--chunk-tokens", "20"}),
                  2, 1, "direct");
}

TEST_F(TpDemo, MlaLatentFromOnePrefillRankEach) {
  auto cli = Cli::start({"tp-demo", "--json", "--model", "deepseek-v3", "--prefill-tp", "2", "--decode-tp", "2",
                         "--tokens", "70", "--path", "host"});
  ASSERT_TRUE(cli);
  EXPECT_EQ(cli->wait_exit(90s), std::optional<int>(0)) << cli->out() << cli->err();
  EXPECT_NE(cli->out().find("\"verified\":true"), std::string::npos) << cli->out();
}

TEST_F(TpDemo, KilledPrefillRankIsNamedWithinThePeerTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto rows = run({"--prefill-tp", "2", "--decode-tp", "1", "--tokens", "96", "--chunk-tokens", "32", "--path",
                         "host", "--peer-timeout-ms", "1000", "--kill-prefill-rank", "1"},
                        1);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(rows.size(), 1u) << err_;
  const std::string error = rows[0].value("error", "");
  EXPECT_FALSE(rows[0].value("verified", true));
  EXPECT_NE(error.find("prefill rank 1"), std::string::npos) << error;
  EXPECT_NE(error.find("lost"), std::string::npos) << error;
  EXPECT_NE(error.find("tp-prefill-"), std::string::npos) << error;  // the agent's name
  EXPECT_LT(elapsed, 30s);
}

// --param reaches every rank's agent: a valid setting moves the prompt, one the backend
// refuses fails the run with the backend's reason, a malformed one is refused up front.
TEST_F(TpDemo, BackendSettingsReachEveryRank) {
  expect_verified(run({"--prefill-tp", "2", "--decode-tp", "1", "--tokens", "64", "--backend", "shm", "--path",
                       "direct", "--param", "shm.copy_threads=1"}),
                  1, 2, "direct");
  auto refused = Cli::start({"tp-demo", "--model", "llama-3.1-8b", "--prefill-tp", "2", "--decode-tp", "1", "--tokens",
                             "64", "--backend", "shm", "--param", "shm.copy_threads=0"});
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->wait_exit(60s), std::optional<int>(0));
  EXPECT_NE((refused->out() + refused->err()).find("copy_threads"), std::string::npos) << refused->out() << refused->err();
  auto malformed = Cli::start({"tp-demo", "--model", "llama-3.1-8b", "--param", "copy_threads"});
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->wait_exit(30s), std::optional<int>(2));
  EXPECT_NE(malformed->err().find("KEY=VALUE"), std::string::npos) << malformed->err();
}

TEST_F(TpDemo, RefusesHeadsThatDoNotSplit) {
  auto cli = Cli::start({"tp-demo", "--model", "llama-3.1-8b", "--kv-heads", "6", "--prefill-tp", "4"});
  ASSERT_TRUE(cli);
  EXPECT_EQ(cli->wait_exit(30s), std::optional<int>(2));
  EXPECT_NE(cli->err().find("6"), std::string::npos) << cli->err();
}

}  // namespace
}  // namespace kvferry::testing
