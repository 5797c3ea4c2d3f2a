#include "core/reactor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "core/socket_util.h"

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<Reactor> must_start() {
  auto r = Reactor::start("kvf-test");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(r).value() : nullptr;
}

// Polls `cond` for up to `limit`; the reactor runs on its own thread.
template <typename F>
bool eventually(F cond, std::chrono::milliseconds limit = 2000ms) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return cond();
}

void signal(int efd) {
  const std::uint64_t one = 1;
  ASSERT_EQ(::write(efd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
}

void drain(int efd) {
  std::uint64_t v;
  [[maybe_unused]] ssize_t rc = ::read(efd, &v, sizeof v);
}

TEST(Reactor, WatchedFdRunsItsHandlerOnTheReactorThread) {
  auto reactor = must_start();
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::atomic<int> calls{0};
  std::atomic<bool> on_thread{false};
  auto id = reactor->watch(efd.get(), EPOLLIN, [&](std::uint32_t events) {
    EXPECT_TRUE(events & EPOLLIN);
    on_thread = reactor->in_reactor_thread();
    drain(efd.get());
    ++calls;
  });
  ASSERT_TRUE(id.ok());
  EXPECT_FALSE(reactor->in_reactor_thread());
  for (int i = 1; i <= 3; ++i) {
    signal(efd.get());
    ASSERT_TRUE(eventually([&] { return calls.load() == i; })) << "round " << i;
  }
  EXPECT_TRUE(on_thread.load());
  reactor->cancel(*id);
  signal(efd.get());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), 3);
}

TEST(Reactor, CancelWaitsForARunningHandler) {
  auto reactor = must_start();
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::atomic<bool> entered{false}, left{false};
  auto id = reactor->watch(efd.get(), EPOLLIN, [&](std::uint32_t) {
    drain(efd.get());
    entered = true;
    std::this_thread::sleep_for(150ms);
    left = true;
  });
  ASSERT_TRUE(id.ok());
  signal(efd.get());
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  reactor->cancel(*id);
  EXPECT_TRUE(left.load()) << "cancel returned while the handler still ran";
}

