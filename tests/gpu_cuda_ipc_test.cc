// The cuda_ipc backend on vram. In one process (two agents: the same-process path uses
// the target's pointers directly) and across processes (kvferry_test_peer --mem vram:
// real CUDA IPC handles), for both copy methods (kernel, batch): write then read back
// byte for byte, index transfers of scattered blocks, notification after the data, a
// peer killed mid-use, revocation on deregistration. Skips where no GPU is present.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cinttypes>
#include <cstring>
#include <numeric>
#include <random>

#include "core/peer_auth.h"
#include "core/side_channel.h"
#include "gpu_test_util.h"
#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

class CudaIpcInProcess : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaIpcInProcess, WriteReadIndexTransferAndNotification) {
  KVF_SKIP_WITHOUT_GPU(1);
  const int peer_gpu = gpu_count() > 1 ? 1 : 0;
  constexpr std::uint64_t kBlock = 64u << 10, kBlocks = 256;
  auto a = make_cuda_ipc_agent("a", GetParam());
  auto b = make_cuda_ipc_agent("b", GetParam());
  ASSERT_TRUE(a && b);
  DeviceBuffer la(0, kBlocks * kBlock), lb(peer_gpu, kBlocks * kBlock);
  ASSERT_TRUE(la.ok() && lb.ok());
  Buffer fresh(la.size()), zero(lb.size(), 0x5A);
  fresh.randomize(std::random_device{}());
  ASSERT_TRUE(la.upload(fresh.data()) && lb.upload(zero.data()));
  KVF_ASSERT_OK(a->register_memory(la.region()));
  KVF_ASSERT_OK(b->register_memory(lb.region()));
  introduce(*a, *b);

  // Scattered index transfer a -> b with a notification.
  DescriptorList blocks_a(MemoryKind::kVram), blocks_b(MemoryKind::kVram);
  for (std::uint64_t i = 0; i < kBlocks; ++i) {
    blocks_a.add(la.at(i * kBlock, kBlock));
    blocks_b.add(lb.at(i * kBlock, kBlock));
  }
  auto pa = a->prepare_local(blocks_a);
  auto pb = a->prepare_remote("b", blocks_b);
  ASSERT_TRUE(pa.ok() && pb.ok()) << pa.status().to_string() << pb.status().to_string();
  std::vector<std::uint32_t> src(kBlocks / 2), dst(kBlocks / 2);
  std::vector<std::uint32_t> perm(kBlocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  for (std::size_t i = 0; i < src.size(); ++i) {
    src[i] = perm[i];
    dst[i] = perm[kBlocks - 1 - i];
  }
  TransferOptions o;
  o.notification = "blocks";
  auto w = a->create_transfer(TransferOp::kWrite, *pa, src, *pb, dst, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(20s));
  EXPECT_EQ(w->telemetry().backend, "cuda_ipc");
  ASSERT_TRUE(b->wait_for_notifications(5s));
  auto got = lb.download();  // the notification came after the data
  std::vector<std::uint8_t> expect(zero.data(), zero.data() + zero.size());
  for (std::size_t i = 0; i < src.size(); ++i)
    std::memcpy(expect.data() + dst[i] * kBlock, fresh.data() + src[i] * kBlock, kBlock);
  EXPECT_EQ(got, expect);
  auto notes = b->take_notifications();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].message, "blocks");

  // Whole-buffer read b -> a (into a after poisoning it).
  ASSERT_TRUE(la.upload(zero.data()));
  auto r = a->create_transfer(TransferOp::kRead, la.region(), "b", lb.region());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  EXPECT_EQ(la.download(), expect);
  // Posted again, and destroyed in flight.
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  auto again = a->create_transfer(TransferOp::kWrite, la.region(), "b", lb.region());
  ASSERT_TRUE(again.ok());
  KVF_ASSERT_OK(again->post());
}

INSTANTIATE_TEST_SUITE_P(CopyMethods, CudaIpcInProcess, ::testing::Values("kernel", "batch"));

