// Multi-process suite: an initiator agent in this process against kvferry_test_peer in a
// child process (tests/test_peer.cc), over the tcp backend and the side channel.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <numeric>
#include <random>

#include "peer_test_util.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// Offset of the first differing byte, or -1.
long long first_diff(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return static_cast<long long>(i);
  return -1;
}

TEST(MultiProcess, FetchRemoteOverSideChannel) {
  constexpr std::size_t kSize = 64u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 11});
  ASSERT_TRUE(peer);
  Buffer local(kSize, 0xEE);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  auto name = a->fetch_remote("127.0.0.1", peer->port());
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  EXPECT_EQ(*name, "peer");
  EXPECT_EQ(a->remote_agents(), std::vector<std::string>{"peer"});

  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 0, kSize));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  EXPECT_EQ(r->telemetry().backend, suite_backend());
  Buffer expected(kSize);
  expected.randomize(11);
  EXPECT_EQ(first_diff(local.data(), expected.data(), kSize), -1);
  EXPECT_TRUE(peer->alive());
}

TEST(MultiProcess, WriteThenPeerChecksumMatches) {
  constexpr std::size_t kSize = 32u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 12});
  ASSERT_TRUE(peer);
  Buffer local(kSize), back(kSize);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  KVF_ASSERT_OK(a->register_memory(back.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);

  local.randomize(22);
  TransferOptions o;
  o.notification = "checksum";
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kSize), o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  auto reply = inbox.next_from("peer", 20s);
  ASSERT_TRUE(reply) << "no checksum reply from the peer";
  EXPECT_EQ(*reply, checksum_text(local.data(), kSize));
  KVF_ASSERT_OK(w->wait(10s));

  auto r = a->create_transfer(TransferOp::kRead, back.whole(), "peer", remote_range(*peer, 0, kSize));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  EXPECT_EQ(first_diff(local.data(), back.data(), kSize), -1);
}

TEST(MultiProcess, NotificationArrivesAfterData) {
  // 64 MiB: striped in 1 MiB chunks over every tcp stream; the notification travels on one
  // of them and may only be delivered once all streams' bytes landed. Each write carries
  // different data, so a checksum of stale bytes would not match.
  constexpr std::size_t kSize = 64u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 13});
  ASSERT_TRUE(peer);
  Buffer local(kSize);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);
  TransferOptions o;
  o.notification = "checksum";

  // Fresh requests.
  for (int i = 0; i < 4; ++i) {
    local.randomize(300 + static_cast<std::uint64_t>(i));
    auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kSize), o);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    KVF_ASSERT_OK(w->post());
    auto reply = inbox.next_from("peer", 20s);
    ASSERT_TRUE(reply) << "iteration " << i << ": no checksum reply";
    EXPECT_EQ(*reply, checksum_text(local.data(), kSize)) << "iteration " << i;
    KVF_ASSERT_OK(w->wait(10s));
  }
  // One request posted again and again: its notification must follow each post's data.
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kSize), o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  for (int i = 0; i < 3; ++i) {
    local.randomize(400 + static_cast<std::uint64_t>(i));
    KVF_ASSERT_OK(w->post());
    auto reply = inbox.next_from("peer", 20s);
    ASSERT_TRUE(reply) << "repost " << i << ": no checksum reply";
    EXPECT_EQ(*reply, checksum_text(local.data(), kSize)) << "repost " << i;
    KVF_ASSERT_OK(w->wait(10s));
  }
  EXPECT_EQ(w->telemetry().posts, 3u);
}

TEST(MultiProcess, IndexTransferScatteredBlocks) {
  constexpr std::size_t kBlock = 64u << 10, kBlocks = 1024, kSize = kBlock * kBlocks, kPick = 256;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 14});
  ASSERT_TRUE(peer);
  Buffer local(kSize, 0);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);

  DescriptorList l(MemoryKind::kDram), r(MemoryKind::kDram);
  for (std::size_t i = 0; i < kBlocks; ++i) {
    l.add(local.addr(i * kBlock), kBlock);
    r.add(peer->address() + i * kBlock, kBlock);
  }
  auto lp = a->prepare_local(l);
  auto rp = a->prepare_remote("peer", r);
  ASSERT_TRUE(lp.ok()) << lp.status().to_string();
  ASSERT_TRUE(rp.ok()) << rp.status().to_string();
  EXPECT_EQ(rp->peer(), "peer");

  std::mt19937_64 rng(4);
  auto pick = [&] {
    std::vector<std::uint32_t> ids(kBlocks);
    std::iota(ids.begin(), ids.end(), 0u);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(kPick);
    return ids;
  };
  const std::vector<std::uint32_t> li = pick(), ri = pick();

  // Read: remote ri[k] -> local li[k].
  auto t = a->create_transfer(TransferOp::kRead, *lp, li, *rp, ri);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->telemetry().descriptors_requested, kPick);
  KVF_ASSERT_OK(t->post());
  KVF_ASSERT_OK(t->wait(20s));
  Buffer expected(kSize);
  expected.randomize(14);
  std::vector<bool> written(kBlocks, false);
  for (std::size_t k = 0; k < kPick; ++k) {
    written[li[k]] = true;
    ASSERT_EQ(std::memcmp(local.data() + li[k] * kBlock, expected.data() + ri[k] * kBlock, kBlock), 0)
        << "block pair " << k << ": local " << li[k] << " <- remote " << ri[k];
  }
  for (std::size_t b = 0; b < kBlocks; ++b) {
    if (written[b]) continue;
    const std::uint8_t* p = local.data() + b * kBlock;
    ASSERT_TRUE(std::all_of(p, p + kBlock, [](std::uint8_t c) { return c == 0; })) << "untouched block " << b;
  }

  // Write: local li[k] -> remote wi[k]; the peer's checksum must match the expected image.
  local.randomize(44);
  const std::vector<std::uint32_t> wi = pick();
  TransferOptions o;
  o.notification = "checksum";
  auto w = a->create_transfer(TransferOp::kWrite, *lp, li, *rp, wi, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  for (std::size_t k = 0; k < kPick; ++k)
    std::memcpy(expected.data() + wi[k] * kBlock, local.data() + li[k] * kBlock, kBlock);
  auto reply = inbox.next_from("peer", 20s);
  ASSERT_TRUE(reply) << "no checksum reply";
  EXPECT_EQ(*reply, checksum_text(expected.data(), kSize));
  KVF_ASSERT_OK(w->wait(10s));
}

TEST(MultiProcess, StandaloneNotifyRoundTrip) {
  auto peer = spawn_peer({.name = "peer", .size = 1u << 20, .seed = 15});
  ASSERT_TRUE(peer);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);
  const auto t0 = std::chrono::steady_clock::now();
  KVF_ASSERT_OK(a->notify("peer", "echo hi"));
  auto reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply) << "no echo within 5 s";
  EXPECT_EQ(*reply, "hi");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  KVF_ASSERT_OK(a->notify("peer", "something else"));
  reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, "got something else");
  // In order: several in a row come back in the order sent.
  for (int i = 0; i < 20; ++i) KVF_ASSERT_OK(a->notify("peer", "echo " + std::to_string(i)));
  for (int i = 0; i < 20; ++i) {
    reply = inbox.next_from("peer", 5s);
    ASSERT_TRUE(reply) << i;
    EXPECT_EQ(*reply, std::to_string(i));
  }
  KVF_ASSERT_OK(a->notify("peer", "quit"));
  int st = 0;
  EXPECT_TRUE(peer->wait_exit(5s, &st)) << "the peer did not exit on 'quit'";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "wait status " << st;
}

}  // namespace
}  // namespace kvferry::testing
