// shm on the agent's reactor: sessions add no thread, on either side. An agent that
// talks to 8 peer processes over shm has as many threads as with 1, and its one reactor
// thread wakes for the acknowledgements; a target that 8 initiators connect to has as
// many threads as with 1. Every write carries a notification whose checksum reply proves
// the bytes landed.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "peer_test_util.h"
#include "test_util.h"
#include "thread_census.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kSize = 1u << 20;

// A notified write of fresh bytes to `peer`, checked by the checksum it answers.
void write_and_check(Agent& a, Inbox& inbox, const PeerProcess& peer, std::uint8_t* local,
                     std::uint64_t seed) {
  Buffer fresh(kSize);
  fresh.randomize(seed);
  std::memcpy(local, fresh.data(), kSize);
  TransferOptions o;
  o.notification = "checksum";
  auto w = a.create_transfer(TransferOp::kWrite,
                             DescriptorList(MemoryKind::kDram, {make_descriptor(local, kSize)}), peer.name(),
                             remote_range(peer, 0, kSize), o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->telemetry().backend, "shm");
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));  // done: the peer acknowledged the notification
  auto reply = inbox.next_from(peer.name(), 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(fresh.data(), kSize));
}

TEST(ShmReactor, EightPeersAddNoThreadAndTheReactorServesThem) {
  constexpr int kPeers = 8;
  std::vector<std::unique_ptr<PeerProcess>> peers;
  for (int i = 0; i < kPeers; ++i) {
    std::string error;
    peers.push_back(PeerProcess::spawn({.name = "peer" + std::to_string(i),
                                        .size = kSize,
                                        .seed = 40u + i,
                                        .backend = "shm",
                                        .shared = true},
                                       &error));
    ASSERT_TRUE(peers.back()) << error;
  }
  auto a = make_agent("initiator", "shm");
  ASSERT_TRUE(a);
  Buffer local(kSize);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  Inbox inbox(*a);

  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peers[0]->port()).ok());
  write_and_check(*a, inbox, *peers[0], local.data(), 1);
  const auto with_one = threads_of();
  auto reactors = threads_named("kvf-reactor");
  ASSERT_EQ(reactors.size(), 1u);                 // the agent's one event loop
  EXPECT_TRUE(threads_named("kvf-shm").empty());  // no loop of shm's own
  const std::uint64_t woke_before = reactors[0].woke;

  for (int i = 1; i < kPeers; ++i) {
    ASSERT_TRUE(a->fetch_remote("127.0.0.1", peers[i]->port()).ok());
    write_and_check(*a, inbox, *peers[i], local.data(), 10u + i);
  }
  // And all eight again, now that every session is open.
  for (int i = 0; i < kPeers; ++i) write_and_check(*a, inbox, *peers[i], local.data(), 100u + i);
  const auto with_eight = threads_of();
  EXPECT_EQ(with_eight.size(), with_one.size()) << "sessions must not start threads";
  reactors = threads_named("kvf-reactor");
  ASSERT_EQ(reactors.size(), 1u);
  // Each notified write's acknowledgement rings the initiator's eventfd, which only the
  // reactor watches: it woke at least once per write.
  EXPECT_GE(reactors[0].woke - woke_before, static_cast<std::uint64_t>(kPeers));
}

TEST(ShmReactor, EightInitiatorsAddNoThreadToTheTarget) {
  constexpr int kInitiators = 8;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 7, .backend = "shm", .shared = true},
                                 &error);
  ASSERT_TRUE(peer) << error;
  std::vector<std::unique_ptr<Agent>> agents;
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::size_t with_one = 0;
  std::uint64_t woke_with_one = 0;
  for (int i = 0; i < kInitiators; ++i) {
    agents.push_back(make_agent("initiator" + std::to_string(i), "shm"));
    ASSERT_TRUE(agents.back());
    buffers.push_back(std::make_unique<Buffer>(kSize));
    KVF_ASSERT_OK(agents.back()->register_memory(buffers.back()->whole()));
    ASSERT_TRUE(agents.back()->fetch_remote("127.0.0.1", peer->port()).ok());
    Inbox inbox(*agents.back());
    write_and_check(*agents.back(), inbox, *peer, buffers.back()->data(), 200u + i);
    if (i == 0) {
      with_one = threads_of(peer->pid()).size();
      auto reactors = threads_named("kvf-reactor", peer->pid());
      ASSERT_EQ(reactors.size(), 1u);
      woke_with_one = reactors[0].woke;
    }
  }
  EXPECT_EQ(threads_of(peer->pid()).size(), with_one) << "initiators must not start threads in the target";
  auto reactors = threads_named("kvf-reactor", peer->pid());
  ASSERT_EQ(reactors.size(), 1u);
  // Each new initiator's hello, and each notification (its eventfd rung while the target
  // sleeps), woke the target's one reactor.
  EXPECT_GE(reactors[0].woke - woke_with_one, static_cast<std::uint64_t>(kInitiators - 1));
  EXPECT_TRUE(threads_named("kvf-shm", peer->pid()).empty());
}

}  // namespace
}  // namespace kvferry::testing