class CudaIpcMultiProcess : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaIpcMultiProcess, WriteWithNotificationReadBackPeerDeath) {
  KVF_SKIP_WITHOUT_GPU(1);
  const int peer_gpu = gpu_count() > 1 ? 1 : 0;
  constexpr std::size_t kSize = 64u << 20;
  std::string error;
  auto peer = PeerProcess::spawn(
      {.name = "peer", .size = kSize, .seed = 5, .backend = "cuda_ipc", .mem = "vram", .device = peer_gpu}, &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_cuda_ipc_agent("initiator", GetParam(), 2s);
  ASSERT_TRUE(a);
  DeviceBuffer local(0, 2 * kSize);
  ASSERT_TRUE(local.ok());
  KVF_ASSERT_OK(a->register_memory(local.region()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);
  auto remote = [&](std::uint64_t off, std::uint64_t len) {
    return DescriptorList(MemoryKind::kVram, {Descriptor{peer->address() + off, len, static_cast<std::uint32_t>(peer_gpu)}});
  };

  Buffer fresh(kSize);
  fresh.randomize(std::random_device{}());
  ASSERT_EQ(cudaMemcpy(local.data(), fresh.data(), kSize, cudaMemcpyHostToDevice), cudaSuccess);
  // 1024 scattered 64 KiB pairs (reversed order) with a notification asking for a checksum.
  DescriptorList src(MemoryKind::kVram), dst(MemoryKind::kVram);
  constexpr std::uint64_t kBlock = 64u << 10, kN = kSize / kBlock;
  std::vector<std::uint8_t> expect(kSize);
  for (std::uint64_t i = 0; i < kN; ++i) {
    src.add(local.at(i * kBlock, kBlock));
    dst.add(Descriptor{peer->address() + (kN - 1 - i) * kBlock, kBlock, static_cast<std::uint32_t>(peer_gpu)});
    std::memcpy(expect.data() + (kN - 1 - i) * kBlock, fresh.data() + i * kBlock, kBlock);
  }
  TransferOptions o;
  o.notification = "checksum";
  auto w = a->create_transfer(TransferOp::kWrite, src, "peer", dst, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(20s));
  EXPECT_EQ(w->telemetry().backend, "cuda_ipc");
  auto reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(expect));

  // Posted again with new data, twice: the second post keeps its copy table, the third
  // uploads the kept table (no translation). Each must move the new bytes.
  for (int again = 0; again < 2; ++again) {
    fresh.randomize(std::random_device{}());
    ASSERT_EQ(cudaMemcpy(local.data(), fresh.data(), kSize, cudaMemcpyHostToDevice), cudaSuccess);
    for (std::uint64_t i = 0; i < kN; ++i)
      std::memcpy(expect.data() + (kN - 1 - i) * kBlock, fresh.data() + i * kBlock, kBlock);
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(20s));
    reply = inbox.next_from("peer", 10s);
    ASSERT_TRUE(reply);
    EXPECT_EQ(*reply, checksum_text(expect)) << "repeated post " << again << " moved stale bytes";
  }

