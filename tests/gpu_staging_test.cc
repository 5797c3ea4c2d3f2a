// vram over the host backends (tcp, shm): the local side staged through pinned memory by
// the core (core/staged_connection.h), and for tcp also a peer's vram served through
// pinned memory by its target (backends/tcp/tcp_vram.cc). Real processes
// (kvferry_test_peer), small staging chunks so that a transfer spans many of them,
// fresh random data, byte comparison, a notification after the data, peer death.
// Skips where no GPU is present.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cinttypes>
#include <cstring>
#include <random>
#include <tuple>

#include "gpu_test_util.h"
#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// (backend, peer memory, staging copy method)
using Case = std::tuple<std::string, std::string, std::string>;
class StagedVram : public ::testing::TestWithParam<Case> {};

TEST_P(StagedVram, ScatteredWriteNotifyReadBackAndPeerDeath) {
  KVF_SKIP_WITHOUT_GPU(1);
  const auto& [backend, peer_mem, copy] = GetParam();
  const int peer_gpu = gpu_count() > 1 ? 1 : 0;
  constexpr std::size_t kSize = 32u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer",
                                  .size = kSize,
                                  .seed = 7,
                                  .backend = backend,
                                  .shared = backend == "shm" && peer_mem == "dram",
                                  .mem = peer_mem,
                                  .device = peer_gpu},
                                 &error);
  ASSERT_TRUE(peer) << error;
  AgentOptions ao;
  ao.name = "initiator";
  ao.backends = {backend};
  // 1 MiB chunks, 3 slots: a 32 MiB transfer goes through 32 chunks and reuses slots.
  ao.backend_params = {{"staging.chunk_bytes", "1048576"}, {"staging.slots", "3"}, {"staging.copy", copy}};
  ao.peer_timeout = 2s;
  auto a = Agent::create(ao);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  DeviceBuffer local(0, 2 * kSize);
  ASSERT_TRUE(local.ok());
  KVF_ASSERT_OK((*a)->register_memory(local.region()));
  ASSERT_TRUE((*a)->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(**a);
  const MemoryKind peer_kind = peer_mem == "vram" ? MemoryKind::kVram : MemoryKind::kDram;
  const auto peer_dev = static_cast<std::uint32_t>(peer_mem == "vram" ? peer_gpu : 0);

  Buffer fresh(kSize);
  fresh.randomize(std::random_device{}());
  ASSERT_EQ(cudaMemcpy(local.data(), fresh.data(), kSize, cudaMemcpyHostToDevice), cudaSuccess);
  // 1,024 scattered blocks of 32 KiB (reversed), odd-sized last pair, notification.
  DescriptorList src(MemoryKind::kVram), dst(peer_kind);
  constexpr std::uint64_t kBlock = 32u << 10, kN = kSize / kBlock;
  std::vector<std::uint8_t> expect(kSize);
  for (std::uint64_t i = 0; i < kN; ++i) {
    src.add(local.at(i * kBlock, kBlock));
    dst.add(Descriptor{peer->address() + (kN - 1 - i) * kBlock, kBlock, peer_dev});
    std::memcpy(expect.data() + (kN - 1 - i) * kBlock, fresh.data() + i * kBlock, kBlock);
  }
  TransferOptions o;
  o.notification = "checksum";
  auto w = (*a)->create_transfer(TransferOp::kWrite, src, "peer", dst, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(30s));
  EXPECT_EQ(w->telemetry().backend, backend + "+staging");
  auto reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(expect));

  // Read everything back into the second half (one pair, cut into chunks).
  DescriptorList back(MemoryKind::kVram, {local.at(kSize, kSize)});
  auto r = (*a)->create_transfer(TransferOp::kRead, back, "peer",
                                 DescriptorList(peer_kind, {Descriptor{peer->address(), kSize, peer_dev}}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  for (int round = 0; round < 2; ++round) {  // re-posting reuses the request
    ASSERT_EQ(cudaMemset(local.data() + kSize, 0xA5, kSize), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    KVF_ASSERT_OK(r->post());
    KVF_ASSERT_OK(r->wait(30s));
    std::vector<std::uint8_t> got(kSize);
    ASSERT_EQ(cudaMemcpy(got.data(), local.data() + kSize, kSize, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, expect) << "round " << round;
  }

  // A dead peer turns the next transfer into an error within the bound.
  ASSERT_TRUE(peer->signal(SIGKILL));
  ASSERT_TRUE(peer->wait_exit(5s));
  const auto t0 = std::chrono::steady_clock::now();
  Status after = w->post();
  if (after.ok()) after = w->wait(15s);
  EXPECT_FALSE(after.ok());
  EXPECT_NE(after.code(), StatusCode::kTimeout) << after.to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

INSTANTIATE_TEST_SUITE_P(Paths, StagedVram,
                         ::testing::Values(Case{"tcp", "dram", "batch"}, Case{"tcp", "vram", "batch"},
                                           Case{"shm", "dram", "batch"}, Case{"shm", "dram", "kernel"},
                                           Case{"tcp", "vram", "kernel"}),
                         [](const auto& p) {
                           return std::get<0>(p.param) + "_" + std::get<1>(p.param) + "_" + std::get<2>(p.param);
                         });

// Host memory registered as vram is refused by the core, whatever backends run.
TEST(StagedVramRegistration, HostMemoryIsNotVramEvenForTcp) {
  KVF_SKIP_WITHOUT_GPU(1);
  AgentOptions ao;
  ao.name = "a";
  ao.backends = {"tcp"};
  auto a = Agent::create(ao);
  ASSERT_TRUE(a.ok());
  Buffer host(1u << 20);
  Status s = (*a)->register_memory(DescriptorList(MemoryKind::kVram, {make_descriptor(host.data(), host.size(), 0)}));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
}

}  // namespace
}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
