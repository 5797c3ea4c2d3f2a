// The conformance suite: written once, run against every backend that can connect two
// agents of one test process. A new backend joins with one line in kBackends.
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <thread>

#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

const std::string kBackends[] = {"loopback", "tcp", "shm"};

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    a_ = make_agent("initiator", GetParam());
    b_ = make_agent("target", GetParam());
    ASSERT_TRUE(a_ && b_);
    KVF_ASSERT_OK(a_->register_memory(local_.whole()));
    KVF_ASSERT_OK(b_->register_memory(remote_.whole()));
    introduce(*a_, *b_);
  }

  static constexpr std::size_t kSize = 8u << 20;
  Buffer local_{kSize};
  Buffer remote_{kSize};
  std::unique_ptr<Agent> a_, b_;
};

TEST_P(Conformance, WriteThenReadBackMatches) {
  local_.randomize(1);
  std::memset(remote_.data(), 0xAB, kSize);
  auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  EXPECT_EQ(w->state(), TransferState::kDone);
  EXPECT_EQ(std::memcmp(local_.data(), remote_.data(), kSize), 0);
  EXPECT_EQ(w->telemetry().backend, GetParam());

  std::memset(local_.data(), 0xCD, kSize);
  auto r = a_->create_transfer(TransferOp::kRead, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  EXPECT_EQ(std::memcmp(local_.data(), remote_.data(), kSize), 0);
}

TEST_P(Conformance, IndexTransferMergesContiguousRunsAndMovesTheRightBlocks) {
  constexpr std::size_t kBlock = 4096, kBlocks = kSize / kBlock;
  DescriptorList l(MemoryKind::kDram), r(MemoryKind::kDram);
  for (std::size_t i = 0; i < kBlocks; ++i) {
    l.add(local_.addr(i * kBlock), kBlock);
    r.add(remote_.addr(i * kBlock), kBlock);
  }
  auto lp = a_->prepare_local(l);
  auto rp = a_->prepare_remote("target", r);
  ASSERT_TRUE(lp.ok() && rp.ok());
  // Blocks 10..19 -> 100..109 (one run) and 50 -> 7, 51 -> 300 (two singles).
  std::vector<std::uint32_t> li, ri;
  for (std::uint32_t i = 0; i < 10; ++i) li.push_back(10 + i), ri.push_back(100 + i);
  li.push_back(50), ri.push_back(7);
  li.push_back(51), ri.push_back(300);
  remote_.randomize(2);
  std::memset(local_.data(), 0, kSize);
  auto t = a_->create_transfer(TransferOp::kRead, *lp, li, *rp, ri);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->telemetry().descriptors_requested, 12u);
  EXPECT_EQ(t->telemetry().descriptors_merged, 3u);
  KVF_ASSERT_OK(t->post());
  KVF_ASSERT_OK(t->wait(10s));
  for (std::size_t k = 0; k < li.size(); ++k)
    ASSERT_EQ(std::memcmp(local_.data() + li[k] * kBlock, remote_.data() + ri[k] * kBlock, kBlock), 0) << k;
  EXPECT_EQ(local_.data()[0], 0);  // untouched block stays untouched
}

TEST_P(Conformance, NotificationArrivesAfterAllDataOfAWrite) {
  local_.randomize(3);
  TransferOptions o;
  o.notification = "kv-ready:42";
  auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole(), o);
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  ASSERT_TRUE(b_->wait_for_notifications(10s));
  // The notification is visible: every byte must already be there.
  EXPECT_EQ(std::memcmp(local_.data(), remote_.data(), kSize), 0);
  auto n = b_->take_notifications();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].from, "initiator");
  EXPECT_EQ(n[0].message, "kv-ready:42");
  KVF_ASSERT_OK(w->wait(10s));
}

TEST_P(Conformance, ReadWithNotificationAndStandaloneNotify) {
  TransferOptions o;
  o.notification = "pulled";
  auto r = a_->create_transfer(TransferOp::kRead, local_.whole(), "target", remote_.whole(), o);
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  ASSERT_TRUE(b_->wait_for_notifications(10s));
  auto n = b_->take_notifications();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].message, "pulled");

  KVF_ASSERT_OK(a_->notify("target", "hello"));
  ASSERT_TRUE(b_->wait_for_notifications(10s));
  n = b_->take_notifications();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].message, "hello");
  EXPECT_TRUE(a_->notify("target", std::string(1 << 20, 'x')).code() == StatusCode::kInvalidArgument);
}

TEST_P(Conformance, FinishedRequestCanBePostedAgain) {
  auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 5; ++i) {
    local_.randomize(10 + i);
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(10s));
    ASSERT_EQ(std::memcmp(local_.data(), remote_.data(), kSize), 0) << i;
  }
  EXPECT_EQ(w->telemetry().posts, 5u);
  EXPECT_GT(w->telemetry().transfer_ns, 0u);
}