  DescriptorList back(MemoryKind::kVram, {local.at(kSize, kSize)});
  auto r = a->create_transfer(TransferOp::kRead, back, "peer", remote(0, kSize));
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  std::vector<std::uint8_t> got(kSize);
  ASSERT_EQ(cudaMemcpy(got.data(), local.data() + kSize, kSize, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, expect);

  // Revocation: the peer deregisters, confirms; our later transfers are refused.
  KVF_ASSERT_OK(a->notify("peer", "deregister"));
  auto dereg = inbox.next_from("peer", 10s);
  ASSERT_TRUE(dereg);
  EXPECT_EQ(*dereg, "deregistered");
  Status refused = r->post();
  if (refused.ok()) refused = r->wait(10s);
  EXPECT_FALSE(refused.ok());
  // Also a request whose copy table was kept: revocation drops it.
  Status refused_kept = w->post();
  if (refused_kept.ok()) refused_kept = w->wait(10s);
  EXPECT_FALSE(refused_kept.ok());

  // Peer death: the connection reports it.
  ASSERT_TRUE(peer->signal(SIGKILL));
  ASSERT_TRUE(peer->wait_exit(5s));
  Status after = a->notify("peer", "hello");
  for (int i = 0; i < 50 && after.ok(); ++i) {
    std::this_thread::sleep_for(100ms);
    after = a->notify("peer", "hello");
  }
  EXPECT_FALSE(after.ok());
}

INSTANTIATE_TEST_SUITE_P(CopyMethods, CudaIpcMultiProcess, ::testing::Values("kernel", "batch"));

// The hello on cuda_ipc's socket authenticates with AgentOptions::secret (core/host_link.h,
// as shm's): the same secret reads the peer's bytes; another secret or none is refused
// before any IPC handle is handed over, and our memory stays as it was.
TEST(CudaIpcAuth, TheHandshakeAuthenticatesWithTheSharedSecret) {
  KVF_SKIP_WITHOUT_GPU(1);
  const int peer_gpu = gpu_count() > 1 ? 1 : 0;
  constexpr std::size_t kSize = 4u << 20;
  const std::string kSecret = "correct horse battery staple 0123", kOther = "another secret of enough length!!";
  std::string error;
  PeerOptions po{.name = "guarded", .size = kSize, .seed = 11, .backend = "cuda_ipc", .mem = "vram", .device = peer_gpu};
  po.secret = kSecret;
  auto peer = PeerProcess::spawn(po, &error);
  ASSERT_TRUE(peer) << error;
  // The peer's metadata, fetched with the right secret (as a trusted directory hands it out).
  auto key = detail::SharedSecret::create({reinterpret_cast<const std::uint8_t*>(kSecret.data()), kSecret.size()});
  ASSERT_TRUE(key.ok());
  auto md = detail::side_channel_call("127.0.0.1", peer->port(), detail::SideFrame::kFetch, {},
                                      detail::SideFrame::kMetadata, detail::deadline_after(5s), *key);
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  Buffer expected(kSize);
  expected.randomize(11);
  for (const std::string& secret : {kSecret, kOther, std::string()}) {
    SCOPED_TRACE(secret.empty() ? "no secret" : secret == kSecret ? "the same secret" : "another secret");
    AgentOptions o;
    o.name = "initiator";
    o.backends = {"cuda_ipc"};
    o.peer_timeout = 3s;
    o.secret.assign(secret.begin(), secret.end());
    auto a = Agent::create(o);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    DeviceBuffer local(0, kSize);
    ASSERT_TRUE(local.ok());
    std::vector<std::uint8_t> poison(kSize, 0xEE);
    ASSERT_TRUE(local.upload(poison.data()));
    KVF_ASSERT_OK((*a)->register_memory(local.region()));
    auto loaded = (*a)->load_remote(*md);
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    DescriptorList remote(MemoryKind::kVram, {Descriptor{peer->address(), kSize, static_cast<std::uint32_t>(peer_gpu)}});
    auto r = (*a)->create_transfer(TransferOp::kRead, local.region(), "guarded", remote);
    Status s = r.ok() ? r->post() : r.status();
    if (s.ok()) s = r->wait(10s);
    if (secret == kSecret) {
      KVF_ASSERT_OK(s);
      EXPECT_EQ(r->telemetry().backend, "cuda_ipc");
      EXPECT_EQ(local.download(), std::vector<std::uint8_t>(expected.data(), expected.data() + kSize));
    } else {
      EXPECT_FALSE(s.ok());
      const std::string why = secret.empty() ? "authentication required" : "authentication failed";
      EXPECT_NE(s.message().find(why), std::string::npos) << s.to_string();
      EXPECT_EQ(local.download(), poison) << "a refused link changed our memory";
    }
  }
}

}  // namespace
}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