TEST(Reactor, AHandlerThatCancelsItselfIsNotCalledAgain) {
  auto reactor = must_start();
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::atomic<int> calls{0};
  Reactor::Id self = 0;
  std::promise<void> registered;
  auto ready = registered.get_future().share();
  auto id = reactor->watch(efd.get(), EPOLLIN, [&](std::uint32_t) {
    ready.wait();
    reactor->cancel(self);  // level-triggered and not drained: would fire again otherwise
    ++calls;                // after the cancel: the test may close the fd once it sees this
  });
  ASSERT_TRUE(id.ok());
  self = *id;
  registered.set_value();
  signal(efd.get());
  ASSERT_TRUE(eventually([&] { return calls.load() == 1; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), 1);
}

TEST(Reactor, ModifyChangesTheServedEvents) {
  auto reactor = must_start();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  std::atomic<int> writable{0};
  auto id = reactor->watch(wr.get(), 0, [&](std::uint32_t events) {
    if (events & EPOLLOUT) ++writable;
  });
  ASSERT_TRUE(id.ok());
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(writable.load(), 0);
  ASSERT_TRUE(reactor->modify(*id, EPOLLOUT | EPOLLET).ok());
  ASSERT_TRUE(eventually([&] { return writable.load() >= 1; }));
  EXPECT_EQ(reactor->modify(*id + 1000, EPOLLIN).code(), StatusCode::kNotFound);
  reactor->cancel(*id);
}

TEST(Reactor, TimersRunPeriodicallyAndOnceAndStopWhenCancelled) {
  auto reactor = must_start();
  std::atomic<int> ticks{0}, once{0};
  const auto started = Clock::now();
  auto every = reactor->every(10ms, [&] { ++ticks; });
  reactor->after(30ms, [&] { ++once; });
  auto never = reactor->after(30ms, [&] { ADD_FAILURE() << "a cancelled timer ran"; });
  reactor->cancel(never);
  ASSERT_TRUE(eventually([&] { return ticks.load() >= 5 && once.load() == 1; }));
  EXPECT_GE(Clock::now() - started, 30ms);
  reactor->cancel(every);
  const int at_cancel = ticks.load();
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(ticks.load(), at_cancel);
  EXPECT_EQ(once.load(), 1);
}

TEST(Reactor, TasksRunInPostingOrderAndRunSyncWaits) {
  auto reactor = must_start();
  std::vector<int> seen;  // touched on the reactor thread only, read after run_sync
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(reactor->post([&seen, i] { seen.push_back(i); }));
  bool ran = false;
  ASSERT_TRUE(reactor->run_sync([&] {
    ran = true;
    // Posting from the reactor thread works too; run_sync inline there.
    EXPECT_TRUE(reactor->run_sync([&] { seen.push_back(100); }));
  }));
  EXPECT_TRUE(ran);
  ASSERT_EQ(seen.size(), 101u);
  for (int i = 0; i <= 100; ++i) EXPECT_EQ(seen[i], i);
}

// A task that posts itself again from the reactor thread (a progress loop yielding to
// the others) keeps running without any wake-up from outside, between fd events.
TEST(Reactor, ATaskRepostingItselfKeepsRunningAndLetsWatchesIn) {
  auto r = must_start();
  ASSERT_TRUE(r);
  auto efd = make_eventfd("test");
  ASSERT_TRUE(efd.ok());
  std::atomic<int> runs{0}, served{0};
  auto id = r->watch(efd->get(), EPOLLIN, [&, fd = efd->get()](std::uint32_t) {
    std::uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
    ++served;
  });
  ASSERT_TRUE(id.ok());
  std::function<void()> again = [&] {
    if (++runs < 100000) r->post(again);
  };
  r->post(again);
  signal(efd->get());
  EXPECT_TRUE(eventually([&] { return runs.load() == 100000; }, 10000ms)) << runs.load() << " runs";
  EXPECT_TRUE(eventually([&] { return served.load() == 1; }));
  r->cancel(*id);
}

TEST(Reactor, ManyWatchesAreAllServed) {
  auto reactor = must_start();
  constexpr int kFds = 200;  // more than one epoll_wait batch
  std::vector<UniqueFd> fds;
  std::vector<Reactor::Id> ids;
  std::atomic<int> served{0};
  for (int i = 0; i < kFds; ++i) {
    fds.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    const int fd = fds.back().get();
    auto id = reactor->watch(fd, EPOLLIN, [fd, &served](std::uint32_t) {
      drain(fd);
      ++served;
    });
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  for (auto& f : fds) signal(f.get());
  ASSERT_TRUE(eventually([&] { return served.load() == kFds; })) << served.load();
  for (auto id : ids) reactor->cancel(id);
}

TEST(Reactor, DroppingTheLastReferenceInAHandlerIsSafe) {
  auto reactor = must_start();
  std::promise<void> dropped;
  auto done = dropped.get_future();
  auto* raw = reactor.get();
  raw->post([owned = std::move(reactor), &dropped]() mutable {
    owned.reset();  // ~Reactor on its own thread: must not wait for itself
    dropped.set_value();
  });
  ASSERT_EQ(done.wait_for(2s), std::future_status::ready);
}

TEST(Reactor, StoppingDropsPendingWorkAndRefusesNewWork) {
  auto reactor = must_start();
  std::atomic<bool> ran{false};
  reactor->after(10s, [&] { ran = true; });
  auto keep = reactor;  // a second owner: the reactor lives on
  reactor.reset();
  EXPECT_TRUE(keep->post([] {}));
  keep.reset();  // stops and joins within the test's time
  EXPECT_FALSE(ran.load());
}

TEST(Reactor, WatchOfABadFdNamesIt) {
  auto reactor = must_start();
  auto id = reactor->watch(-1, EPOLLIN, [](std::uint32_t) {});
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.status().message().find("fd -1"), std::string::npos) << id.status().message();
}


// The loop accounts for every handler, timer and task it runs, and names the slow ones:
// a test (or a user reading the metrics) can tell a loop that was held.
TEST(Reactor, StatsCountHandlersAndNameTheSlowOnes) {
  auto reactor = must_start();
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::atomic<int> calls{0};
  auto id = reactor->watch(efd.get(), EPOLLIN, [&](std::uint32_t) {
    drain(efd.get());
    ++calls;
  });
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 10; ++i) {
    signal(efd.get());
    ASSERT_TRUE(eventually([&] { return calls.load() == i + 1; }));
  }
  EXPECT_TRUE(reactor->run_sync([] {}));
  auto quick = reactor->stats();
  EXPECT_GE(quick.runs, 11u);
  EXPECT_EQ(quick.slow, 0u);
  EXPECT_LT(quick.longest, Reactor::kSlow);
  EXPECT_TRUE(reactor->run_sync([] { std::this_thread::sleep_for(Reactor::kSlow + 20ms); }));
  std::atomic<bool> timer_ran{false};
  reactor->after(1ms, [&] {
    std::this_thread::sleep_for(Reactor::kSlow + 20ms);
    timer_ran = true;
  });
  ASSERT_TRUE(eventually([&] { return timer_ran.load(); }));
  EXPECT_TRUE(reactor->run_sync([] {}));
  auto held = reactor->stats();
  EXPECT_EQ(held.slow, 2u);
  EXPECT_GE(held.longest, Reactor::kSlow + 20ms);
  EXPECT_GT(held.runs, quick.runs);
  reactor->cancel(*id);
}

}  // namespace
}  // namespace kvferry::detail
