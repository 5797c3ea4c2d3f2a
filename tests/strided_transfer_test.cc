// Strided transfers (lanes x block ids, block_lanes.h) and the completion queue
// (completion_queue.h), over every backend that links two agents of one process.
#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/transfer_job.h"
#include "test_memory.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kLanes = 6;
constexpr std::uint32_t kBlocks = 64;
constexpr std::uint64_t kBlockBytes = 4096;

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

class Strided : public ::testing::TestWithParam<AgentPairRoute> {
 protected:
  // Lanes interleaved with a gap: lane l's block b at l * kLaneBytes + b * stride_.
  void SetUp() override {
    std::string why;
    const int target_gpu = visible_gpus() > 1 ? 1 : 0;
    local_ = TestMemory::make(GetParam().kind, 0, kSize, &why);
    if (local_) remote_ = TestMemory::make(GetParam().kind, target_gpu, kSize, &why);
    if (!local_ || !remote_) {
      if (!HasFailure()) GTEST_SKIP() << why;
      return;
    }
    a_ = make_agent("initiator", GetParam().backend);
    b_ = make_agent("target", GetParam().backend);
    ASSERT_TRUE(a_ && b_);
    KVF_ASSERT_OK(a_->register_memory(local_->whole()));
    KVF_ASSERT_OK(b_->register_memory(remote_->whole()));
    introduce(*a_, *b_);
  }

  BlockLanes lanes_of(const TestMemory& m, std::uint64_t stride) const {
    BlockLanes l;
    l.kind = m.kind();
    l.device = m.whole()[0].device;
    for (std::uint32_t lane = 0; lane < kLanes; ++lane) l.lane_addresses.push_back(m.at(lane * kLaneBytes, 1).address);
    l.block_stride = stride;
    l.block_bytes = kBlockBytes;
    l.blocks = kBlocks;
    return l;
  }

  // Moves the blocks with a strided transfer, then checks every byte of both memories
  // against what the same pairs, copied one by one on the host, give.
  void check_round_trip(TransferOp op, std::uint64_t stride) {
    auto lp = a_->prepare_local_lanes(lanes_of(*local_, stride));
    auto rp = a_->prepare_remote_lanes("target", lanes_of(*remote_, stride));
    ASSERT_TRUE(lp.ok()) << lp.status().to_string();
    ASSERT_TRUE(rp.ok()) << rp.status().to_string();
    // Runs and singles: 10..19 -> 30..39, then scattered ids.
    std::vector<std::uint32_t> li, ri;
    for (std::uint32_t i = 0; i < 10; ++i) li.push_back(10 + i), ri.push_back(30 + i);
    li.insert(li.end(), {63, 0, 5, 41});
    ri.insert(ri.end(), {1, 62, 6, 7});
    local_->randomize(11);
    remote_->randomize(12);
    std::vector<std::uint8_t> l = local_->bytes(), r = remote_->bytes();
    const std::uint32_t first = 1, count = 4;  // lanes 1..4 of 6
    for (std::uint32_t lane = first; lane < first + count; ++lane)
      for (std::size_t i = 0; i < li.size(); ++i) {
        std::uint8_t* lb = l.data() + lane * kLaneBytes + li[i] * stride;
        std::uint8_t* rb = r.data() + lane * kLaneBytes + ri[i] * stride;
        if (op == TransferOp::kWrite) std::memcpy(rb, lb, kBlockBytes);
        else std::memcpy(lb, rb, kBlockBytes);
      }
    LaneTransfer t{li, ri, first, count};
    TransferOptions o;
    o.notification = "strided";
    o.tag = 99;
    auto req = a_->create_transfer(op, *lp, *rp, t, o);
    ASSERT_TRUE(req.ok()) << req.status().to_string();
    EXPECT_EQ(req->telemetry().descriptors_requested, std::uint64_t{count} * li.size());
    // Contiguous blocks merge into one piece per run and lane; strided ones never.
    EXPECT_EQ(req->telemetry().descriptors_merged, count * (stride == kBlockBytes ? 5u : li.size()));
    EXPECT_EQ(req->telemetry().bytes, std::uint64_t{count} * li.size() * kBlockBytes);
    KVF_ASSERT_OK(req->post());
    KVF_ASSERT_OK(req->wait(20s));
    EXPECT_TRUE(SameBytes(local_->bytes(), l));
    EXPECT_TRUE(SameBytes(remote_->bytes(), r));
    const NotificationKey key[] = {{"initiator", 99}};
    auto n = b_->wait_for_notifications(key, 10s);
    ASSERT_TRUE(n.ok()) << n.status().to_string();
    EXPECT_EQ((*n)[0].message, "strided");
  }

