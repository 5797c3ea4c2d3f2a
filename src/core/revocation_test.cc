#include "core/revocation.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// One initiator over a real socket pair: its thread answers each revoke (a u64 region)
// with the same u64, except for the regions it ignores; the target's reader thread
// passes each answer to the board, as a backend's progress loop does.
class Initiator {
 public:
  Initiator(TargetRevocation& board, std::set<std::uint64_t> ignore, bool send_fails = false)
      : board_(board), ignore_(std::move(ignore)) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    target_fd_ = sv[0];
    initiator_fd_ = sv[1];
    id_ = board_.join(TargetRevocation::Link{
        [this, send_fails](std::uint64_t region) -> Status {
          if (send_fails) return PeerLost("test: the send failed");
          return ::send(target_fd_, &region, sizeof region, MSG_NOSIGNAL) == sizeof region ? Status::Ok()
                                                                                         : PeerLost("test: send");
        },
        [this](const std::string& why) {
          cut_why_ = why;
          cut_ = true;
          ::shutdown(target_fd_, SHUT_RDWR);
        }});
    initiator_ = std::thread([this] { answer(); });
    reader_ = std::thread([this] { read_answers(); });
  }
  ~Initiator() {
    ::shutdown(target_fd_, SHUT_RDWR);
    ::shutdown(initiator_fd_, SHUT_RDWR);
    initiator_.join();
    reader_.join();
    ::close(target_fd_);
    ::close(initiator_fd_);
  }
  TargetRevocation::LinkId id() const { return id_; }
  bool cut() const { return cut_; }
  const std::string& cut_why() const { return cut_why_; }
  std::vector<std::uint64_t> received() {
    std::lock_guard lock(mu_);
    return received_;
  }
  bool saw_eof() const { return eof_; }

 private:
  void answer() {
    std::uint64_t region;
    for (;;) {
      ssize_t n = ::recv(initiator_fd_, &region, sizeof region, 0);
      if (n != sizeof region) break;
      {
        std::lock_guard lock(mu_);
        received_.push_back(region);
      }
      if (!ignore_.count(region)) ::send(initiator_fd_, &region, sizeof region, MSG_NOSIGNAL);
    }
    eof_ = true;
  }
  void read_answers() {
    std::uint64_t region;
    while (::recv(target_fd_, &region, sizeof region, 0) == sizeof region) board_.confirmed(id_, region);
  }

  TargetRevocation& board_;
  const std::set<std::uint64_t> ignore_;
  int target_fd_ = -1, initiator_fd_ = -1;
  TargetRevocation::LinkId id_ = 0;
  std::mutex mu_;
  std::vector<std::uint64_t> received_;
  std::atomic<bool> cut_{false}, eof_{false};
  std::string cut_why_;
  std::thread initiator_, reader_;
};

TEST(TargetRevocation, WithoutLinksReturnsAtOnce) {
  TargetRevocation board("shm", 5000ms);
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(3), 0u);
  EXPECT_LT(Clock::now() - t0, 100ms);
}

TEST(TargetRevocation, ReturnsOnceEveryLinkConfirmed) {
  TargetRevocation board("shm", 5000ms);
  std::vector<std::unique_ptr<Initiator>> links;
  for (int i = 0; i < 3; ++i) links.push_back(std::make_unique<Initiator>(board, std::set<std::uint64_t>{}));
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(7), 0u);
  EXPECT_LT(Clock::now() - t0, 2500ms);  // the answers, not the bound
  for (auto& l : links) {
    EXPECT_EQ(l->received(), std::vector<std::uint64_t>{7});
    EXPECT_FALSE(l->cut());
  }
  EXPECT_EQ(board.links(), 3u);
}

TEST(TargetRevocation, ALinkThatDoesNotConfirmIsCutOffAtTheBound) {
  TargetRevocation board("shm", 300ms);
  Initiator good(board, {}), silent(board, {7});
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(7), 1u);
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s);
  EXPECT_FALSE(good.cut());
  ASSERT_TRUE(silent.cut());
  EXPECT_NE(silent.cut_why().find("no confirmation of the revoke of region 7 within 300 ms"), std::string::npos)
      << silent.cut_why();
  EXPECT_EQ(board.links(), 1u);  // the silent one left
  for (int i = 0; i < 200 && !silent.saw_eof(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(silent.saw_eof());  // the initiator sees the link die
}

TEST(TargetRevocation, ALinkWhoseSendFailedIsCutOffWithoutWaiting) {
  TargetRevocation board("cuda_ipc", 5000ms);
  Initiator good(board, {}), broken(board, {}, /*send_fails=*/true);
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(9), 1u);
  EXPECT_LT(Clock::now() - t0, 2500ms);
  ASSERT_TRUE(broken.cut());
  EXPECT_NE(broken.cut_why().find("cuda_ipc: the revoke of region 9 could not be sent"), std::string::npos);
  EXPECT_FALSE(good.cut());
}

