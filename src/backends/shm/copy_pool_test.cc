// CopyPool: every slice of every job is copied exactly once and each job completes once,
// alone or riding with a twin (copy_pool.h), also when one of the pair stops on an error
// or is cancelled while the other goes on.
#include "backends/shm/copy_pool.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace kvferry::detail::shm {
namespace {

struct Job {
  std::vector<std::atomic<int>> copied;
  std::shared_ptr<CopyWork> work = std::make_shared<CopyWork>();
  std::promise<Status> done;
  std::atomic<int> completions{0};
  explicit Job(std::size_t slices, std::uint64_t key = 0, std::uint64_t base = 0, std::size_t fail_at = SIZE_MAX)
      : copied(slices) {
    work->slices = slices;
    work->batch = 4;
    work->twin = CopyWork::Twin{key, base, 1024};
    work->copy = [this, fail_at](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) {
        if (i == fail_at) return IoError("slice " + std::to_string(i) + " failed");
        copied[i].fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      return Status::Ok();
    };
    work->complete = [this](Status s) {
      if (completions.fetch_add(1) == 0) done.set_value(std::move(s));
    };
  }
  Status wait() {
    auto f = done.get_future();
    if (f.wait_for(std::chrono::seconds(20)) != std::future_status::ready) return Timeout("job did not complete");
    return f.get();
  }
  int copies_of(std::size_t i) const { return copied[i].load(); }
};

// Blocks the pool's workers until released, so the jobs after it queue up together.
struct Gate {
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  std::shared_ptr<CopyWork> work = std::make_shared<CopyWork>();
  Gate() {
    work->slices = 2;
    work->batch = 1;
    work->copy = [f = opened](std::size_t, std::size_t) {
      f.wait();
      return Status::Ok();
    };
    work->complete = [](Status) {};
  }
};

TEST(CopyPool, TwinsEachCopyEverySliceOnceAndComplete) {
  CopyPool pool(2);
  Gate gate;
  pool.submit(gate.work);
  Job a(400, 77, 4096), b(400, 77, 4096 + 512), other(400, 78, 4096);
  pool.submit(a.work);
  pool.submit(b.work);
  pool.submit(other.work);
  EXPECT_EQ(a.work->rider.load(), b.work.get());  // same rows: b rides on a
  EXPECT_EQ(other.work->rider.load(), nullptr);    // another key: alone
  gate.open.set_value();
  ASSERT_TRUE(a.wait().ok());
  ASSERT_TRUE(b.wait().ok());
  ASSERT_TRUE(other.wait().ok());
  for (std::size_t i = 0; i < 400; ++i) {
    ASSERT_EQ(a.copies_of(i), 1) << i;
    ASSERT_EQ(b.copies_of(i), 1) << i;
    ASSERT_EQ(other.copies_of(i), 1) << i;
  }
  EXPECT_EQ(a.completions.load(), 1);
  EXPECT_EQ(b.completions.load(), 1);
}

TEST(CopyPool, OnlyPairsAndOnlyRowsWithinTheSpan) {
  CopyPool pool(2);
  Gate gate;
  pool.submit(gate.work);
  Job a(64, 5, 0), b(64, 5, 512), c(64, 5, 256), far(64, 5, 4096), shorter(32, 5, 0);
  for (Job* j : {&a, &b, &c, &far, &shorter}) pool.submit(j->work);
  EXPECT_EQ(a.work->rider.load(), b.work.get());
  EXPECT_EQ(b.work->rider.load(), nullptr);  // a rider leads nobody
  EXPECT_EQ(c.work->rider.load(), nullptr);  // a is taken; far is 3,840 bytes away
  EXPECT_EQ(far.work->rider.load(), nullptr);
  EXPECT_EQ(shorter.work->rider.load(), nullptr);
  gate.open.set_value();
  for (Job* j : {&a, &b, &c, &far, &shorter}) ASSERT_TRUE(j->wait().ok());
}

TEST(CopyPool, ARiderThatFailsStopsAloneAndItsLeaderFinishes) {
  CopyPool pool(2);
  Gate gate;
  pool.submit(gate.work);
  Job a(200, 9, 0), b(200, 9, 512, /*fail_at=*/50);
  pool.submit(a.work);
  pool.submit(b.work);
  ASSERT_EQ(a.work->rider.load(), b.work.get());
  gate.open.set_value();
  ASSERT_TRUE(a.wait().ok());
  const Status s = b.wait();
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("slice 50 failed"), std::string::npos) << s.to_string();
  for (std::size_t i = 0; i < 200; ++i) ASSERT_EQ(a.copies_of(i), 1) << i;
  EXPECT_EQ(b.copies_of(50), 0);
  // Workers stop claiming once the error is seen: at most a batch or two beyond it went.
  for (std::size_t i = 80; i < 200; ++i) ASSERT_EQ(b.copies_of(i), 0) << i;
}

TEST(CopyPool, ALeaderCancelledWhileRiddenLeavesItsRiderToFinish) {
  CopyPool pool(2);
  Gate gate;
  pool.submit(gate.work);
  Job a(300, 3, 0), b(300, 3, 512);
  pool.submit(a.work);
  pool.submit(b.work);
  ASSERT_EQ(a.work->rider.load(), b.work.get());
  gate.open.set_value();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CopyPool::stop_and_wait(*a.work, Cancelled("cancelled by the test"));
  EXPECT_EQ(a.wait().code(), StatusCode::kCancelled);
  // After stop_and_wait returns no worker is inside a: its counts stay as they are.
  std::vector<int> frozen;
  for (std::size_t i = 0; i < 300; ++i) frozen.push_back(a.copies_of(i));
  ASSERT_TRUE(b.wait().ok());
  for (std::size_t i = 0; i < 300; ++i) {
    ASSERT_EQ(b.copies_of(i), 1) << i;
    ASSERT_EQ(a.copies_of(i), frozen[i]) << i;
    ASSERT_LE(a.copies_of(i), 1) << i;
  }
}

}  // namespace
}  // namespace kvferry::detail::shm
