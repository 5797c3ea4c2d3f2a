#include "core/peer_session.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<TransferJob> make_job(std::optional<std::string> note = std::nullopt) {
  auto pieces = std::make_shared<const std::vector<TransferPiece>>();
  return std::make_shared<TransferJob>(TransferOp::kWrite, pieces, 0, std::move(note), nullptr);
}

// Records what the backend was asked to send.
struct Sent {
  std::vector<std::pair<std::uint64_t, std::string>> messages;
  Status answer;  // what send returns
  PeerSession::SendNotification fn() {
    return [this](std::uint64_t req, std::string_view m) {
      messages.emplace_back(req, std::string(m));
      return answer;
    };
  }
};

TEST(PeerSession, JobWithoutNotificationFinishesWithItsCopyStatus) {
  PeerSession s("shm", "b", 1000ms);
  Sent sent;
  auto ok = make_job(), bad = make_job("note");
  s.settle(ok, Status::Ok(), sent.fn());
  s.settle(bad, IoError("copy failed"), sent.fn());  // an error: its notification never goes
  ASSERT_TRUE(ok->finished());
  EXPECT_TRUE(ok->result().ok());
  ASSERT_TRUE(bad->finished());
  EXPECT_EQ(bad->result().message(), "copy failed");
  EXPECT_TRUE(sent.messages.empty());
  EXPECT_FALSE(s.awaiting());
}

TEST(PeerSession, NotificationFinishesOnTheAnswer) {
  PeerSession s("shm", "b", 1000ms);
  Sent sent;
  auto kept = make_job("first"), refused = make_job("second");
  s.settle(kept, Status::Ok(), sent.fn());
  s.settle(refused, Status::Ok(), sent.fn());
  ASSERT_EQ(sent.messages.size(), 2u);
  EXPECT_EQ(sent.messages[0].second, "first");
  EXPECT_EQ(sent.messages[1].second, "second");
  EXPECT_NE(sent.messages[0].first, 0u);  // 0 means "no answer wanted" on the wire
  EXPECT_NE(sent.messages[0].first, sent.messages[1].first);
  EXPECT_FALSE(kept->finished());
  EXPECT_TRUE(s.awaiting());

  s.on_answer(sent.messages[0].first, "");
  ASSERT_TRUE(kept->finished());
  EXPECT_TRUE(kept->result().ok());
  s.on_answer(sent.messages[1].first, "inbox full");
  ASSERT_TRUE(refused->finished());
  EXPECT_EQ(refused->result().code(), StatusCode::kRemoteError);
  EXPECT_EQ(refused->result().message(), "peer 'b' did not keep the notification: inbox full");
  EXPECT_FALSE(s.awaiting());
  s.on_answer(sent.messages[0].first, "late");  // answered already: ignored
  EXPECT_TRUE(kept->result().ok());
  s.on_answer(12345, "");  // an id we never sent: ignored
}

TEST(PeerSession, FailedSendFinishesTheJobWithItsError) {
  PeerSession s("cuda_ipc", "b", 1000ms);
  Sent sent;
  sent.answer = PeerLost("socket closed");
  auto job = make_job("n");
  s.settle(job, Status::Ok(), sent.fn());
  ASSERT_TRUE(job->finished());
  EXPECT_EQ(job->result().message(), "socket closed");
  EXPECT_FALSE(s.awaiting());
  EXPECT_TRUE(s.health().ok());  // the backend decides whether that is a loss
}

TEST(PeerSession, FailFinishesAwaitingJobsOnceAndStaysLost) {
  int closed = 0;
  PeerSession s("shm", "b", 1000ms, [&] { ++closed; });
  Sent sent;
  auto job = make_job("n");
  s.settle(job, Status::Ok(), sent.fn());
  EXPECT_TRUE(s.fail(IoError("socket hung up")));
  EXPECT_FALSE(s.fail(IoError("second cause")));
  EXPECT_EQ(closed, 1);
  EXPECT_TRUE(s.dead());
  ASSERT_TRUE(job->finished());
  EXPECT_EQ(job->result().code(), StatusCode::kPeerLost);
  EXPECT_EQ(job->result().message(), "shm peer 'b': socket hung up");
  EXPECT_EQ(s.health().message(), "shm peer 'b': socket hung up");
  s.on_answer(sent.messages[0].first, "");  // too late: the job stays lost
  EXPECT_EQ(job->result().code(), StatusCode::kPeerLost);

  // After the loss, a job whose copies "succeeded" is lost too, and nothing is sent.
  auto after = make_job("n2");
  s.settle(after, Status::Ok(), sent.fn());
  ASSERT_TRUE(after->finished());
  EXPECT_EQ(after->result().code(), StatusCode::kPeerLost);
  EXPECT_EQ(sent.messages.size(), 1u);
}

TEST(PeerSession, OverdueAnswerBecomesPeerLostWithinTheBound) {
  int closed = 0;
  PeerSession s("shm", "b", 30ms, [&] { ++closed; });
  Sent sent;
  auto job = make_job("n");
  const auto t0 = std::chrono::steady_clock::now();
  s.settle(job, Status::Ok(), sent.fn());
  s.check_deadlines();
  EXPECT_FALSE(job->finished());  // not overdue yet
  while (!job->finished() && std::chrono::steady_clock::now() - t0 < 2s) {
    std::this_thread::sleep_for(5ms);
    s.check_deadlines();
  }
  ASSERT_TRUE(job->finished());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
  EXPECT_EQ(job->result().code(), StatusCode::kPeerLost);
  EXPECT_EQ(job->result().message(), "shm peer 'b': no acknowledgement for 30 ms");
  EXPECT_EQ(closed, 1);
}

TEST(PeerSession, ForgottenJobIgnoresItsAnswer) {
  PeerSession s("shm", "b", 1000ms);
  Sent sent;
  auto job = make_job("n");
  s.settle(job, Status::Ok(), sent.fn());
  s.forget(job);  // cancel: the backend finishes it
  EXPECT_FALSE(s.awaiting());
  job->finish(Cancelled("transfer cancelled"));
  s.on_answer(sent.messages[0].first, "");
  EXPECT_EQ(job->result().code(), StatusCode::kCancelled);
  s.fail(IoError("gone"));  // nor does a later loss touch it
  EXPECT_EQ(job->result().code(), StatusCode::kCancelled);
}

// Jobs settled while another thread fails the session are all finished: none is left
// awaiting an answer on a dead session (settle and fail decide under one lock).
TEST(PeerSession, NoJobOutlivesALossThatRacesWithIt) {
  for (int round = 0; round < 20; ++round) {
    PeerSession s("shm", "b", 10s);
    std::vector<std::shared_ptr<TransferJob>> jobs;
    for (int i = 0; i < 200; ++i) jobs.push_back(make_job("n"));
    std::atomic<bool> go{false};
    std::thread settler([&] {
      while (!go) std::this_thread::yield();
      for (auto& j : jobs) s.settle(j, Status::Ok(), [](std::uint64_t, std::string_view) { return Status::Ok(); });
    });
    go = true;
    std::this_thread::sleep_for(std::chrono::microseconds(50 * round));
    s.fail(IoError("killed"));
    settler.join();
    for (auto& j : jobs) {
      ASSERT_TRUE(j->finished()) << "round " << round;
      EXPECT_EQ(j->result().code(), StatusCode::kPeerLost);
    }
    EXPECT_FALSE(s.awaiting());
  }
}

}  // namespace
}  // namespace kvferry::detail
