// Agent identity: a peer is its (name, instance id). Impostors under a live peer's name
// are refused (load_remote and side-channel pushes alike), restarted peers are accepted
// once the old instance is gone, and objects of one agent are never accepted by another.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "core/metadata.h"
#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::uint8_t> metadata_of(const Agent& a) {
  auto md = a.local_metadata();
  EXPECT_TRUE(md.ok()) << md.status().to_string();
  return md.ok() ? *md : std::vector<std::uint8_t>{};
}

DescriptorList first_regions(const Agent& a, const std::string& peer) {
  auto r = a.remote_regions(peer);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() && !r->empty() ? (*r)[0] : DescriptorList(MemoryKind::kDram);
}

TEST(Identity, InstanceIdsAreRandomPerAgent) {
  std::set<std::string> seen;
  for (int i = 0; i < 8; ++i) {
    auto a = make_agent("same-name", "loopback");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->instance_id().size(), 32u);
    EXPECT_TRUE(seen.insert(a->instance_id()).second) << "instance id repeated: " << a->instance_id();
  }
}

// An agent of this process taking a live agent's name: its metadata is refused, by
// load_remote and through the side channel, and the loaded view stays as it was.
TEST(Identity, AnotherInstanceOfALivePeerIsRefused) {
  auto x = make_agent("x", "tcp");
  auto p = make_agent("p", "tcp");
  auto impostor = make_agent("p", "tcp");
  ASSERT_TRUE(x && p && impostor);
  Buffer px(1u << 16), ix(1u << 12), xx(1u << 16);
  KVF_ASSERT_OK(p->register_memory(px.whole()));
  KVF_ASSERT_OK(impostor->register_memory(ix.whole()));
  KVF_ASSERT_OK(x->register_memory(xx.whole()));
  ASSERT_TRUE(x->load_remote(metadata_of(*p)).ok());

  auto refused = x->load_remote(metadata_of(*impostor));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find(p->instance_id()), std::string::npos) << refused.status().to_string();
  EXPECT_NE(refused.status().message().find("forget_remote"), std::string::npos) << refused.status().to_string();
  EXPECT_EQ(first_regions(*x, "p").total_bytes(), px.size()) << "the impostor replaced x's view of p";

  // Over the side channel: the impostor pushes its metadata to x.
  auto port = x->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  auto pushed = impostor->fetch_remote("127.0.0.1", *port, true, 3s);
  ASSERT_FALSE(pushed.ok()) << "x accepted a pushed impostor";
  EXPECT_NE(pushed.status().message().find("refused"), std::string::npos) << pushed.status().to_string();
  EXPECT_EQ(first_regions(*x, "p").total_bytes(), px.size());

  // The same instance may update what it announces (more memory) ...
  Buffer more(1u << 12);
  KVF_ASSERT_OK(p->register_memory(more.whole()));
  ASSERT_TRUE(x->load_remote(metadata_of(*p)).ok());
  EXPECT_EQ(first_regions(*x, "p").total_bytes(), px.size() + more.size());
  // ... and a transfer to p still lands in p's memory.
  xx.randomize(5);
  auto w = x->create_transfer(TransferOp::kWrite, xx.whole(), "p", px.whole());
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  EXPECT_EQ(std::memcmp(px.data(), xx.data(), px.size()), 0);

  // forget_remote is the explicit way to let another instance take the name.
  KVF_ASSERT_OK(x->forget_remote("p"));
  ASSERT_TRUE(x->load_remote(metadata_of(*impostor)).ok());
  EXPECT_EQ(first_regions(*x, "p").total_bytes(), ix.size());
}

// The same instance id does not let metadata move the peer elsewhere: copying a live
// peer's (public) instance id gains an impostor nothing.
TEST(Identity, TheSameInstanceCannotMoveElsewhere) {
  auto x = make_agent("x", "tcp");
  auto p = make_agent("p", "tcp");
  ASSERT_TRUE(x && p);
  ASSERT_TRUE(x->load_remote(metadata_of(*p)).ok());
  ASSERT_TRUE(p->listen("127.0.0.1", 0).ok());
  ASSERT_TRUE(x->load_remote(metadata_of(*p)).ok()) << "announcing a side channel later is an update";
  auto md = detail::decode_metadata(metadata_of(*p));
  ASSERT_TRUE(md.ok());
  auto moved = *md;
  moved.side_channel->port = static_cast<std::uint16_t>(moved.side_channel->port + 1);
  auto r = x->load_remote(detail::encode_metadata(moved));
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().to_string();
  moved = *md;
  ASSERT_FALSE(moved.backends.empty());
  moved.backends[0].info.push_back(0);
  r = x->load_remote(detail::encode_metadata(moved));
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().to_string();
  moved = *md;
  moved.process_id += "x";
  r = x->load_remote(detail::encode_metadata(moved));
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().to_string();
  moved = *md;  // regions and entries may change
  moved.entries["k"] = {1};
  r = x->load_remote(detail::encode_metadata(moved));
  EXPECT_TRUE(r.ok()) << r.status().to_string();
}

// A restarted agent of this process (the old one destroyed) is accepted without
// forget_remote: the old instance is known gone.
TEST(Identity, ARestartedPeerOfThisProcessIsAccepted) {
  auto x = make_agent("x", "tcp");
  auto p = make_agent("p", "tcp");
  ASSERT_TRUE(x && p);
  ASSERT_TRUE(x->load_remote(metadata_of(*p)).ok());
  p.reset();
  auto reborn = make_agent("p", "tcp");
  ASSERT_TRUE(reborn);
  Buffer b(4096);
  KVF_ASSERT_OK(reborn->register_memory(b.whole()));
  auto r = x->load_remote(metadata_of(*reborn));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(first_regions(*x, "p").total_bytes(), b.size());
}