  static constexpr std::uint64_t kLaneBytes = 1u << 20;
  static constexpr std::size_t kSize = kLanes * kLaneBytes;
  std::unique_ptr<TestMemory> local_, remote_;
  std::unique_ptr<Agent> a_, b_;
};

TEST_P(Strided, WriteMovesExactlyTheSelectedBlocksOfTheSelectedLanes) {
  check_round_trip(TransferOp::kWrite, kBlockBytes);
}
TEST_P(Strided, ReadMovesExactlyTheSelectedBlocksOfTheSelectedLanes) {
  check_round_trip(TransferOp::kRead, kBlockBytes);
}
TEST_P(Strided, BlocksWithGapsBetweenThemNeverMerge) { check_round_trip(TransferOp::kWrite, 3 * kBlockBytes); }

TEST_P(Strided, BadRequestsAreRefusedNamingWhatWasWrong) {
  auto lp = a_->prepare_local_lanes(lanes_of(*local_, kBlockBytes));
  auto rp = a_->prepare_remote_lanes("target", lanes_of(*remote_, kBlockBytes));
  ASSERT_TRUE(lp.ok() && rp.ok());
  std::vector<std::uint32_t> ok{1, 2}, bad{1, kBlocks};
  auto r = a_->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ok, bad});
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("remote block id 64 at position 1"), std::string::npos) << r.status().to_string();
  r = a_->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ok, ok, 5, 2});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  std::vector<std::uint32_t> one{1};
  r = a_->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ok, one});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  // Lanes running past registered memory are refused at prepare, naming the first such
  // lane (1,000 blocks of 4 KiB from lane 3 at 3 MiB pass the 6 MiB end).
  BlockLanes too_far = lanes_of(*local_, kBlockBytes);
  too_far.blocks = 1000;
  auto far = a_->prepare_local_lanes(too_far);
  EXPECT_EQ(far.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(far.status().message().find("lane 3 "), std::string::npos) << far.status().to_string();
  // Another agent's lanes; deregistered memory.
  auto other = make_agent("other", GetParam().backend);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ok, ok}).status().code(),
            StatusCode::kInvalidArgument);
  KVF_ASSERT_OK(a_->deregister_memory(local_->whole()));
  EXPECT_EQ(a_->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ok, ok}).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_P(Strided, BatchCompletesIntoTheQueueWithTagsAndAReadableFd) {
  auto lp = a_->prepare_local_lanes(lanes_of(*local_, kBlockBytes));
  auto rp = a_->prepare_remote_lanes("target", lanes_of(*remote_, kBlockBytes));
  ASSERT_TRUE(lp.ok() && rp.ok());
  auto cq = CompletionQueue::create();
  ASSERT_TRUE(cq.ok()) << cq.status().to_string();
  EXPECT_FALSE(readable(cq->fd()));
  local_->randomize(21);
  remote_->fill(0xEE);
  constexpr std::uint32_t kRequests = 16;
  std::vector<std::vector<std::uint32_t>> ids(kRequests);
  std::vector<TransferRequest> batch;
  for (std::uint32_t i = 0; i < kRequests; ++i) {
    ids[i] = {4 * i, 4 * i + 1, 4 * i + 3};
    TransferOptions o;
    o.tag = 500 + i;
    auto r = a_->create_transfer(TransferOp::kWrite, *lp, *rp, LaneTransfer{ids[i], ids[i]}, o);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->tag(), 500u + i);
    batch.push_back(std::move(r).value());
  }
  EXPECT_EQ(post_batch(batch, *cq), kRequests);
  std::vector<bool> seen(kRequests, false);
  std::uint32_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got < kRequests && std::chrono::steady_clock::now() < deadline) {
    pollfd p{cq->fd(), POLLIN, 0};
    ASSERT_GE(::poll(&p, 1, 1000), 0);
    for (const Completion& c : cq->drain()) {
      KVF_ASSERT_OK(c.status);
      ASSERT_GE(c.tag, 500u);
      ASSERT_LT(c.tag, 500u + kRequests);
      EXPECT_FALSE(seen[c.tag - 500]);
      seen[c.tag - 500] = true;
      EXPECT_EQ(c.peer, "target");
      EXPECT_EQ(c.telemetry.bytes, 3u * kLanes * kBlockBytes);
      ++got;
    }
  }
  EXPECT_EQ(got, kRequests);
  EXPECT_FALSE(readable(cq->fd()));  // drained: the fd is quiet again
  EXPECT_EQ(cq->in_flight(), 0u);
  // The bytes: blocks 4i, 4i+1, 4i+3 of every lane landed; 4i+2 kept the poison.
  const auto l = local_->bytes(), r = remote_->bytes();
  for (std::uint32_t lane = 0; lane < kLanes; ++lane)
    for (std::uint32_t b = 0; b < kBlocks; ++b) {
      const std::uint64_t off = lane * kLaneBytes + b * kBlockBytes;
      const bool moved = b % 4 != 2;
      const bool same = std::memcmp(l.data() + off, r.data() + off, kBlockBytes) == 0;
      ASSERT_EQ(same, moved) << "lane " << lane << " block " << b;
      if (!moved) {
        ASSERT_EQ(r[off], 0xEE);
      }
    }
  // A post that cannot start completes into the queue at once; so does a cancel.
  ASSERT_TRUE(batch[0].post(*cq).ok());
  const Status second = batch[0].post(*cq);  // refused while the first is in progress
  EXPECT_TRUE(second.ok() || second.code() == StatusCode::kFailedPrecondition) << second.to_string();
  batch[0].cancel();
  ASSERT_TRUE(cq->wait(10s));
  std::vector<Completion> rest;
  for (int i = 0; i < 100 && rest.size() < 2; ++i) {
    for (auto& c : cq->drain()) rest.push_back(std::move(c));
    if (rest.size() < 2) cq->wait(100ms);
  }
  ASSERT_EQ(rest.size(), 2u);
  for (const auto& c : rest) EXPECT_EQ(c.tag, 500u);
  EXPECT_EQ(cq->in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, Strided, ::testing::ValuesIn(kAgentPairRoutes),
                         [](const ::testing::TestParamInfo<AgentPairRoute>& p) { return p.param.backend; });

