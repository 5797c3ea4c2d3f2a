// The shm backend between real processes: a pool from allocate_shared_memory (memfd
// mapped by the initiator) and ordinary memory (process_vm_readv/writev), selection of
// shm over tcp for a same-host peer, a peer killed mid-use, and revocation on
// deregistration.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <thread>

#include "peer_test_util.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

class ShmMultiProcess : public ::testing::TestWithParam<bool> {};  // param: shared pool

TEST_P(ShmMultiProcess, WriteWithNotificationThenReadBack) {
  constexpr std::size_t kSize = 32u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 21, .backend = "shm", .shared = GetParam()},
                                 &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "shm");
  ASSERT_TRUE(a);
  auto pool = a->allocate_shared_memory(2 * kSize);
  ASSERT_TRUE(pool.ok()) << pool.status().to_string();
  KVF_ASSERT_OK(a->register_memory(pool->descriptors()));
  auto* local = static_cast<std::uint8_t*>(pool->data());
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);

  Buffer fresh(kSize);
  fresh.randomize(77);
  std::memcpy(local, fresh.data(), kSize);
  TransferOptions o;
  o.notification = "checksum";  // the peer answers with a checksum of its buffer
  DescriptorList src(MemoryKind::kDram, {make_descriptor(local, kSize)});
  auto w = a->create_transfer(TransferOp::kWrite, src, "peer", remote_range(*peer, 0, kSize), o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));  // done = the peer acknowledged the notification
  EXPECT_EQ(w->telemetry().backend, "shm");
  auto reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(fresh.data(), kSize));

  DescriptorList back(MemoryKind::kDram, {make_descriptor(local + kSize, kSize)});
  auto r = a->create_transfer(TransferOp::kRead, back, "peer", remote_range(*peer, 0, kSize));
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  EXPECT_EQ(std::memcmp(local + kSize, fresh.data(), kSize), 0);
}

INSTANTIATE_TEST_SUITE_P(Pools, ShmMultiProcess, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "SharedMemfd" : "ProcessVm"; });

TEST(ShmSelection, SameHostPeerGetsShmNotTcp) {
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = 1u << 20, .seed = 3, .backend = "all", .shared = true},
                                 &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "");  // every backend
  ASSERT_TRUE(a);
  Buffer local(1u << 20);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 0, 1u << 20));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->telemetry().backend, "shm");
  TransferOptions force_tcp;
  force_tcp.backend = "tcp";
  auto t = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 0, 1u << 20), force_tcp);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->telemetry().backend, "tcp");
}

TEST(ShmFailure, PeerKilledTurnsNotifiedTransfersIntoPeerLost) {
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = 8u << 20, .seed = 4, .peer_timeout = 2000ms,
                                  .backend = "shm", .shared = true},
                                 &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "shm", 2000ms);
  ASSERT_TRUE(a);
  Buffer local(8u << 20);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  TransferOptions o;
  o.notification = "echo x";
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, 8u << 20), o);
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));

  ASSERT_TRUE(peer->signal(SIGKILL));
  ASSERT_TRUE(peer->wait_exit(5s));
  const auto t0 = std::chrono::steady_clock::now();
  Status s = w->post();
  if (s.ok()) s = w->wait(10s);
  EXPECT_EQ(s.code(), StatusCode::kPeerLost) << s.to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(w->post().code(), StatusCode::kPeerLost);  // fails fast from now on
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 100ms);
}

TEST(ShmFailure, DeregisteredMemoryIsRevokedFromTheInitiator) {
  constexpr std::size_t kSize = 4u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 5, .backend = "shm", .shared = true}, &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "shm");
  ASSERT_TRUE(a);
  Buffer local(kSize);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kSize));
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));  // the mapping works

  KVF_ASSERT_OK(a->notify("peer", "deregister"));  // returns once we confirmed the revoke
  auto reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  ASSERT_EQ(*reply, "deregistered");
  Status s = w->post();
  if (s.ok()) s = w->wait(10s);
  EXPECT_EQ(s.code(), StatusCode::kRemoteError) << s.to_string();
  EXPECT_NE(s.message().find("refused"), std::string::npos) << s.to_string();
  EXPECT_TRUE(peer->alive());
}

