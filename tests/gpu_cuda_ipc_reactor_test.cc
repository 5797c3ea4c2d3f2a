// cuda_ipc on the agent's reactor (GPU only; skips without one): an agent that talks to 8
// peer processes over cuda_ipc has as many threads as with 1, and its one reactor thread
// polls the copies and takes the acknowledgements. Every write carries a notification
// whose checksum reply proves the bytes landed in the peer's GPU memory.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "gpu_test_util.h"
#include "peer_process.h"
#include "test_util.h"
#include "thread_census.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kSize = 1u << 20;

void write_and_check(Agent& a, Inbox& inbox, const PeerProcess& peer, int peer_gpu, const DeviceBuffer& local,
                     std::uint64_t seed) {
  Buffer fresh(kSize);
  fresh.randomize(seed);
  ASSERT_TRUE(local.upload(fresh.data()));
  TransferOptions o;
  o.notification = "checksum";
  DescriptorList dst(MemoryKind::kVram,
                     {Descriptor{peer.address(), kSize, static_cast<std::uint32_t>(peer_gpu)}});
  auto w = a.create_transfer(TransferOp::kWrite, local.region(), peer.name(), dst, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->telemetry().backend, "cuda_ipc");
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(20s));
  auto reply = inbox.next_from(peer.name(), 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(fresh.data(), kSize));
}

TEST(CudaIpcReactor, EightPeersAddNoThreadAndTheReactorServesThem) {
  KVF_SKIP_WITHOUT_GPU(1);
  constexpr int kPeers = 8;
  const int peer_gpu = gpu_count() > 1 ? 1 : 0;
  std::vector<std::unique_ptr<PeerProcess>> peers;
  for (int i = 0; i < kPeers; ++i) {
    std::string error;
    peers.push_back(PeerProcess::spawn({.name = "peer" + std::to_string(i),
                                        .size = kSize,
                                        .seed = 60u + i,
                                        .backend = "cuda_ipc",
                                        .mem = "vram",
                                        .device = peer_gpu},
                                       &error));
    ASSERT_TRUE(peers.back()) << error;
  }
  auto a = make_cuda_ipc_agent("initiator", "kernel");
  ASSERT_TRUE(a);
  DeviceBuffer local(0, kSize);
  ASSERT_TRUE(local.ok());
  KVF_ASSERT_OK(a->register_memory(local.region()));
  Inbox inbox(*a);

  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peers[0]->port()).ok());
  write_and_check(*a, inbox, *peers[0], peer_gpu, local, 1);
  const auto with_one = threads_of();
  auto reactors = threads_named("kvf-reactor");
  ASSERT_EQ(reactors.size(), 1u);
  EXPECT_TRUE(threads_named("kvf-cuda_ipc").empty());  // no loop of cuda_ipc's own
  const std::uint64_t woke_before = reactors[0].woke;

  for (int i = 1; i < kPeers; ++i) {
    ASSERT_TRUE(a->fetch_remote("127.0.0.1", peers[i]->port()).ok());
    write_and_check(*a, inbox, *peers[i], peer_gpu, local, 10u + i);
  }
  for (int i = 0; i < kPeers; ++i) write_and_check(*a, inbox, *peers[i], peer_gpu, local, 100u + i);
  EXPECT_EQ(threads_of().size(), with_one.size()) << "sessions must not start threads";
  reactors = threads_named("kvf-reactor");
  ASSERT_EQ(reactors.size(), 1u);
  // Each write's copies are polled and its acknowledgement read on the reactor thread.
  EXPECT_GE(reactors[0].woke - woke_before, static_cast<std::uint64_t>(kPeers));
}

}  // namespace
}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
