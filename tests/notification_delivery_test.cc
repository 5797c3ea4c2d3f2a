// Notifications are never acknowledged and then lost: when the receiver cannot keep one
// (inbox full, larger than it accepts) the sender's request fails with the reason, on
// every backend and the side channel. Tags travel with notifications, and consumers take
// only what they asked for.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "file_test_util.h"
#include "test_memory.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Agent> agent_with_inbox(const std::string& name, const std::string& backend, std::size_t inbox,
                                        std::size_t max_bytes = 64 * 1024) {
  AgentOptions o;
  o.name = name;
  if (!backend.empty()) o.backends = {backend};
  o.max_inbox_notifications = inbox;
  o.max_notification_bytes = max_bytes;
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

class NotificationDelivery : public ::testing::TestWithParam<AgentPairRoute> {
 protected:
  void SetUp() override {
    std::string why;
    const int target_gpu = visible_gpus() > 1 ? 1 : 0;
    local_ = TestMemory::make(GetParam().kind, 0, kSize, &why);
    if (local_) remote_ = TestMemory::make(GetParam().kind, target_gpu, kSize, &why);
    if (!local_ || !remote_) {
      if (!HasFailure()) GTEST_SKIP() << why;
      return;
    }
    a_ = agent_with_inbox("sender", GetParam().backend, 1024);
    b_ = agent_with_inbox("receiver", GetParam().backend, kInbox, 1024);
    ASSERT_TRUE(a_ && b_);
    KVF_ASSERT_OK(a_->register_memory(local_->whole()));
    KVF_ASSERT_OK(b_->register_memory(remote_->whole()));
    introduce(*a_, *b_);
  }

  // `count` notified writes of 4 KiB each, all posted before any is waited for.
  std::vector<Status> notified_writes(int count, const std::string& prefix, std::size_t message_bytes = 0) {
    std::vector<TransferRequest> requests;
    for (int i = 0; i < count; ++i) {
      TransferOptions o;
      o.notification = message_bytes ? std::string(message_bytes, 'm') : prefix + std::to_string(i);
      o.tag = 1000 + static_cast<std::uint64_t>(i);
      auto w = a_->create_transfer(TransferOp::kWrite, local_->range(static_cast<std::uint64_t>(i) * 4096, 4096),
                                   "receiver", remote_->range(static_cast<std::uint64_t>(i) * 4096, 4096), o);
      EXPECT_TRUE(w.ok()) << w.status().to_string();
      if (!w.ok()) return {};
      EXPECT_TRUE(w->post().ok());
      requests.push_back(std::move(w).value());
    }
    std::vector<Status> out;
    for (auto& r : requests) {
      Status s = r.wait(20s);
      EXPECT_NE(s.code(), StatusCode::kTimeout);
      out.push_back(s);
    }
    return out;
  }

  static constexpr std::size_t kSize = 1u << 20;
  static constexpr std::size_t kInbox = 4;
  std::unique_ptr<TestMemory> local_, remote_;
  std::unique_ptr<Agent> a_, b_;
};

TEST_P(NotificationDelivery, InboxFullFailsTheSenderInsteadOfDroppingSilently) {
  const std::vector<Status> results = notified_writes(10, "n");
  ASSERT_EQ(results.size(), 10u);
  int done = 0, refused = 0;
  for (const Status& s : results) {
    if (s.ok()) {
      ++done;
    } else {
      ++refused;
      EXPECT_EQ(s.code(), StatusCode::kRemoteError) << s.to_string();
      EXPECT_NE(s.message().find("inbox"), std::string::npos) << s.to_string();
      EXPECT_NE(s.message().find("full"), std::string::npos) << s.to_string();
    }
  }
  EXPECT_EQ(done, 4);
  EXPECT_EQ(refused, 6);
  const auto kept = b_->take_notifications();
  EXPECT_EQ(kept.size(), 4u);  // exactly what the sender saw done
  EXPECT_EQ(b_->dropped_notifications(), 6u);
  for (const auto& n : kept) {
    EXPECT_EQ(n.from, "sender");
    EXPECT_EQ(n.message, "n" + std::to_string(n.tag - 1000));
  }
  // Room again: the next one is delivered.
  const std::vector<Status> again = notified_writes(1, "again");
  ASSERT_EQ(again.size(), 1u);
  KVF_ASSERT_OK(again[0]);
  ASSERT_EQ(b_->take_notifications().size(), 1u);
}

TEST_P(NotificationDelivery, TooLargeForTheReceiverFailsTheSenderAndKeepsTheLink) {
  const std::vector<Status> results = notified_writes(1, "", 4096);  // receiver accepts 1,024
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].code(), StatusCode::kRemoteError) << results[0].to_string();
  EXPECT_NE(results[0].message().find("at most 1024"), std::string::npos) << results[0].to_string();
  EXPECT_TRUE(b_->take_notifications().empty());
  const std::vector<Status> small = notified_writes(1, "small");
  ASSERT_EQ(small.size(), 1u);
  KVF_ASSERT_OK(small[0]);
}