TEST(PieceList, StridedFormIteratesLikeItsExpansion) {
  detail::StridedPieces sp;
  sp.local_lanes = {1000, 50000, 90000};
  sp.remote_lanes = {7000, 8000, 9000000};
  sp.runs = {{0, 5, 2}, {9, 1, 1}, {3, 3, 1}};
  sp.local_stride = 64;
  sp.remote_stride = 128;
  sp.block_bytes = 64;
  sp.local_device = 1;
  sp.remote_device = 2;
  const detail::PieceList list(sp);
  ASSERT_EQ(list.size(), 9u);
  const auto& all = list.expanded();
  ASSERT_EQ(all.size(), 9u);
  std::size_t i = 0;
  for (const detail::TransferPiece& p : list) {
    const detail::TransferPiece q = list[i];
    EXPECT_EQ(p.local, all[i].local);
    EXPECT_EQ(p.remote, q.remote);
    EXPECT_EQ(p.length, all[i].length);
    ++i;
  }
  EXPECT_EQ(i, 9u);
  EXPECT_EQ(all[3].local, 50000u);             // lane 1, run 0
  EXPECT_EQ(all[3].remote, 8000u + 5 * 128);   // remote block 5
  EXPECT_EQ(all[3].length, 128u);              // two blocks
  EXPECT_EQ(all[4].local, 50000u + 9 * 64);
  EXPECT_EQ(all[8].remote_device, 2u);
}

}  // namespace
}  // namespace kvferry::testing
