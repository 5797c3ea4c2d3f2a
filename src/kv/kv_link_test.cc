// LocalKvPool + KvLink end to end inside one process: two agents over tcp, real
// memory, every arrangement; the bytes that land are the naive reference's.
#include "kvferry/kv/kv_link.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <cstring>

#include "kv/kv_test_reference.h"
#include "test_util.h"

namespace kvferry {
namespace {

using namespace std::chrono_literals;

// One engine: memory, a pool over it, registered and attached to its agent.
struct Engine {
  std::vector<std::uint8_t> memory;
  std::unique_ptr<Agent> agent;
  std::optional<KvPool> pool;
  std::optional<LocalKvPool> local;

  Engine(const std::string& name, const KvGeometry& g, KvArrangement a, std::uint32_t blocks,
         std::uint8_t fill) {
    Result<KvLayout> layout = KvLayout::create(g, a, blocks);
    EXPECT_TRUE(layout.ok());
    memory.assign(layout->pool_bytes(), fill);
    agent = testing::make_agent(name, "tcp");
    Result<KvPool> p =
        KvPool::create_contiguous(*layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(memory.data()));
    EXPECT_TRUE(p.ok());
    pool = *p;
    EXPECT_TRUE(agent->register_memory(pool->tensor_regions()).ok());
    Result<LocalKvPool> attached = LocalKvPool::attach(*agent, *pool);
    EXPECT_TRUE(attached.ok()) << attached.status().to_string();
    if (attached.ok()) local = *attached;
  }
  std::uint8_t* at(std::uint64_t address) { return reinterpret_cast<std::uint8_t*>(address); }
};

void introduce(Agent& a, Agent& b) {
  ASSERT_TRUE(b.load_remote(*a.local_metadata()).ok());
  ASSERT_TRUE(a.load_remote(*b.local_metadata()).ok());
}

class KvLinkArrangement : public ::testing::TestWithParam<KvArrangement> {};

// Every plan goes as a strided transfer: scattered ids stay one piece per (lane, block),
// a long run merges into one piece per lane.
TEST_P(KvLinkArrangement, PullLandsTheNaiveBytesAndNothingElse) {
  const KvGeometry g = kv_testing::small_geometry(GetParam());
  Engine prefill("kv-link-prefill", g, GetParam(), 10, 0);
  Engine decode("kv-link-decode", g, GetParam(), 12, 0xEE);
  ASSERT_TRUE(prefill.local && decode.local);
  for (std::size_t i = 0; i < prefill.memory.size(); ++i)
    prefill.memory[i] = static_cast<std::uint8_t>(i * 131 + 7);
  introduce(*prefill.agent, *decode.agent);
  Result<KvLink> link = decode.local->link(*decode.agent, prefill.agent->name());
  ASSERT_TRUE(link.ok()) << link.status().to_string();

  struct Case {
    std::vector<std::uint32_t> source, destination;
    bool one_run;  // the pairs merge into one run per lane
  };
  const Case cases[] = {{{9, 3, 4, 5}, {1, 6, 2, 3}, false},
                        {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, true}};
  BlockPlan plan;
  for (const Case& c : cases) {
    std::fill(decode.memory.begin(), decode.memory.end(), 0xEE);
    ASSERT_TRUE(link->plan(TransferOp::kRead, {c.source, c.destination, {}}, plan).ok());
    TransferOptions options;
    options.notification = "pulled";
    Result<TransferRequest> request = link->create_transfer(*decode.agent, plan, options);
    ASSERT_TRUE(request.ok()) << request.status().to_string();
    ASSERT_TRUE(request->post().ok());
    ASSERT_TRUE(request->wait(10s).ok());
    const TransferTelemetry telemetry = request->telemetry();
    EXPECT_EQ(telemetry.descriptors_merged, plan.merged_descriptors());
    EXPECT_EQ(telemetry.descriptors_requested, plan.pairs());
    if (c.one_run) {
      EXPECT_EQ(plan.merged_descriptors(), plan.end_lane() - plan.first_lane());
    }
    EXPECT_EQ(telemetry.bytes, plan.bytes());

    std::vector<bool> written(decode.memory.size(), false);
    for (std::uint32_t layer = 0; layer < g.layers; ++layer) {
      for (std::size_t i = 0; i < c.source.size(); ++i) {
        const auto from = kv_testing::naive_block_addresses(*prefill.pool, layer, c.source[i]);
        const auto to = kv_testing::naive_block_addresses(*decode.pool, layer, c.destination[i]);
        for (std::size_t j = 0; j < from.size(); ++j) {
          ASSERT_EQ(*decode.at(to[j]), *prefill.at(from[j]))
              << "layer " << layer << " pair " << i << " byte " << j;
          written[to[j] - reinterpret_cast<std::uint64_t>(decode.memory.data())] = true;
        }
      }
    }
    for (std::size_t i = 0; i < decode.memory.size(); ++i) {
      if (!written[i]) { ASSERT_EQ(decode.memory[i], 0xEE) << "byte " << i << " outside the plan changed"; }
    }
    ASSERT_TRUE(prefill.agent->wait_for_notifications(5s));
    EXPECT_EQ(prefill.agent->take_notifications().front().message, "pulled");
  }
}

INSTANTIATE_TEST_SUITE_P(KvEveryArrangement, KvLinkArrangement,
                         ::testing::ValuesIn(kv_testing::kAllArrangements));

TEST(KvLink, MismatchedPeerIsRefusedNamingTheFields) {
  KvGeometry theirs = kv_testing::small_geometry(KvArrangement::kVllmNhd);
  theirs.kv_heads = 4;
  Engine prefill("kv-link-prefill-4h", theirs, KvArrangement::kVllmNhd, 4, 0);
  Engine decode("kv-link-decode-2h", kv_testing::small_geometry(KvArrangement::kVllmNhd),
                KvArrangement::kVllmNhd, 4, 0);
  introduce(*prefill.agent, *decode.agent);
  Result<KvLink> link = decode.local->link(*decode.agent, prefill.agent->name());
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.status().message(),
            "kv geometry mismatch with peer 'kv-link-prefill-4h' (ours vs theirs): kv_heads 2 vs 4, "
            "block_bytes 160 vs 320");
}

TEST(KvLink, PlanFromAnotherAgentIsRefused) {
  const KvGeometry g = kv_testing::small_geometry(KvArrangement::kMla);
  Engine a("kv-link-a", g, KvArrangement::kMla, 4, 0);
  Engine b("kv-link-b", g, KvArrangement::kMla, 4, 0);
  introduce(*a.agent, *b.agent);
  Result<KvLink> link = b.local->link(*b.agent, a.agent->name());
  ASSERT_TRUE(link.ok());
  const std::vector<std::uint32_t> ids = {0, 1};
  BlockPlan plan;
  ASSERT_TRUE(link->plan(TransferOp::kWrite, {ids, ids, {}}, plan).ok());
  EXPECT_FALSE(link->create_transfer(*a.agent, plan).ok());
  EXPECT_FALSE(link->create_transfer(*b.agent, BlockPlan{}).ok());
}

// Recorded in docs/benchmarks.md ("KV layer"): a 32,768-token pull of a Mistral-Small
// pool (2,048 blocks x 40 layers x K and V = 163,840 pairs): the plan, then the Agent's
// create_transfer (validation and merging). Both pools are address space reserved and
// never touched, the agent is its own peer, nothing is posted: no data moves.
TEST(KvLink, PlanAndCreateCostOfA32kTokenPull) {
  Result<KvLayout> layout = KvLayout::create({40, 8, 128, 16, KvDtype::kBf16}, KvArrangement::kVllmNhd, 4096);
  ASSERT_TRUE(layout.ok());
  const std::size_t bytes = layout->pool_bytes();
  void* reserved = mmap(nullptr, 2 * bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(reserved, MAP_FAILED);
  const auto base = reinterpret_cast<std::uint64_t>(reserved);
  {
    AgentOptions options;
    options.name = "kv-cost";
    options.backends = {"loopback"};
    Result<std::unique_ptr<Agent>> agent = Agent::create(options);
    ASSERT_TRUE(agent.ok());
    Result<KvPool> ours = KvPool::create_contiguous(*layout, MemoryKind::kDram, base);
    Result<KvPool> theirs = KvPool::create_contiguous(*layout, MemoryKind::kDram, base + bytes);
    ASSERT_TRUE(ours.ok() && theirs.ok());
    ASSERT_TRUE((*agent)->register_memory(ours->tensor_regions()).ok());
    ASSERT_TRUE((*agent)->register_memory(theirs->tensor_regions()).ok());
    Result<LocalKvPool> local = LocalKvPool::attach(**agent, *ours);
    ASSERT_TRUE(LocalKvPool::attach(**agent, *theirs, "kv.pool.peer").ok());
    ASSERT_TRUE(local.ok());
    Result<KvLink> link = local->link(**agent, (*agent)->name(), "kv.pool.peer");
    ASSERT_TRUE(link.ok()) << link.status().to_string();
    std::vector<std::uint32_t> scattered_source(2048), scattered_destination(2048), contiguous(2048);
    for (std::uint32_t i = 0; i < 2048; ++i) {
      scattered_source[i] = (i * 2654435761u) % 4096;  // nothing merges: the worst case
      scattered_destination[i] = (i * 40503u + 17) % 4096;
      contiguous[i] = i;  // a fresh engine: one run per lane
    }
    struct Case {
      const char* name;
      const std::vector<std::uint32_t>& source;
      const std::vector<std::uint32_t>& destination;
    };
    BlockPlan plan;
    for (const Case& c : {Case{"scattered", scattered_source, scattered_destination},
                          Case{"contiguous", contiguous, contiguous}}) {
      std::vector<double> plan_us, create_us;
      for (int round = 0; round < 7; ++round) {
        const auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(link->plan(TransferOp::kRead, {c.source, c.destination, {}}, plan).ok());
        const auto t1 = std::chrono::steady_clock::now();
        Result<TransferRequest> request = link->create_transfer(**agent, plan);
        const auto t2 = std::chrono::steady_clock::now();
        ASSERT_TRUE(request.ok()) << request.status().to_string();
        EXPECT_EQ(plan.pairs(), 163840u);
        plan_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        create_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
      }
      std::sort(plan_us.begin(), plan_us.end());
      std::sort(create_us.begin(), create_us.end());
      std::printf(
          "[ 32k pull  ] %s: plan median %.1f us; KvLink::create_transfer median %.1f us (%llu pairs -> "
          "%llu)\n",
          c.name, plan_us[3], create_us[3], static_cast<unsigned long long>(plan.pairs()),
          static_cast<unsigned long long>(plan.merged_descriptors()));
    }
  }
  munmap(reserved, 2 * bytes);
}

}  // namespace
}  // namespace kvferry
