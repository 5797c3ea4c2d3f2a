// Many agents meeting through a real etcd (tests/etcd_server.h): joins, in-place updates,
// departures by shutdown and by lease expiry (of a peer never talked to), untrusted
// entries, and transfers in flight while the peer registers more memory.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "core/metadata.h"
#include "etcd_server.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    etcd_ = EtcdServer::start(&why);
    if (!etcd_) GTEST_SKIP() << "no etcd for the cluster suite: " << why;
    name_space_ = std::string("t-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  std::unique_ptr<Agent> join(const std::string& name, std::chrono::seconds lease = 2s) {
    AgentOptions o;
    o.name = name;
    o.backends = {"tcp"};
    o.metadata_service = etcd_->url(name_space_);
    o.metadata_lease = lease;
    auto a = Agent::create(o);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return a.ok() ? std::move(a).value() : nullptr;
  }
  // The next event about `peer` of `kind`, waiting up to `limit`; how long it took.
  static std::optional<Clock::duration> await_event(Agent& agent, const std::string& peer, PeerEventKind kind,
                                                    std::chrono::milliseconds limit) {
    const auto start = Clock::now();
    while (Clock::now() - start < limit) {
      agent.wait_for_peer_events(50ms);
      for (const PeerEvent& e : agent.take_peer_events())
        if (e.peer == peer && e.kind == kind) return Clock::now() - start;
    }
    return std::nullopt;
  }
  std::unique_ptr<EtcdServer> etcd_;
  std::string name_space_;
};

TEST_F(ClusterTest, AgentsFindEachOtherSeeUpdatesAndCleanDepartures) {
  auto a = join("alpha");
  auto b = join("beta");
  ASSERT_TRUE(a && b);
  // beta joined after alpha: alpha learns of it from the watch, beta from its first read.
  auto found = a->wait_for_peers("be", 1, 5s);
  ASSERT_TRUE(found.ok()) << found.status().to_string();
  EXPECT_EQ(*found, std::vector<std::string>{"beta"});
  EXPECT_EQ(b->find_peers(""), std::vector<std::string>{"alpha"});
  EXPECT_TRUE(await_event(*a, "beta", PeerEventKind::kJoined, 1s));

  // beta registers a named pool and publishes an entry: alpha sees both, in place.
  Buffer pool(1 << 20);
  ASSERT_TRUE(b->register_memory(pool.whole(), "pool").ok());
  const std::vector<std::uint8_t> geometry = {1, 2, 3};
  ASSERT_TRUE(b->set_metadata_entry("kv.geometry", geometry).ok());
  const auto until = Clock::now() + 5s;
  Result<DescriptorList> named = NotFound("not yet");
  Result<std::vector<std::uint8_t>> entry = NotFound("not yet");
  while (Clock::now() < until && (!named.ok() || !entry.ok())) {
    a->wait_for_peer_events(50ms);
    named = a->remote_named_regions("beta", "pool");
    entry = a->remote_metadata_entry("beta", "kv.geometry");
  }
  ASSERT_TRUE(named.ok()) << named.status().to_string();
  ASSERT_EQ(named->size(), 1u);
  EXPECT_EQ((*named)[0].address, pool.addr());
  EXPECT_EQ((*named)[0].length, pool.size());
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ(*entry, geometry);

  // A clean shutdown revokes the lease: the departure is seen at once, not after the TTL.
  (void)a->take_peer_events();
  b.reset();
  const auto left = await_event(*a, "beta", PeerEventKind::kLeft, 1500ms);
  ASSERT_TRUE(left) << "alpha did not see beta leave";
  EXPECT_TRUE(a->find_peers("").empty());
  // A later call to it says why it is gone.
  Buffer local(4096);
  ASSERT_TRUE(a->register_memory(local.whole()).ok());
  EXPECT_EQ(a->notify("beta", "hello").code(), StatusCode::kPeerLost);
}

