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

// A notification sent ahead of its bytes (tcp): the job finishes on the later of the
// bytes' settle() and the peer's answer, whichever order they come in.
TEST(PeerSession, AnnouncedNotificationFinishesOnTheLaterOfBytesAndAnswer) {
  PeerSession s("tcp", "b", 1000ms);
  Sent sent;
  auto answer_first = make_job("a"), bytes_first = make_job("b");
  const std::uint64_t r1 = s.new_request(), r2 = s.new_request();
  ASSERT_TRUE(s.announce(answer_first, r1));
  ASSERT_TRUE(s.announce(bytes_first, r2));
  EXPECT_TRUE(s.awaiting());

  s.on_answer(r1, "");
  EXPECT_FALSE(answer_first->finished());  // its bytes are not all acknowledged yet
  s.settle(answer_first, Status::Ok(), sent.fn());
  ASSERT_TRUE(answer_first->finished());
  EXPECT_TRUE(answer_first->result().ok());

  s.settle(bytes_first, Status::Ok(), sent.fn());
  EXPECT_FALSE(bytes_first->finished());
  s.on_answer(r2, "inbox full");
  ASSERT_TRUE(bytes_first->finished());
  EXPECT_EQ(bytes_first->result().message(), "peer 'b' did not keep the notification: inbox full");
  EXPECT_TRUE(sent.messages.empty());  // announced notifications went with their bytes
  EXPECT_FALSE(s.awaiting());
}

TEST(PeerSession, AnnouncedJobTakesTheBytesErrorOverTheAnswer) {
  PeerSession s("tcp", "b", 1000ms);
  Sent sent;
  auto job = make_job("n");
  const std::uint64_t req = s.new_request();
  ASSERT_TRUE(s.announce(job, req));
  s.on_answer(req, "the transfer failed there");
  s.settle(job, RemoteError("write refused: not registered"), sent.fn());
  ASSERT_TRUE(job->finished());
  EXPECT_EQ(job->result().message(), "write refused: not registered");
  auto early = make_job("n");  // an error before any answer finishes it at once too
  ASSERT_TRUE(s.announce(early, s.new_request()));
  s.settle(early, IoError("short write"), sent.fn());
  ASSERT_TRUE(early->finished());
  EXPECT_EQ(early->result().message(), "short write");
  EXPECT_FALSE(s.awaiting());
}

// Until its bytes settle an announced job has no answer deadline (they may take long:
// the activity check bounds them); from settle() on it has peer_timeout.
TEST(PeerSession, AnnouncedAnswerIsTimedFromSettle) {
  PeerSession s("tcp", "b", 20ms);
  Sent sent;
  auto job = make_job("n");
  ASSERT_TRUE(s.announce(job, s.new_request()));
  std::this_thread::sleep_for(40ms);
  s.check_deadlines();
  EXPECT_FALSE(job->finished());
  EXPECT_FALSE(s.dead());
  s.settle(job, Status::Ok(), sent.fn());
  const auto t0 = std::chrono::steady_clock::now();
  while (!job->finished() && std::chrono::steady_clock::now() - t0 < 2s) {
    std::this_thread::sleep_for(5ms);
    s.check_deadlines();
  }
  ASSERT_TRUE(job->finished());
  EXPECT_EQ(job->result().message(), "tcp peer 'b': no acknowledgement for 20 ms");
}

TEST(PeerSession, RequestIdsAreOneSpaceAndForgetNamesTheAwaitedOne) {
  PeerSession s("tcp", "b", 1000ms);
  Sent sent;
  const std::uint64_t own = s.new_request();
  EXPECT_NE(own, 0u);
  auto job = make_job("n");
  s.settle(job, Status::Ok(), sent.fn());
  ASSERT_EQ(sent.messages.size(), 1u);
  EXPECT_NE(sent.messages[0].first, own);
  EXPECT_NE(s.new_request(), sent.messages[0].first);
  EXPECT_EQ(s.forget(job), sent.messages[0].first);
  EXPECT_EQ(s.forget(job), 0u);
  auto announced = make_job("m");
  const std::uint64_t req = s.new_request();
  ASSERT_TRUE(s.announce(announced, req));
  EXPECT_EQ(s.forget(announced), req);
  EXPECT_FALSE(s.awaiting());
  s.fail(IoError("gone"));
  EXPECT_FALSE(s.announce(make_job("late"), s.new_request()));  // nothing registers on a lost session
  EXPECT_FALSE(s.awaiting());
}

TEST(PeerSession, LossFinishesAnnouncedJobs) {
  int closed = 0;
  PeerSession s("tcp", "b", 1000ms, [&] { ++closed; });
  auto job = make_job("n");
  ASSERT_TRUE(s.announce(job, s.new_request()));
  s.fail(PeerLost("connection closed by peer"));
  ASSERT_TRUE(job->finished());
  EXPECT_EQ(job->result().message(), "tcp peer 'b': connection closed by peer");
  EXPECT_EQ(closed, 1);
}

// The activity clock, with explicit times: idle links are not timed; a busy link pings
// after a quarter of peer_timeout without progress (not more often), and is lost after
// all of it; progress restarts the clock.
TEST(PeerSession, ActivityPingsThenLosesABusySilentPeer) {
  int closed = 0;
  PeerSession s("tcp", "b", 1000ms, [&] { ++closed; });
  using A = PeerSession::Activity;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(s.check_activity(false, t0 + 10s), A::kFine);  // idle: restarts at t0 + 10 s
  const auto t = t0 + 10s;
  EXPECT_EQ(s.check_activity(true, t + 200ms), A::kFine);
  EXPECT_EQ(s.check_activity(true, t + 260ms), A::kPingDue);
  EXPECT_EQ(s.check_activity(true, t + 300ms), A::kFine);  // pinged 40 ms ago
  EXPECT_EQ(s.check_activity(true, t + 520ms), A::kPingDue);
  s.note_progress(t + 600ms);
  EXPECT_EQ(s.check_activity(true, t + 800ms), A::kFine);  // 200 ms quiet
  EXPECT_EQ(s.check_activity(true, t + 1500ms), A::kPingDue);
  EXPECT_FALSE(s.dead());
  EXPECT_EQ(s.check_activity(true, t + 1601ms), A::kLost);
  EXPECT_TRUE(s.dead());
  EXPECT_EQ(closed, 1);
  EXPECT_EQ(s.health().message(), "tcp peer 'b': no progress for 1000 ms");
}

}  // namespace
}  // namespace kvferry::detail
