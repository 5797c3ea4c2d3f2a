// The ucx backend when links to one peer start at the same moment: several threads making
// the first request to a peer (the core may then connect more than once and keep one
// connection), and two agents connecting to each other at once. UCX pairs the endpoints
// two workers create to each other by their order, not by who asked for them, so the
// backend must never let the end of one session close a connection another one rides
// (backends/ucx/ucx_links.h). Over UCX's tcp transport on loopback; skipped in builds
// without UCX. Each round uses fresh agents, so every round starts with no connection.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ucx_test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// The first error of a set of threads, for the failure message.
struct FirstError {
  std::mutex mu;
  std::string text;
  int count = 0;
  void add(const std::string& what, const Status& s) {
    std::lock_guard lock(mu);
    if (count++ == 0) text = what + ": " + s.to_string();
  }
};

TEST(UcxLinks, ManyThreadsMakingTheFirstRequestToAPeerAllSucceed) {
  if (!ucx_built()) GTEST_SKIP() << "built without the ucx backend";
  constexpr int kRounds = 8, kThreads = 8, kPerThread = 4;
  constexpr std::size_t kSize = 4u << 20, kSlice = kSize / kThreads;
  for (int round = 0; round < kRounds; ++round) {
    Buffer src(kSize), dst(kSize);
    src.randomize(100 + round);
    auto a = agent_with("initiator"), b = agent_with("target");
    ASSERT_TRUE(a && b);
    KVF_ASSERT_OK(a->register_memory(slice(src, 0, kSize)));
    KVF_ASSERT_OK(b->register_memory(slice(dst, 0, kSize)));
    introduce(*a, *b);
    FirstError errors;
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        ready++;
        while (ready.load() < kThreads) std::this_thread::yield();  // all start at once
        for (int i = 0; i < kPerThread; ++i) {
          Status s = write_and_wait(*a, slice(src, t * kSlice, kSlice), "target", slice(dst, t * kSlice, kSlice));
          if (!s.ok()) errors.add("thread " + std::to_string(t) + " request " + std::to_string(i), s);
        }
      });
    for (auto& th : threads) th.join();
    ASSERT_EQ(errors.count, 0) << "round " << round << ": " << errors.count << " requests failed; first: " << errors.text;
    ASSERT_EQ(std::memcmp(src.data(), dst.data(), kSize), 0) << "round " << round;
  }
}

// A connects to B while B connects to A; then A drops its link to B. B's link to A must
// keep working, and A's fresh link too.
TEST(UcxLinks, BothSidesConnectingAtOnceThenOneClosingLeavesTheOtherWorking) {
  if (!ucx_built()) GTEST_SKIP() << "built without the ucx backend";
  constexpr int kRounds = 8;
  constexpr std::size_t kSize = 1u << 20;
  for (int round = 0; round < kRounds; ++round) {
    Buffer a_mem(kSize), b_mem(kSize);
    auto a = agent_with("a"), b = agent_with("b");
    ASSERT_TRUE(a && b);
    KVF_ASSERT_OK(a->register_memory(slice(a_mem, 0, kSize)));
    KVF_ASSERT_OK(b->register_memory(slice(b_mem, 0, kSize)));
    introduce(*a, *b);
    a_mem.randomize(200 + round);
    b_mem.randomize(300 + round);
    const std::size_t half = kSize / 2;
    Status from_a, from_b;
    std::atomic<int> ready{0};
    std::thread ta([&] {
      ready++;
      while (ready.load() < 2) std::this_thread::yield();
      from_a = write_and_wait(*a, slice(a_mem, 0, half), "b", slice(b_mem, half, half));  // a's low half -> b's high
    });
    std::thread tb([&] {
      ready++;
      while (ready.load() < 2) std::this_thread::yield();
      from_b = write_and_wait(*b, slice(b_mem, 0, half), "a", slice(a_mem, half, half));  // b's low half -> a's high
    });
    ta.join();
    tb.join();
    KVF_ASSERT_OK(from_a);
    KVF_ASSERT_OK(from_b);
    ASSERT_EQ(std::memcmp(a_mem.data(), b_mem.data() + half, half), 0) << "round " << round;
    ASSERT_EQ(std::memcmp(b_mem.data(), a_mem.data() + half, half), 0) << "round " << round;

    // A closes its link to B (and B learns of it), then both directions work again.
    KVF_ASSERT_OK(a->forget_remote("b"));
    std::this_thread::sleep_for(20ms);  // let the close reach B before B's next request
    b_mem.randomize(400 + round);
    Status again = write_and_wait(*b, slice(b_mem, 0, half), "a", slice(a_mem, half, half));
    ASSERT_TRUE(again.ok()) << "round " << round << ": b -> a after a closed its own link to b: " << again.to_string();
    ASSERT_EQ(std::memcmp(b_mem.data(), a_mem.data() + half, half), 0) << "round " << round;
    auto mb = b->local_metadata();
    ASSERT_TRUE(mb.ok());
    ASSERT_TRUE(a->load_remote(*mb).ok());
    a_mem.randomize(500 + round);
    KVF_ASSERT_OK(write_and_wait(*a, slice(a_mem, 0, half), "b", slice(b_mem, half, half)));
    ASSERT_EQ(std::memcmp(a_mem.data(), b_mem.data() + half, half), 0) << "round " << round;
  }
}

}  // namespace
}  // namespace kvferry::testing