TEST(TargetRevocation, ALinkThatLeavesIsNoLongerAwaited) {
  TargetRevocation board("shm", 5000ms);
  Initiator silent(board, {4});
  std::thread leaver([&] {
    std::this_thread::sleep_for(100ms);
    board.leave(silent.id());  // the backend dropped it (its socket closed)
  });
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(4), 0u);
  EXPECT_LT(Clock::now() - t0, 2500ms);
  EXPECT_FALSE(silent.cut());
  leaver.join();
}

TEST(TargetRevocation, ConcurrentRevokesWaitEachForItsOwnRegion) {
  TargetRevocation board("shm", 600ms);
  Initiator link(board, {2});  // confirms region 1, never region 2
  std::atomic<std::size_t> cut_for_2{99};
  std::thread slow([&] { cut_for_2 = board.revoke(2); });
  std::this_thread::sleep_for(50ms);
  const auto t0 = Clock::now();
  EXPECT_EQ(board.revoke(1), 0u);
  EXPECT_LT(Clock::now() - t0, 500ms);  // not held back by region 2's missing answer
  slow.join();
  EXPECT_EQ(cut_for_2.load(), 1u);
  EXPECT_TRUE(link.cut());
}

TEST(TargetRevocation, AnswersForOtherRegionsOrUnknownLinksChangeNothing) {
  TargetRevocation board("shm", 300ms);
  Initiator silent(board, {5});
  board.confirmed(silent.id(), 6);  // a region never revoked
  board.confirmed(12345, 5);        // a link that never joined
  EXPECT_EQ(board.revoke(5), 1u);
  EXPECT_TRUE(silent.cut());
}

TEST(AnswerRevoke, MarksThenDrainsThenConfirms) {
  std::vector<std::string> order;
  Status st = answer_revoke(
      11, [&](std::uint64_t r) { order.push_back("mark " + std::to_string(r)); },
      [&](std::uint64_t r) { order.push_back("drain " + std::to_string(r)); },
      [&](std::uint64_t r) {
        order.push_back("confirm " + std::to_string(r));
        return PeerLost("test: the socket is closed");
      });
  EXPECT_EQ(order, (std::vector<std::string>{"mark 11", "drain 11", "confirm 11"}));
  EXPECT_EQ(st.code(), StatusCode::kPeerLost);
}

// The drain completes later, on another thread (a flush callback): the answer returns at
// once, and the confirmation goes only once the drain is done, from that thread.
TEST(AnswerRevoke, LaterConfirmsOnlyOnceTheDrainIsDone) {
  std::mutex mu;
  std::vector<std::string> order;
  auto note = [&](std::string what) {
    std::lock_guard lock(mu);
    order.push_back(std::move(what));
  };
  Drained drained;
  std::atomic<bool> confirmed_on_drain_thread{false};
  std::thread::id drain_thread;
  Status error;
  answer_revoke_later(
      12, [&](std::uint64_t r) { note("mark " + std::to_string(r)); },
      [&](std::uint64_t r, Drained done) {
        note("drain " + std::to_string(r));
        drained = std::move(done);
      },
      [&](std::uint64_t r) {
        note("confirm " + std::to_string(r));
        confirmed_on_drain_thread = std::this_thread::get_id() == drain_thread;
        return PeerLost("test: the link is gone");
      },
      [&](Status s) { error = std::move(s); });
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(order, (std::vector<std::string>{"mark 12", "drain 12"}));  // returned without waiting
  }
  ASSERT_TRUE(drained);
  std::thread flush([&] {
    drain_thread = std::this_thread::get_id();
    drained();
  });
  flush.join();
  EXPECT_EQ(order, (std::vector<std::string>{"mark 12", "drain 12", "confirm 12"}));
  EXPECT_TRUE(confirmed_on_drain_thread);
  EXPECT_EQ(error.code(), StatusCode::kPeerLost);
}

}  // namespace
}  // namespace kvferry::detail