TEST_F(ClusterTest, SilentPeerIsLostWhenItsLeaseRunsOutEvenIfNeverContacted) {
  auto a = join("watcher");
  ASSERT_TRUE(a);
  // A peer that publishes once and then dies without a word: its metadata, under a
  // 2 s lease that nobody renews.
  auto ghost_agent = make_agent("ghost", "tcp");
  ASSERT_TRUE(ghost_agent);
  auto md = ghost_agent->local_metadata();
  ASSERT_TRUE(md.ok());
  detail::EtcdClient client("127.0.0.1", etcd_->port(), 2s, std::make_shared<detail::EtcdTraffic>());
  auto lease = client.lease_grant(2);
  ASSERT_TRUE(lease.ok()) << lease.status().to_string();
  ASSERT_EQ(lease->ttl_seconds, 2);
  ASSERT_TRUE(client.put(name_space_ + "/agents/ghost", *md, lease->id).ok());
  ASSERT_TRUE(await_event(*a, "ghost", PeerEventKind::kJoined, 2s));
  const auto since = Clock::now();
  const auto left = await_event(*a, "ghost", PeerEventKind::kLeft, 6s);
  ASSERT_TRUE(left) << "the expired lease was not seen";
  const double seconds = std::chrono::duration<double>(Clock::now() - since).count();
  // etcd expires a lease at its TTL, checking twice a second: 2 s + scheduling slack.
  EXPECT_LE(seconds, 3.5);
  EXPECT_GE(seconds, 1.0);
}

// metadata_lease is a promise: an etcd whose lease floor would break it is refused at
// create, naming the figures, rather than silently reporting departures late.
TEST_F(ClusterTest, LeaseLongerThanThePromiseIsRefusedAtCreate) {
  std::string why;
  auto slow = EtcdServer::start(&why, EtcdServer::Timing::kDefaults);
  if (!slow) GTEST_SKIP() << "no second etcd: " << why;
  AgentOptions o;
  o.name = "impatient";
  o.backends = {"tcp"};
  o.metadata_service = slow->url(name_space_);
  o.metadata_lease = 2s;  // asks etcd for 1 s; etcd's default floor is 2 s
  auto a = Agent::create(o);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("granted a 2 s lease for the 1 s asked"), std::string::npos)
      << a.status().to_string();
  EXPECT_NE(a.status().message().find("raise metadata_lease to 3 s"), std::string::npos) << a.status().to_string();
  o.metadata_lease = 3s;
  auto b = Agent::create(o);
  EXPECT_TRUE(b.ok()) << b.status().to_string();
}

TEST_F(ClusterTest, CorruptOrMislabelledEntriesAreIgnored) {
  auto a = join("strict");
  ASSERT_TRUE(a);
  detail::EtcdClient client("127.0.0.1", etcd_->port(), 2s, std::make_shared<detail::EtcdTraffic>());
  const std::vector<std::uint8_t> garbage = {'n', 'o', 't', ' ', 'm', 'd'};
  ASSERT_TRUE(client.put(name_space_ + "/agents/junk", garbage).ok());
  auto other = make_agent("real-name", "tcp");
  ASSERT_TRUE(other);
  auto md = other->local_metadata();
  ASSERT_TRUE(md.ok());
  ASSERT_TRUE(client.put(name_space_ + "/agents/impostor", *md).ok());  // key and name differ
  // A valid one after them: once it is seen, the two before it were handled.
  ASSERT_TRUE(client.put(name_space_ + "/agents/real-name", *md).ok());
  ASSERT_TRUE(a->wait_for_peers("real-name", 1, 5s).ok());
  EXPECT_EQ(a->find_peers(""), std::vector<std::string>{"real-name"});
  const std::string metrics = a->metrics_text();
  EXPECT_NE(metrics.find("kvferry_metadata_service_warnings_total{agent=\"strict\"} 2"), std::string::npos)
      << metrics;
}

