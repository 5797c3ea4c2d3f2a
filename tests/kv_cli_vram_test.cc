// `kvferry serve`, `pull` and `demo` with --mem vram: the real tool, run as processes.
// Here (no GPU, or a build without CUDA) the refusal is tested: exit code 2 and one
// clear line. The GPU cases skip (GTEST_SKIP) and run on the GPU machine
// (scripts/gpu_check.sh): a vram server and a vram client over cuda_ipc, every byte
// verified; mixed kinds over whatever backend can join them; the demo on GPUs.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "gpu_test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

int gpus_here() {
#ifdef KVFERRY_HAVE_CUDA
  return gpu_count();
#else
  return 0;
#endif
}

#define SKIP_WITHOUT_GPUS(n) \
  if (gpus_here() < (n)) GTEST_SKIP() << "needs " << (n) << " CUDA GPU(s); this machine has " << gpus_here()

const std::vector<std::string> kVramCliPool = {"--layers", "4", "--pool-blocks", "64"};

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

class KvCliVram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(cli_path())) GTEST_SKIP() << "the kvferry tool is not built: " << cli_path();
  }
  // A server on a free port with its pool in `mem` (on GPU 0 for vram), offering every
  // backend it can; returns its "HOST:PORT".
  std::string start_server(const std::string& mem) {
    server_ = Cli::start(
        with({"serve", "--listen", "127.0.0.1:0", "--json", "--mem", mem, "--device", "0"}, kVramCliPool));
    const auto line = server_->line_with("\"listening\"", 30s);
    EXPECT_TRUE(line) << "server did not start: " << server_->err();
    if (!line) return {};
    const nlohmann::json event = nlohmann::json::parse(*line);
    EXPECT_EQ(event.value("mem", ""), mem);
    return "127.0.0.1:" + std::to_string(event["port"].get<int>());
  }
  // A pull of 256 tokens (16 blocks of 4 layers) into a pool in `mem` on the GPU after
  // the server's (the same one on a one-GPU machine).
  std::unique_ptr<Cli> start_pull(const std::string& peer, const std::string& mem, const std::string& backend,
                                  const std::vector<std::string>& extra = {}) {
    const int device = gpus_here() > 1 ? 1 : 0;
    return Cli::start(with(with({"pull", "--peer", peer, "--tokens", "256", "--steps", "3", "--json", "--mem",
                                 mem, "--device", std::to_string(device), "--backend", backend},
                                kVramCliPool),
                           extra));
  }
  void stop_server() {
    server_->signal(SIGTERM);
    EXPECT_EQ(server_->wait_exit(10s), std::optional<int>(0)) << server_->err();
  }

  std::unique_ptr<Cli> server_;
};

TEST_F(KvCliVram, WithoutAGpuEveryCommandRefusesInOneLineWithExitTwo) {
  if (gpus_here() > 0) GTEST_SKIP() << "a GPU is here: the refusal is for machines without one";
#ifdef KVFERRY_HAVE_CUDA
  const std::string why = "no CUDA GPU here";
#else
  const std::string why = "built without CUDA";
#endif
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"serve", "--mem", "vram", "--listen", "127.0.0.1:0"}, "kvferry serve --mem vram: "},
      {{"pull", "--mem", "vram", "--peer", "127.0.0.1:1"}, "kvferry pull --mem vram: "},
      {{"demo", "--mem", "vram"}, "kvferry demo --mem vram: "}};
  for (const auto& [args, prefix] : cases) {
    auto run = Cli::start(args);
    EXPECT_EQ(run->wait_exit(20s), std::optional<int>(2)) << args[0] << ": " << run->err();
    EXPECT_EQ(run->err().rfind(prefix + why, 0), 0u) << run->err();
    EXPECT_EQ(std::count(run->err().begin(), run->err().end(), '\n'), 1) << "one line: " << run->err();
    EXPECT_EQ(run->out(), "") << "nothing started: " << run->out();
  }
}

TEST_F(KvCliVram, HelpDocumentsTheMemoryOptions) {
  for (const char* command : {"serve", "pull", "demo"}) {
    auto run = Cli::start({command, "--help"});
    EXPECT_EQ(run->wait_exit(20s), std::optional<int>(0)) << run->err();
    EXPECT_NE(run->out().find("--mem"), std::string::npos) << command << ": " << run->out();
    EXPECT_NE(run->out().find("vram"), std::string::npos) << command;
    EXPECT_NE(run->out().find("--device"), std::string::npos) << command;
  }
}

