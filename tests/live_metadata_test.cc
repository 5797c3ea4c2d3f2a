// Named regions and live metadata without a metadata service: the side channel carries
// the updates (fetch_remote again), in place; transfers in flight and prepared lists
// survive; stale metadata is ignored; a peer's named regions come back in order.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

TEST(NamedRegions, FoundByNameInRegistrationOrder) {
  auto a = make_agent("named-a", "tcp");
  auto b = make_agent("named-b", "tcp");
  ASSERT_TRUE(a && b);
  Buffer l0(3 * 4096), l1(2 * 4096), anon(4096);
  // Layer 0 registered as three regions, deliberately given high address first.
  DescriptorList layer0(MemoryKind::kDram, {Descriptor{l0.addr(8192), 4096, 0}, Descriptor{l0.addr(0), 4096, 0},
                                            Descriptor{l0.addr(4096), 4096, 0}});
  ASSERT_TRUE(a->register_memory(layer0, "kv.layer.0").ok());
  ASSERT_TRUE(a->register_memory(l1.whole(), "kv.layer.1").ok());
  ASSERT_TRUE(a->register_memory(anon.whole()).ok());
  // Bad names and a second kind under one name are refused, naming the problem.
  Buffer more(4096);
  EXPECT_EQ(a->register_memory(more.whole(), "has space").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a->register_memory(more.whole(), std::string(129, 'x')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a->register_memory(more.whole(), "").code(), StatusCode::kInvalidArgument);

  auto md = a->local_metadata();
  ASSERT_TRUE(md.ok());
  ASSERT_TRUE(b->load_remote(*md).ok());
  auto names = b->remote_region_names("named-a");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"kv.layer.0", "kv.layer.1"}));
  auto got = b->remote_named_regions("named-a", "kv.layer.0");
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ((*got)[i].address, layer0[i].address) << i;
  EXPECT_EQ(b->remote_named_regions("named-a", "nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(b->remote_named_regions("nobody", "kv.layer.0").status().code(), StatusCode::kNotFound);

  // Deregistering drops the name with the regions.
  ASSERT_TRUE(a->deregister_memory(l1.whole()).ok());
  ASSERT_TRUE(b->load_remote(*a->local_metadata()).ok());
  EXPECT_EQ(b->remote_named_regions("named-a", "kv.layer.1").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(b->remote_named_regions("named-a", "kv.layer.0").ok());
}

TEST(LiveMetadata, UpdatesApplyInPlaceAndStaleOnesAreIgnored) {
  // Memory outlives the agents that registered it (the contract; TSan checks it too).
  Buffer first(4096), second(4096), local(4096);
  auto a = make_agent("live-a", "tcp");
  auto b = make_agent("live-b", "tcp");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->register_memory(first.whole()).ok());
  ASSERT_TRUE(b->register_memory(local.whole()).ok());
  auto old_md = a->local_metadata();
  ASSERT_TRUE(old_md.ok());
  ASSERT_TRUE(b->load_remote(*old_md).ok());
  auto prepared = b->prepare_remote("live-a", first.whole());
  ASSERT_TRUE(prepared.ok());
  ASSERT_TRUE(a->register_memory(second.whole(), "second").ok());
  ASSERT_TRUE(b->load_remote(*a->local_metadata()).ok());
  // The stale blob again (a late, reordered delivery): nothing changes.
  ASSERT_TRUE(b->load_remote(*old_md).ok());
  EXPECT_TRUE(b->remote_named_regions("live-a", "second").ok());
  auto events = b->take_peer_events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, PeerEventKind::kJoined);
  EXPECT_EQ(events[1].kind, PeerEventKind::kUpdated);
  EXPECT_GT(events[1].revision, events[0].revision);
  // A list prepared before the update is still good.
  auto local_prepared = b->prepare_local(local.whole());
  ASSERT_TRUE(local_prepared.ok());
  const std::uint32_t idx[] = {0};
  auto r = b->create_transfer(TransferOp::kRead, *local_prepared, idx, *prepared, idx);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_TRUE(r->post().ok());
  EXPECT_TRUE(r->wait(10s).ok());
}

// Over the side channel: eight reads in flight from a peer when it registers more memory
// and the reader fetches its metadata again (so the update lands while they run).
TEST(LiveMetadata, EightTransfersInFlightSurviveAnUpdateOverTheSideChannel) {
  constexpr std::size_t kEach = 8 << 20;
  constexpr int kTransfers = 8;
  // Memory outlives the agents that registered it (the contract; TSan checks it too).
  Buffer source(kEach * kTransfers), sink(kEach * kTransfers, 0xEE), more(1 << 20);
  auto holder = make_agent("side-holder", "tcp");
  auto reader = make_agent("side-reader", "tcp");
  ASSERT_TRUE(holder && reader);
  auto port = holder->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  source.randomize(3);
  more.randomize(4);
  ASSERT_TRUE(holder->register_memory(source.whole()).ok());
  ASSERT_TRUE(reader->register_memory(sink.whole()).ok());
  ASSERT_TRUE(reader->fetch_remote("127.0.0.1", *port).ok());
  int in_flight_total = 0;
  for (int round = 0; round < 3; ++round) {
    std::memset(sink.data(), 0xEE, sink.size());
    std::vector<TransferRequest> requests;
    for (int i = 0; i < kTransfers; ++i) {
      DescriptorList l(MemoryKind::kDram, {Descriptor{sink.addr(kEach * i), kEach, 0}});
      DescriptorList r(MemoryKind::kDram, {Descriptor{source.addr(kEach * i), kEach, 0}});
      auto req = reader->create_transfer(TransferOp::kRead, l, "side-holder", r);
      ASSERT_TRUE(req.ok()) << req.status().to_string();
      ASSERT_TRUE(req->post().ok());
      requests.push_back(std::move(req).value());
    }
    if (round == 0) {
      ASSERT_TRUE(holder->register_memory(more.whole(), "more").ok());
    }
    ASSERT_TRUE(reader->fetch_remote("127.0.0.1", *port).ok());  // applies the update now
    int in_flight = 0;
    for (auto& r : requests) in_flight += r.state() == TransferState::kInProgress;
    in_flight_total += in_flight;
    for (int i = 0; i < kTransfers; ++i) EXPECT_TRUE(requests[i].wait(30s).ok()) << "round " << round << " #" << i;
    EXPECT_EQ(std::memcmp(sink.data(), source.data(), sink.size()), 0);
    std::printf("round %d: %d of %d transfers in flight when the update was applied\n", round, in_flight,
                kTransfers);
  }
  EXPECT_GE(in_flight_total, 1) << "no transfer was in flight at an update: the test proved nothing";
  auto named = reader->remote_named_regions("side-holder", "more");
  ASSERT_TRUE(named.ok());
  DescriptorList l(MemoryKind::kDram, {Descriptor{sink.addr(), more.size(), 0}});
  auto req = reader->create_transfer(TransferOp::kRead, l, "side-holder", *named);
  ASSERT_TRUE(req.ok());
  ASSERT_TRUE(req->post().ok());
  ASSERT_TRUE(req->wait(10s).ok());
  EXPECT_EQ(std::memcmp(sink.data(), more.data(), more.size()), 0);
}

}  // namespace
}  // namespace kvferry::testing