// Memory that was not allocated as shared memory (reached through process_vm_*): an
// initiator that took the metadata before the peer deregistered it, and connects only
// afterwards, must neither write it nor read it (the peer may have reused it).
TEST(ShmFailure, StaleMetadataCannotReachDeregisteredProcessVmMemory) {
  constexpr std::size_t kSize = 4u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 6, .backend = "shm", .shared = false}, &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "shm");
  ASSERT_TRUE(a);
  Buffer local(kSize);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());  // metadata now; no shm session yet

  // Another agent (tcp only: it talks to the shm-only peer through the side channel)
  // asks the peer to deregister, and later for checksums of its buffer.
  auto helper = make_agent("helper", "tcp");
  ASSERT_TRUE(helper);
  ASSERT_TRUE(helper->listen("127.0.0.1", 0).ok());
  ASSERT_TRUE(helper->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*helper);
  KVF_ASSERT_OK(helper->notify("peer", "deregister"));
  auto reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  ASSERT_EQ(*reply, "deregistered");
  Buffer original(kSize);
  original.randomize(6);

  local.randomize(99);
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kSize));
  Status s = w.ok() ? w->post() : w.status();
  if (s.ok()) s = w->wait(10s);
  EXPECT_FALSE(s.ok()) << "a write into deregistered memory succeeded";
  EXPECT_NE(s.message().find("deregistered"), std::string::npos) << s.to_string();
  KVF_ASSERT_OK(helper->notify("peer", "checksum"));
  reply = inbox.next_from("peer", 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(original.data(), kSize)) << "the peer's deregistered memory was written";

  std::memset(local.data(), 0xa5, kSize);
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 0, kSize));
  s = r.ok() ? r->post() : r.status();
  if (s.ok()) s = r->wait(10s);
  EXPECT_FALSE(s.ok()) << "a read of deregistered memory succeeded";
  std::vector<std::uint8_t> poison(kSize, 0xa5);
  EXPECT_EQ(std::memcmp(local.data(), poison.data(), kSize), 0) << "a failed read changed our memory";
}

// Copies into a killed peer's shared mappings still complete (the mappings keep its
// pages): every transfer still in progress when kill(2) returned must end in kPeerLost,
// never "done", and within the peer timeout.
void killed_mid_transfer_case(TransferOp op) {
  constexpr std::size_t kChunk = 64u << 20, kSlots = 4;
  constexpr auto kPeerTimeout = 2000ms;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kChunk * kSlots, .seed = 0, .fill = "zero",
                                  .peer_timeout = kPeerTimeout, .backend = "shm", .shared = true},
                                 &error);
  ASSERT_TRUE(peer) << error;
  auto a = make_agent("initiator", "shm", kPeerTimeout);
  ASSERT_TRUE(a);
  Buffer local(kChunk);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  std::vector<TransferRequest> reqs;
  for (std::size_t i = 0; i < 24; ++i) {
    auto r = a->create_transfer(op, local.whole(), "peer", remote_range(*peer, (i % kSlots) * kChunk, kChunk));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    KVF_ASSERT_OK(r->post());
    reqs.push_back(std::move(r).value());
  }
  std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(peer->signal(SIGKILL));
  const auto killed = std::chrono::steady_clock::now();
  std::vector<TransferState> at_kill;
  for (auto& r : reqs) at_kill.push_back(r.state());
  int in_flight = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    Status s = reqs[i].wait(killed + kPeerTimeout + 3s - std::chrono::steady_clock::now());
    if (at_kill[i] != TransferState::kInProgress) continue;
    ++in_flight;
    EXPECT_EQ(s.code(), StatusCode::kPeerLost) << to_string(op) << " " << i << " was in progress at the kill: "
                                               << s.to_string();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - killed, kPeerTimeout + 1s);
  ASSERT_GT(in_flight, 0) << "every " << to_string(op) << " finished within 5 ms: nothing was in flight";
}

TEST(ShmFailure, WritesInFlightWhenThePeerIsKilledArePeerLost) { killed_mid_transfer_case(TransferOp::kWrite); }
TEST(ShmFailure, ReadsInFlightWhenThePeerIsKilledArePeerLost) { killed_mid_transfer_case(TransferOp::kRead); }

}  // namespace
}  // namespace kvferry::testing