TEST_P(NotificationDelivery, TagsTravelAndConsumersTakeOnlyTheirs) {
  const std::vector<Status> results = notified_writes(3, "t");
  for (const Status& s : results) KVF_ASSERT_OK(s);
  KVF_ASSERT_OK(a_->notify("receiver", "standalone", 77));
  // One consumer waits for tags 1002 and 77; another for 1000; 1001 stays.
  const NotificationKey mine[] = {{"sender", 1002}, {"sender", 77}};
  auto got = b_->wait_for_notifications(mine, 10s);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].message, "t2");
  EXPECT_EQ((*got)[1].message, "standalone");
  EXPECT_EQ((*got)[1].tag, 77u);
  NotificationFilter f;
  f.tag = 1000;
  auto other = b_->take_notifications(f);
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0].message, "t0");
  // A key that never comes times out, names itself, and takes nothing.
  const NotificationKey missing[] = {{"sender", 1001}, {"sender", 5}, {"nobody", 1}};
  auto late = b_->wait_for_notifications(missing, 50ms);
  EXPECT_EQ(late.status().code(), StatusCode::kTimeout);
  EXPECT_NE(late.status().message().find("2 of 3"), std::string::npos) << late.status().to_string();
  EXPECT_NE(late.status().message().find("('nobody', 1)"), std::string::npos) << late.status().to_string();
  f.tag.reset();
  f.from = "sender";
  auto rest = b_->take_notifications(f);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].tag, 1001u);
}

INSTANTIATE_TEST_SUITE_P(Backends, NotificationDelivery, ::testing::ValuesIn(kAgentPairRoutes),
                         [](const ::testing::TestParamInfo<AgentPairRoute>& p) { return p.param.backend; });

// The side channel carries standalone notifications and waits for the answer: a full
// inbox is a refusal the sender sees.
TEST(NotificationDeliverySideChannel, InboxFullIsRefusedToTheSender) {
  // The file backend links no two agents, so notify() falls back to the side channel.
  auto a = agent_with_inbox("sender", "file", 16);
  auto b = agent_with_inbox("receiver", "file", 4);
  ASSERT_TRUE(a && b);
  auto port = b->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  auto peer = a->fetch_remote("127.0.0.1", *port);
  ASSERT_TRUE(peer.ok()) << peer.status().to_string();
  int done = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    Status s = a->notify("receiver", "side" + std::to_string(i), static_cast<std::uint64_t>(i));
    if (s.ok()) {
      ++done;
      continue;
    }
    ++refused;
    EXPECT_EQ(s.code(), StatusCode::kRemoteError) << s.to_string();
    EXPECT_NE(s.message().find("full"), std::string::npos) << s.to_string();
  }
  EXPECT_EQ(done, 4);
  EXPECT_EQ(refused, 6);
  const auto kept = b->take_notifications();
  ASSERT_EQ(kept.size(), 4u);
  for (std::size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].tag, i);
    EXPECT_EQ(kept[i].message, "side" + std::to_string(i));
  }
}

// The file backend delivers a transfer's notification to its own agent.
TEST(NotificationDeliveryFile, InboxFullFailsTheTransfer) {
  ScratchDir dir;
  auto agent = agent_with_inbox("solo", "file", 4);
  ASSERT_TRUE(agent);
  Buffer mem(1 << 20);
  mem.randomize(9);
  KVF_ASSERT_OK(agent->register_memory(mem.whole()));
  FileOpenOptions fo;
  fo.create = true;
  fo.capacity = 1 << 20;
  auto file = agent->register_file(dir.file("inbox"), fo);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  int done = 0, refused = 0;
  for (std::uint64_t i = 0; i < 10; ++i) {
    TransferOptions o;
    o.notification = "stored";
    o.tag = i;
    auto t = agent->create_transfer(TransferOp::kWrite, DescriptorList(MemoryKind::kDram, {Descriptor{mem.addr(i * 4096), 4096, 0}}),
                                    "solo", DescriptorList(MemoryKind::kFile, {file->at(i * 4096, 4096)}), o);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    KVF_ASSERT_OK(t->post());
    Status s = t->wait(10s);
    if (s.ok()) {
      ++done;
    } else {
      ++refused;
      EXPECT_EQ(s.code(), StatusCode::kRemoteError) << s.to_string();
    }
  }
  EXPECT_EQ(done, 4);
  EXPECT_EQ(refused, 6);
  EXPECT_EQ(agent->take_notifications().size(), 4u);
}

}  // namespace
}  // namespace kvferry::testing