TEST_F(ClusterTest, UnreachableServiceFailsCreateWithAClearError) {
  AgentOptions o;
  o.name = "lonely";
  o.backends = {"tcp"};
  o.connect_timeout = 500ms;
  o.metadata_service = "etcd://127.0.0.1:1/ns";  // nothing listens on port 1
  auto a = Agent::create(o);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("etcd"), std::string::npos) << a.status().to_string();
  o.metadata_service = "redis://127.0.0.1:1/ns";
  EXPECT_EQ(Agent::create(o).status().code(), StatusCode::kInvalidArgument);
}

// The acceptance case of live metadata: eight transfers in flight from a peer while it
// registers more memory; none fails, and the new memory is usable at once after.
TEST_F(ClusterTest, PeerRegistersMemoryWhileEightTransfersAreInFlight) {
  auto reader = join("reader");
  auto holder = join("holder");
  ASSERT_TRUE(reader && holder);
  ASSERT_TRUE(reader->wait_for_peers("holder", 1, 5s).ok());
  constexpr std::size_t kEach = 8 << 20;
  constexpr int kTransfers = 8;
  Buffer source(kEach * kTransfers);
  source.randomize(42);
  ASSERT_TRUE(holder->register_memory(source.whole(), "pool").ok());
  Buffer sink(kEach * kTransfers, 0xEE);
  ASSERT_TRUE(reader->register_memory(sink.whole()).ok());
  const auto until = Clock::now() + 5s;
  while (Clock::now() < until && !reader->remote_named_regions("holder", "pool").ok())
    reader->wait_for_peer_events(20ms);
  ASSERT_TRUE(reader->remote_named_regions("holder", "pool").ok());
  (void)reader->take_peer_events();

  std::vector<TransferRequest> requests;
  for (int i = 0; i < kTransfers; ++i) {
    DescriptorList local(MemoryKind::kDram, {Descriptor{sink.addr(kEach * i), kEach, 0}});
    DescriptorList remote(MemoryKind::kDram, {Descriptor{source.addr(kEach * i), kEach, 0}});
    auto r = reader->create_transfer(TransferOp::kRead, local, "holder", remote);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    ASSERT_TRUE(r->post().ok());
    requests.push_back(std::move(r).value());
  }
  // While they run: more memory, announced to the reader through etcd.
  Buffer more(1 << 20);
  more.randomize(7);
  ASSERT_TRUE(holder->register_memory(more.whole(), "more").ok());
  int in_flight_at_register = 0;
  for (auto& r : requests) in_flight_at_register += r.state() == TransferState::kInProgress;
  EXPECT_GE(in_flight_at_register, 1);
  ASSERT_TRUE(await_event(*reader, "holder", PeerEventKind::kUpdated, 5s));
  int in_flight_at_update = 0;
  for (auto& r : requests) in_flight_at_update += r.state() == TransferState::kInProgress;
  for (int i = 0; i < kTransfers; ++i) {
    const Status s = requests[i].wait(30s);
    EXPECT_TRUE(s.ok()) << "transfer " << i << ": " << s.to_string();
  }
  EXPECT_EQ(std::memcmp(sink.data(), source.data(), sink.size()), 0);
  // The new region is reachable right away, and the old requests post again fine.
  auto named = reader->remote_named_regions("holder", "more");
  ASSERT_TRUE(named.ok()) << named.status().to_string();
  DescriptorList local(MemoryKind::kDram, {Descriptor{sink.addr(), more.size(), 0}});
  auto r = reader->create_transfer(TransferOp::kRead, local, "holder", *named);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_TRUE(r->post().ok());
  ASSERT_TRUE(r->wait(10s).ok());
  EXPECT_EQ(std::memcmp(sink.data(), more.data(), more.size()), 0);
  ASSERT_TRUE(requests[0].post().ok());
  EXPECT_TRUE(requests[0].wait(10s).ok());
  std::printf("in flight: %d of %d when registering, %d when the reader applied the update\n",
              in_flight_at_register, kTransfers, in_flight_at_update);
}

}  // namespace
}  // namespace kvferry::testing