TEST_P(Conformance, MisuseIsRefusedWithAClearError) {
  DescriptorList outside(MemoryKind::kDram, {Descriptor{local_.addr(kSize - 10), 20, 0}});
  DescriptorList remote_small(MemoryKind::kDram, {Descriptor{remote_.addr(), 20, 0}});
  auto t = a_->create_transfer(TransferOp::kWrite, outside, "target", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(t.status().message().find("not inside memory registered"), std::string::npos) << t.status().message();

  DescriptorList remote_outside(MemoryKind::kDram, {Descriptor{remote_.addr(kSize), 16, 0}});
  DescriptorList local_small(MemoryKind::kDram, {Descriptor{local_.addr(), 16, 0}});
  t = a_->create_transfer(TransferOp::kWrite, local_small, "target", remote_outside);
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange);

  DescriptorList local_17(MemoryKind::kDram, {Descriptor{local_.addr(), 17, 0}});
  t = a_->create_transfer(TransferOp::kWrite, local_17, "target", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);

  t = a_->create_transfer(TransferOp::kWrite, local_small, "nobody", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);

  DescriptorList overlap(MemoryKind::kDram, {Descriptor{local_.addr(4096), 4096, 0}});
  EXPECT_EQ(a_->register_memory(overlap).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(a_->deregister_memory(overlap).code(), StatusCode::kNotFound);

  auto lp = a_->prepare_local(local_small);
  auto rp = a_->prepare_remote("target", remote_small);
  ASSERT_TRUE(lp.ok() && rp.ok());
  std::vector<std::uint32_t> bad{3};
  std::vector<std::uint32_t> zero{0};
  EXPECT_EQ(a_->create_transfer(TransferOp::kRead, *lp, bad, *rp, zero).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(a_->create_transfer(TransferOp::kRead, *rp, zero, *rp, zero).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(Conformance, TargetRefusesMemoryItNeverAnnounced) {
  // The initiator's view of the target is stale: the target withdrew the memory after
  // announcing it. The target must refuse the bytes and say so.
  DescriptorList past(MemoryKind::kDram, {Descriptor{remote_.addr(kSize - 4096), 4096, 0}});
  DescriptorList mine(MemoryKind::kDram, {Descriptor{local_.addr(), 4096, 0}});
  auto ok = a_->create_transfer(TransferOp::kWrite, mine, "target", past);
  ASSERT_TRUE(ok.ok());
  KVF_ASSERT_OK(b_->deregister_memory(remote_.whole()));  // target withdraws it
  // The initiator's view is stale. A backend may learn of the withdrawal at post (shm
  // is told at once) or when the target refuses the bytes (tcp): either way it is a
  // remote refusal, never a silent write.
  Status s = ok->post();
  if (s.ok()) s = ok->wait(10s);
  EXPECT_EQ(s.code(), StatusCode::kRemoteError) << s.to_string();
  EXPECT_NE(s.message().find("refused"), std::string::npos) << s.to_string();
}

TEST_P(Conformance, CancelAndDestroyInFlightAreSafe) {
  for (int i = 0; i < 20; ++i) {
    auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
    ASSERT_TRUE(w.ok());
    KVF_ASSERT_OK(w->post());
    if (i % 2 == 0) {
      w->cancel();
      EXPECT_NE(w->state(), TransferState::kInProgress);
    }
    // Odd iterations: destroyed while in flight.
  }
  auto r = a_->create_transfer(TransferOp::kRead, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));  // the link still works afterwards
  KVF_ASSERT_OK(a_->deregister_memory(local_.whole()));  // nothing pins it any more
}

TEST_P(Conformance, DeregisterWhileAPostedTransferUsesTheMemoryIsRefused) {
  auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  Status s = a_->deregister_memory(local_.whole());
  if (w->state() == TransferState::kInProgress || !s.ok()) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
    EXPECT_NE(s.message().find("used by"), std::string::npos);
  }
  KVF_ASSERT_OK(w->wait(10s));
  if (!s.ok()) KVF_ASSERT_OK(a_->deregister_memory(local_.whole()));
  EXPECT_EQ(w->post().code(), StatusCode::kFailedPrecondition);  // its memory is gone
}

TEST_P(Conformance, ForgottenPeerFailsFastAndReloadWorks) {
  auto w = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(a_->forget_remote("target"));
  EXPECT_EQ(w->post().code(), StatusCode::kNotFound);
  introduce(*a_, *b_);
  auto again = a_->create_transfer(TransferOp::kWrite, local_.whole(), "target", remote_.whole());
  ASSERT_TRUE(again.ok());
  KVF_ASSERT_OK(again->post());
  KVF_ASSERT_OK(again->wait(10s));
}

TEST_P(Conformance, ManyConcurrentRequestsFromSeveralThreads) {
  constexpr int kThreads = 4, kPerThread = 25;
  constexpr std::size_t kSlice = kSize / kThreads;
  local_.randomize(77);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      DescriptorList l(MemoryKind::kDram, {Descriptor{local_.addr(t * kSlice), kSlice, 0}});
      DescriptorList r(MemoryKind::kDram, {Descriptor{remote_.addr(t * kSlice), kSlice, 0}});
      for (int i = 0; i < kPerThread; ++i) {
        auto w = a_->create_transfer(TransferOp::kWrite, l, "target", r);
        if (!w.ok() || !w->post().ok() || !w->wait(10s).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(std::memcmp(local_.data(), remote_.data(), kSize), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(kBackends),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace kvferry::testing
