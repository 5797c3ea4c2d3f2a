// An agent is its own peer (seed 004's loopback agent): transfers between two of its own
// regions, selected like any other transfer.
#include <gtest/gtest.h>

#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

TEST(SelfTransfer, CopiesBetweenOwnRegionsAndPinsBoth) {
  auto agent = make_agent("solo", "");
  ASSERT_TRUE(agent);
  Buffer a(1 << 20), b(1 << 20);
  a.randomize(5);
  KVF_ASSERT_OK(agent->register_memory(a.whole()));
  KVF_ASSERT_OK(agent->register_memory(b.whole()));
  EXPECT_TRUE(agent->remote_agents().empty());  // itself is not listed as a remote

  auto t = agent->create_transfer(TransferOp::kWrite, a.whole(), "solo", b.whole());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->telemetry().backend, "loopback");  // cheapest for a same-process peer
  KVF_ASSERT_OK(t->post());
  KVF_ASSERT_OK(t->wait(10s));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);

  // Prepared lists against itself; memory registered later is visible at once.
  Buffer c(1 << 20);
  KVF_ASSERT_OK(agent->register_memory(c.whole()));
  auto lp = agent->prepare_local(b.whole());
  auto rp = agent->prepare_remote("solo", c.whole());
  ASSERT_TRUE(lp.ok() && rp.ok()) << rp.status().to_string();
  std::vector<std::uint32_t> zero{0};
  auto r = agent->create_transfer(TransferOp::kWrite, *lp, zero, *rp, zero);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size()), 0);

  EXPECT_EQ(agent->forget_remote("solo").code(), StatusCode::kInvalidArgument);
  KVF_ASSERT_OK(agent->deregister_memory(c.whole()));
  EXPECT_EQ(agent->create_transfer(TransferOp::kWrite, *lp, zero, *rp, zero).status().code(),
            StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvferry::testing