TEST_F(KvCliVram, ADeviceBeyondTheLastGpuIsAUsageError) {
  SKIP_WITHOUT_GPUS(1);
  auto run = Cli::start({"pull", "--mem", "vram", "--device", "99", "--peer", "127.0.0.1:1"});
  EXPECT_EQ(run->wait_exit(20s), std::optional<int>(2)) << run->err();
  EXPECT_NE(run->err().find("kvferry pull --mem vram: --device 99: this machine has"), std::string::npos)
      << run->err();
}

TEST_F(KvCliVram, VramServerToVramClientsOverCudaIpc) {
  SKIP_WITHOUT_GPUS(1);
  const std::string peer = start_server("vram");
  ASSERT_FALSE(peer.empty());
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {"--transfers", "2"}, {"--pattern", "contiguous", "--baseline"}, {"--cached-tokens", "100"}}) {
    auto pull = start_pull(peer, "vram", "cuda_ipc", extra);
    ASSERT_EQ(pull->wait_exit(60s), std::optional<int>(0)) << pull->err();
    const nlohmann::json result = nlohmann::json::parse(pull->out());
    EXPECT_TRUE(result.value("verified", false)) << result.dump();
    EXPECT_EQ(result.value("mem", ""), "vram");
    EXPECT_EQ(result.value("server_mem", ""), "vram");
    const std::uint64_t blocks = extra[0] == "--cached-tokens" ? 10 : 16;  // 100 cached tokens: 6 blocks stay
    EXPECT_EQ(result.value("bytes", 0ull), blocks * 4 * 64 * 1024) << result.dump();
  }
  stop_server();
}

// --mem is each side's own choice. Whichever backend can join host and GPU memory
// across processes must deliver verified bytes; one that cannot must say so clearly.
// Today none may (tcp and shm will stage vram through pinned memory): then it skips.
TEST_F(KvCliVram, MixedKindsVerifiedWhereABackendJoinsThem) {
  SKIP_WITHOUT_GPUS(1);
  std::vector<std::string> worked;
  for (const auto& [server_mem, client_mem] : {std::pair{"vram", "dram"}, std::pair{"dram", "vram"}}) {
    const std::string peer = start_server(server_mem);
    ASSERT_FALSE(peer.empty());
    for (const char* backend : {"tcp", "shm", "cuda_ipc"}) {
      const std::string label =
          std::string(server_mem) + " server -> " + client_mem + " client over " + backend;
      auto pull = start_pull(peer, client_mem, backend);
      const auto code = pull->wait_exit(60s);
      ASSERT_TRUE(code) << label << ": still running";
      if (*code == 0) {
        EXPECT_NE(pull->out().find("\"verified\":true"), std::string::npos) << label << ": " << pull->out();
        worked.push_back(label);
        continue;
      }
      const std::string& err = pull->err();
      const bool cannot = err.find("no backend can move") != std::string::npos ||          // route
                          err.find("no started backend supports") != std::string::npos ||  // registration
                          err.find("is not usable here") != std::string::npos ||
                          err.find("is not compiled in") != std::string::npos;
      EXPECT_TRUE(cannot) << label << ": exit " << *code << ", not a clear refusal: " << err;
    }
    stop_server();
  }
  if (worked.empty()) GTEST_SKIP() << "no backend here joins host and GPU memory across processes yet";
}

TEST_F(KvCliVram, DemoOnGpusVerifiesEveryByte) {
  SKIP_WITHOUT_GPUS(1);
  // Named: cuda_ipc must run. Default: every backend, those that cannot take GPU
  // memory skipped (not failed), at least one row.
  for (const std::vector<std::string>& backend :
       std::vector<std::vector<std::string>>{{"--backend", "cuda_ipc"}, {}}) {
    auto run = Cli::start(
        with({"demo", "--mem", "vram", "--tokens", "256", "--blocks-per-layer", "64", "--json"}, backend));
    ASSERT_EQ(run->wait_exit(120s), std::optional<int>(0)) << run->err();
    int rows = 0;
    std::istringstream lines(run->out());
    for (std::string line; std::getline(lines, line);) {
      const nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(row.is_object()) << line;
      EXPECT_TRUE(row.value("verified", false)) << row.dump();
      EXPECT_EQ(row.value("mem", ""), "vram");
      EXPECT_EQ(row.value("decode_device", -1), gpus_here() > 1 ? 1 : 0);
      ++rows;
    }
    EXPECT_GE(rows, 1) << run->out() << run->err();
  }
}

}  // namespace
}  // namespace kvferry::testing
