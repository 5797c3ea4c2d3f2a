// A TpSender runs on its own threads: with its caller never calling progress() or
// wait(), it answers the asks of two decode ranks, moves every piece (several per share,
// through a small staging arena: back-pressure) and lands every head where it belongs.
// In one process, agents over the loopback backend.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>

#include "kv/tp/tp_test_reference.h"
#include "kvferry/agent.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/tp_transfer.h"
#include "test_util.h"

namespace kvferry {
namespace {

using namespace std::chrono_literals;

void exchange_metadata(Agent& a, Agent& b) {
  for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    Result<std::vector<std::uint8_t>> metadata = from->local_metadata();
    ASSERT_TRUE(metadata.ok()) << metadata.status().to_string();
    ASSERT_TRUE(to->load_remote(*metadata).ok());
  }
}

// Heads `heads` (local numbering) of `tokens` tokens, gathered: what a pool holds there.
std::vector<std::uint8_t> gathered(const KvPool& pool, const std::vector<std::uint32_t>& blocks, HeadRange heads,
                                   std::uint64_t tokens) {
  std::vector<std::uint8_t> out(KvStagingShape::of(pool.layout(), heads.count, tokens).bytes());
  const KvStaging staging{reinterpret_cast<std::uint64_t>(out.data()), out.size(), MemoryKind::kDram, 0};
  EXPECT_TRUE(gather_kv_heads(pool, {blocks, 0, tokens}, heads, staging).ok());
  return out;
}

TEST(TpSender, ServesTwoDecodeRanksOnItsOwnThreads) {
  constexpr std::uint64_t kTokens = 100;
  const KvGeometry model{3, 4, 4, 16, KvDtype::kFp32};
  KvGeometry half = model;
  half.kv_heads = 2;
  auto prefill_pool = tp_testing::HostPool::make(model, KvArrangement::kVllmNhd, 8);
  tp_testing::fill_random(prefill_pool.bytes, 42);
  std::vector<tp_testing::HostPool> decode_pools;
  for (int d = 0; d < 2; ++d) {
    decode_pools.push_back(tp_testing::HostPool::make(half, KvArrangement::kVllmHnd, 8));
    std::memset(decode_pools.back().bytes.data(), 0xAB, decode_pools.back().bytes.size());
  }
  const std::vector<std::uint32_t> prefill_blocks{5, 2, 7, 0, 3, 1, 6};
  const std::vector<std::uint32_t> decode_blocks{1, 6, 0, 4, 2, 7, 3};

  auto prefill = testing::make_agent("tp-sender-test-prefill", "loopback");
  ASSERT_TRUE(prefill);
  ASSERT_TRUE(prefill->register_memory(prefill_pool.pool.tensor_regions()).ok());
  TpSenderOptions so;
  so.groups = {4, 1, 2, false};
  so.staging = {16u << 10, 2, 1, false};  // 2 slots: pieces wait for each other
  so.piece_bytes = 4u << 10;              // 100 tokens x 192 B a share: 5 pieces
  auto sender = TpSender::create(*prefill, prefill_pool.pool, so);
  ASSERT_TRUE(sender.ok()) << sender.status().to_string();

  std::vector<std::unique_ptr<Agent>> decode_agents;
  std::vector<std::unique_ptr<TpReceiver>> receivers;
  for (std::uint32_t d = 0; d < 2; ++d) {
    decode_agents.push_back(testing::make_agent("tp-sender-test-decode-" + std::to_string(d), "loopback"));
    ASSERT_TRUE(decode_agents[d]);
    ASSERT_TRUE(decode_agents[d]->register_memory(decode_pools[d].pool.tensor_regions()).ok());
    TpReceiverOptions ro;
    ro.groups = so.groups;
    ro.rank = d;
    ro.path = d == 0 ? TpPath::kHostStaging : TpPath::kDirect;
    ro.staging = {64u << 10, 1, 1, false};
    auto receiver = TpReceiver::create(*decode_agents[d], decode_pools[d].pool, ro);
    ASSERT_TRUE(receiver.ok()) << receiver.status().to_string();
    receivers.push_back(std::move(receiver).value());
    exchange_metadata(*prefill, *decode_agents[d]);
    ASSERT_TRUE(receivers[d]->connect({prefill->name()}).ok());
    ASSERT_TRUE(receivers[d]->expect("r", decode_blocks, kTokens).ok());
  }
  // Two chunks, then nothing more from the sender's caller until the receivers are done.
  ASSERT_TRUE((*sender)->send("r", prefill_blocks, 0, 60, false).ok());
  ASSERT_TRUE((*sender)->send("r", prefill_blocks, 60, kTokens - 60, true).ok());
  for (std::uint32_t d = 0; d < 2; ++d) {
    ASSERT_TRUE(receivers[d]->wait("r", 20s).ok()) << "decode rank " << d;
    const TpReceiveReport report = receivers[d]->last_report();
    EXPECT_EQ(report.path, d == 0 ? TpPath::kHostStaging : TpPath::kDirect);
    EXPECT_EQ(report.sources, 1u);
    EXPECT_EQ(report.bytes, kTokens * 2 * 3 * 2 * 4 * 4);
    EXPECT_EQ(report.pieces, 5u);  // chunks of 60 and 40 tokens in pieces of 20 (at most 4 KiB)
    EXPECT_EQ(gathered(decode_pools[d].pool, decode_blocks, {0, 2}, kTokens),
              gathered(prefill_pool.pool, prefill_blocks, {2 * d, 2}, kTokens))
        << "decode rank " << d;
  }
  EXPECT_TRUE((*sender)->wait("r", 5s).ok());
  EXPECT_EQ((*sender)->wait("r", 0ms).code(), StatusCode::kNotFound);  // forgotten once delivered
}

}  // namespace
}  // namespace kvferry