// A third process names itself like a live peer process P and pushes its metadata to X
// over X's side channel: refused. X's view of P and X's transfers to P are unchanged.
TEST(Identity, ImpostorProcessCannotTakeALivePeersName) {
  constexpr std::uint64_t kSize = 1u << 20;
  std::string error;
  auto real = PeerProcess::spawn({.name = "p", .size = kSize, .seed = 21}, &error);
  ASSERT_TRUE(real) << error;
  auto x = make_agent("x", "tcp");
  ASSERT_TRUE(x);
  Buffer local(kSize);
  KVF_ASSERT_OK(x->register_memory(local.whole()));
  ASSERT_TRUE(x->fetch_remote("127.0.0.1", real->port()).ok());
  auto port = x->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  const DescriptorList real_remote(MemoryKind::kDram, {Descriptor{real->address(), kSize, 0}});
  // A connection to P exists (and is healthy) before the impostor shows up.
  auto warm = x->create_transfer(TransferOp::kRead, local.whole(), "p", real_remote);
  ASSERT_TRUE(warm.ok());
  KVF_ASSERT_OK(warm->post());
  KVF_ASSERT_OK(warm->wait(10s));

  // The impostor pushes before it prints READY: once spawn returns, the push is done.
  auto impostor = PeerProcess::spawn({.name = "p", .size = kSize / 2, .seed = 22, .push_to = *port}, &error);
  ASSERT_TRUE(impostor) << error;
  auto regions = x->remote_regions("p");
  ASSERT_TRUE(regions.ok());
  ASSERT_EQ(regions->size(), 1u);
  ASSERT_EQ((*regions)[0].size(), 1u);
  EXPECT_EQ((*regions)[0][0].address, real->address()) << "the impostor replaced x's view of p";
  EXPECT_EQ((*regions)[0][0].length, kSize);

  // X's next write "to P" lands in P: P's checksum is of X's bytes.
  local.randomize(23);
  Inbox inbox(*x);
  TransferOptions o;
  o.notification = "checksum";
  auto w = x->create_transfer(TransferOp::kWrite, local.whole(), "p", real_remote, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  auto reply = inbox.next_from("p", 10s);
  ASSERT_TRUE(reply) << "no checksum from p";
  EXPECT_EQ(*reply, checksum_text(local.data(), kSize));
}

// A PreparedList or a request of a destroyed agent is refused by a new agent, even one
// allocated at the same address under the same name.
TEST(Identity, ObjectsOfADestroyedAgentAreRefused) {
  auto p = make_agent("p", "tcp");
  ASSERT_TRUE(p);
  Buffer pb(1u << 16), mine(1u << 16);
  KVF_ASSERT_OK(p->register_memory(pb.whole()));
  int accepted = 0;
  for (int i = 0; i < 50; ++i) {
    PreparedList old_local, old_remote;
    std::optional<TransferRequest> old_request;
    {
      auto a = make_agent("a", "tcp");
      ASSERT_TRUE(a);
      KVF_ASSERT_OK(a->register_memory(mine.whole()));
      ASSERT_TRUE(a->load_remote(metadata_of(*p)).ok());
      auto l = a->prepare_local(mine.whole());
      auto r = a->prepare_remote("p", pb.whole());
      ASSERT_TRUE(l.ok() && r.ok());
      old_local = *l;
      old_remote = *r;
      auto req = a->create_transfer(TransferOp::kRead, mine.whole(), "p", pb.whole());
      ASSERT_TRUE(req.ok());
      old_request.emplace(std::move(req).value());
    }
    auto b = make_agent("a", "tcp");
    ASSERT_TRUE(b);
    KVF_ASSERT_OK(b->register_memory(mine.whole()));
    ASSERT_TRUE(b->load_remote(metadata_of(*p)).ok());
    const std::uint32_t idx[] = {0};
    auto t = b->create_transfer(TransferOp::kRead, old_local, idx, old_remote, idx);
    if (t.ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << t.status().to_string();
    }
    Status post = old_request->post();
    EXPECT_FALSE(post.ok()) << "a request of a destroyed agent was posted";
  }
  EXPECT_EQ(accepted, 0) << "prepared lists of a destroyed agent were accepted by a new one";
}

// Region ids are unique to an agent instance (they do not restart at 1 in every agent).
TEST(Identity, RegionIdsDifferBetweenAgents) {
  auto a = make_agent("a", "loopback");
  auto b = make_agent("a", "loopback");
  ASSERT_TRUE(a && b);
  Buffer x(4096);
  KVF_ASSERT_OK(a->register_memory(x.whole()));
  KVF_ASSERT_OK(b->register_memory(x.whole()));
  auto ma = detail::decode_metadata(metadata_of(*a));
  auto mb = detail::decode_metadata(metadata_of(*b));
  ASSERT_TRUE(ma.ok() && mb.ok());
  ASSERT_EQ(ma->regions.size(), 1u);
  ASSERT_EQ(mb->regions.size(), 1u);
  EXPECT_NE(ma->regions[0].id, mb->regions[0].id);
  EXPECT_NE(ma->instance, mb->instance);
}

}  // namespace
}  // namespace kvferry::testing
