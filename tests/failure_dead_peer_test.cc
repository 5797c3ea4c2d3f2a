// Failure suite, dead and stopped peers: a peer killed or stopped mid-transfer turns its
// requests into kPeerLost / a timeout within the bound; later calls fail fast; a new
// process under the same name is reachable again. Every wait is bounded.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "failure_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(Failure, PeerKilledMidTransferBecomesPeerLostWithinBound) {
  constexpr auto kPeerTimeout = 2000ms;
  LoadedPeer loaded;
  ASSERT_NO_FATAL_FAILURE(load_peer("victim", kPeerTimeout, &loaded));
  auto& [peer, local, a] = loaded;

  auto reqs = post_transfers(*a, *peer, local, 16);  // 4 GiB through loopback: well over 50 ms
  ASSERT_EQ(reqs.size(), 16u);
  std::this_thread::sleep_for(50ms);
  int in_flight = 0;
  for (auto& r : reqs) in_flight += r.state() == TransferState::kInProgress;
  ASSERT_TRUE(peer->signal(SIGKILL));
  const auto killed = Clock::now();
  ASSERT_TRUE(peer->wait_exit(5s)) << "SIGKILLed peer did not exit";
  ASSERT_GT(in_flight, 0) << "every read finished within 50 ms: the link is too fast for this test";

  const int lost = wait_all_lost(reqs, killed + kPeerTimeout + 3s);
  const auto settled_ms = ms_since(killed);
  EXPECT_GT(lost, 0);
  EXPECT_LE(settled_ms, std::chrono::duration_cast<std::chrono::milliseconds>(kPeerTimeout + 1s).count())
      << "transfers of a killed peer took " << settled_ms << " ms to fail";

  // Later calls to the lost peer fail fast with kPeerLost.
  DescriptorList small_local(MemoryKind::kDram, {Descriptor{local.addr(), 4096, 0}});
  auto t0 = Clock::now();
  auto again = a->create_transfer(TransferOp::kRead, small_local, "victim", remote_range(*peer, 0, 4096));
  Status fast = again.ok() ? again->post() : again.status();
  if (fast.ok()) fast = again->wait(kPeerTimeout + 2s);  // not fast: reported below
  const auto fast_ms = ms_since(t0);
  EXPECT_EQ(fast.code(), StatusCode::kPeerLost) << fast.to_string();
  EXPECT_LT(fast_ms, 100) << "a call to a lost peer took " << fast_ms << " ms";
  // A lost request can be posted again: it must fail fast as well.
  t0 = Clock::now();
  Status repost = reqs.back().post();
  if (repost.ok()) repost = reqs.back().wait(kPeerTimeout + 2s);
  EXPECT_EQ(repost.code(), StatusCode::kPeerLost) << repost.to_string();
  EXPECT_LT(ms_since(t0), 100);
  // notify to a lost peer: an error, promptly (its side channel is gone too).
  t0 = Clock::now();
  EXPECT_FALSE(a->notify("victim", "anyone?").ok());
  EXPECT_LT(ms_since(t0), 1000);

  // A new process under the same name: fresh metadata makes it reachable again.
  constexpr std::size_t kSize2 = 64u << 20;
  auto reborn = spawn_peer({.name = "victim", .size = kSize2, .seed = 66, .peer_timeout = kPeerTimeout});
  ASSERT_TRUE(reborn);
  auto name = a->fetch_remote("127.0.0.1", reborn->port());
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  EXPECT_EQ(*name, "victim");
  DescriptorList head(MemoryKind::kDram, {Descriptor{local.addr(), kSize2, 0}});
  auto r = a->create_transfer(TransferOp::kRead, head, "victim", remote_range(*reborn, 0, kSize2));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  Buffer expected(kSize2);
  expected.randomize(66);
  EXPECT_EQ(std::memcmp(local.data(), expected.data(), kSize2), 0);
}

// A stopped process keeps its sockets open and its kernel keeps acknowledging what fits
// in its socket buffers: only the initiator's no-progress timer can notice.
void stopped_peer_case(TransferOp op) {
  constexpr auto kPeerTimeout = 2000ms;
  LoadedPeer loaded;
  ASSERT_NO_FATAL_FAILURE(load_peer("sleeper", kPeerTimeout, &loaded));
  auto& [peer, local, a] = loaded;

  auto reqs = post_transfers(*a, *peer, local, 16, op);
  ASSERT_EQ(reqs.size(), 16u);
  std::this_thread::sleep_for(50ms);
  int in_flight = 0;
  for (auto& r : reqs) in_flight += r.state() == TransferState::kInProgress;
  ASSERT_TRUE(peer->signal(SIGSTOP));
  const auto stopped = Clock::now();
  ASSERT_GT(in_flight, 0) << "every transfer finished within 50 ms: the link is too fast for this test";

  const int lost = wait_all_lost(reqs, stopped + kPeerTimeout + 3s);
  const auto settled_ms = ms_since(stopped);
  EXPECT_GT(lost, 0) << to_string(op) << "s of a stopped peer never failed";
  EXPECT_LE(settled_ms, std::chrono::duration_cast<std::chrono::milliseconds>(kPeerTimeout + 2s).count())
      << to_string(op) << "s of a stopped peer took " << settled_ms << " ms to fail";
  EXPECT_TRUE(peer->alive()) << "the stopped peer should still exist";

  // Later calls fail fast while it is lost.
  DescriptorList small_local(MemoryKind::kDram, {Descriptor{local.addr(), 4096, 0}});
  auto t0 = Clock::now();
  auto again = a->create_transfer(op, small_local, "sleeper", remote_range(*peer, 0, 4096));
  Status fast = again.ok() ? again->post() : again.status();
  if (fast.ok()) fast = again->wait(1s);
  EXPECT_EQ(fast.code(), StatusCode::kPeerLost) << fast.to_string();
  EXPECT_LT(ms_since(t0), 100);

  peer->signal(SIGKILL);
  peer->signal(SIGCONT);
  EXPECT_TRUE(peer->wait_exit(5s));
}

// LIBRARY BUG (found by this test): reads from a SIGSTOPped peer never fail. The tcp
// engine counts every successful send as progress (on_writable sets last_progress), and
// its keep-alive ping, sent every peer_timeout/4 while nothing arrives, is accepted by
// the stopped peer's kernel socket buffer - so the no-progress timer is reset forever and
// TCP_USER_TIMEOUT never fires either (the data is acknowledged). Observed: all 16 reads
// still kInProgress 96 s after SIGSTOP with peer_timeout = 2 s.
TEST(Failure, PeerStoppedMidTransferTimesOut) { stopped_peer_case(TransferOp::kRead); }

// The same with writes: the stopped peer's socket buffers fill up, sends stop, and the
// no-progress timer can fire.
TEST(Failure, PeerStoppedMidWriteTimesOut) { stopped_peer_case(TransferOp::kWrite); }

}  // namespace
}  // namespace kvferry::testing
