// The conformance suite: written once, run against every backend that can connect two
// agents of one test process, over every pair of memory kinds it moves. A case is a
// backend and the kinds of the initiator's (local) and the target's (remote) memory; a
// new backend or memory path joins with one line in kCases. The tests touch memory only
// through TestMemory (tests/test_memory.h), so each assertion means the same on every
// kind. vram cases skip where no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <numeric>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "test_memory.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

struct Case {
  std::string backend;
  MemoryKind local;
  MemoryKind remote;
  std::string route;  // the backend a transfer's telemetry names
  std::string tls;    // ucx only: the UCX transports it runs over ("ucx.tls")
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.backend << " " << to_string(c.local) << " -> " << to_string(c.remote);
}

constexpr MemoryKind kDram = MemoryKind::kDram, kVram = MemoryKind::kVram;

const Case kCases[] = {
    {"loopback", kDram, kDram, "loopback"},
    {"tcp", kDram, kDram, "tcp"},
    {"shm", kDram, kDram, "shm"},
    // Local vram over a backend that moves host memory is staged through pinned memory by
    // the core (core/staged_connection.h), and the route says so. Only tcp reaches a
    // peer's vram (its target serves it through pinned memory: backends/tcp/tcp_vram.cc);
    // loopback and shm reach host memory only.
    {"loopback", kVram, kDram, "loopback+staging"},
    {"tcp", kVram, kVram, "tcp+staging"},
    {"tcp", kVram, kDram, "tcp+staging"},
    {"tcp", kDram, kVram, "tcp"},
    {"shm", kVram, kDram, "shm+staging"},
    // UCX over its tcp transport (loopback), and over shared memory (cma moves the bytes;
    // tcp carries control messages: UCX 1.13's sysv/posix cannot detect a dead peer).
    // Skipped in builds without UCX.
    {"ucx", kDram, kDram, "ucx", "tcp"},
    {"ucx", kDram, kDram, "ucx", "sm,tcp"},
    {"ucx", kVram, kDram, "ucx+staging", "tcp"},
    {"ucx", kVram, kDram, "ucx+staging", "sm,tcp"},
#ifdef KVFERRY_HAVE_CUDA  // the backend exists only in CUDA builds (src/CMakeLists.txt)
    {"cuda_ipc", kVram, kVram, "cuda_ipc"},
#endif
};

bool compiled_in(const std::string& backend) {
  for (const BackendInfo& b : compiled_backends())
    if (b.name == backend) return true;
  return false;
}

std::unique_ptr<Agent> make_case_agent(const std::string& name, const Case& c) {
  if (c.tls.empty()) return make_agent(name, c.backend);
  AgentOptions o;
  o.name = name;
  o.backends = {c.backend};
  o.backend_params = {{"ucx.tls", c.tls}};
  o.backend_params["ucx.devices"] = "lo";  // loopback only
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

class Conformance : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    std::string why;
    if (!compiled_in(c.backend)) GTEST_SKIP() << "backend '" << c.backend << "' is not compiled into this build";
    // With two GPUs the target's vram is on the second: vram -> vram then crosses GPUs.
    const int target_gpu = visible_gpus() > 1 ? 1 : 0;
    local_ = TestMemory::make(c.local, 0, kSize, &why);
    if (local_) remote_ = TestMemory::make(c.remote, target_gpu, kSize, &why);
    if (!local_ || !remote_) {
      if (!HasFailure()) GTEST_SKIP() << why;
      return;
    }
    a_ = make_case_agent("initiator", c);
    b_ = make_case_agent("target", c);
    ASSERT_TRUE(a_ && b_);
    KVF_ASSERT_OK(a_->register_memory(local().whole()));
    KVF_ASSERT_OK(b_->register_memory(remote().whole()));
    introduce(*a_, *b_);
  }

  TestMemory& local() { return *local_; }
  TestMemory& remote() { return *remote_; }

  static constexpr std::size_t kSize = 8u << 20;
  std::unique_ptr<TestMemory> local_, remote_;  // outlive the agents (declared first)
  std::unique_ptr<Agent> a_, b_;
};

TEST_P(Conformance, WriteThenReadBackMatches) {
  local().randomize(1);
  remote().fill(0xAB);
  auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  EXPECT_EQ(w->state(), TransferState::kDone);
  EXPECT_TRUE(SameBytes(local().bytes(), remote().bytes()));
  EXPECT_EQ(w->telemetry().backend, GetParam().route);

  local().fill(0xCD);
  auto r = a_->create_transfer(TransferOp::kRead, local().whole(), "target", remote().whole());
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  EXPECT_TRUE(SameBytes(local().bytes(), remote().bytes()));
}

TEST_P(Conformance, IndexTransferMergesContiguousRunsAndMovesTheRightBlocks) {
  constexpr std::size_t kBlock = 4096, kBlocks = kSize / kBlock;
  DescriptorList l = local().list(), r = remote().list();
  for (std::size_t i = 0; i < kBlocks; ++i) {
    l.add(local().at(i * kBlock, kBlock));
    r.add(remote().at(i * kBlock, kBlock));
  }
  auto lp = a_->prepare_local(l);
  auto rp = a_->prepare_remote("target", r);
  ASSERT_TRUE(lp.ok() && rp.ok());
  // Blocks 10..19 -> 100..109 (one run) and 50 -> 7, 51 -> 300 (two singles).
  std::vector<std::uint32_t> li, ri;
  for (std::uint32_t i = 0; i < 10; ++i) li.push_back(10 + i), ri.push_back(100 + i);
  li.push_back(50), ri.push_back(7);
  li.push_back(51), ri.push_back(300);
  remote().randomize(2);
  local().fill(0);
  auto t = a_->create_transfer(TransferOp::kRead, *lp, li, *rp, ri);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->telemetry().descriptors_requested, 12u);
  EXPECT_EQ(t->telemetry().descriptors_merged, 3u);
  KVF_ASSERT_OK(t->post());
  KVF_ASSERT_OK(t->wait(10s));
  const auto got = local().bytes(), theirs = remote().bytes();
  for (std::size_t k = 0; k < li.size(); ++k)
    ASSERT_EQ(std::memcmp(got.data() + li[k] * kBlock, theirs.data() + ri[k] * kBlock, kBlock), 0) << k;
  EXPECT_EQ(got[0], 0);  // untouched block stays untouched
}

TEST_P(Conformance, NotificationArrivesAfterAllDataOfAWrite) {
  local().randomize(3);
  TransferOptions o;
  o.notification = "kv-ready:42";
  auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole(), o);
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  ASSERT_TRUE(b_->wait_for_notifications(10s));
  // The notification is visible: every byte must already be there.
  EXPECT_TRUE(SameBytes(local().bytes(), remote().bytes()));
  auto n = b_->take_notifications();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].from, "initiator");
  EXPECT_EQ(n[0].message, "kv-ready:42");
  KVF_ASSERT_OK(w->wait(10s));
}

TEST_P(Conformance, ReadWithNotificationAndStandaloneNotify) {
  TransferOptions o;
  o.notification = "pulled";
  auto r = a_->create_transfer(TransferOp::kRead, local().whole(), "target", remote().whole(), o);
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
  auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 5; ++i) {
    local().randomize(10 + i);
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(10s));
    ASSERT_TRUE(SameBytes(local().bytes(), remote().bytes())) << i;
  }
  EXPECT_EQ(w->telemetry().posts, 5u);
  EXPECT_GT(w->telemetry().transfer_ns, 0u);
}

// Every descriptor names the memory's own kind and device, so each refusal below is for
// the reason the test names (a range, a length, a peer), not for a kind or GPU mismatch.
TEST_P(Conformance, MisuseIsRefusedWithAClearError) {
  DescriptorList outside = local().range(kSize - 10, 20);
  DescriptorList remote_small = remote().range(0, 20);
  auto t = a_->create_transfer(TransferOp::kWrite, outside, "target", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(t.status().message().find("not inside memory registered"), std::string::npos)
      << t.status().message();

  DescriptorList remote_outside = remote().range(kSize, 16);
  DescriptorList local_small = local().range(0, 16);
  t = a_->create_transfer(TransferOp::kWrite, local_small, "target", remote_outside);
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange);

  DescriptorList local_17 = local().range(0, 17);
  t = a_->create_transfer(TransferOp::kWrite, local_17, "target", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);

  t = a_->create_transfer(TransferOp::kWrite, local_small, "nobody", remote_small);
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);

  DescriptorList overlap = local().range(4096, 4096);
  EXPECT_EQ(a_->register_memory(overlap).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(a_->deregister_memory(overlap).code(), StatusCode::kNotFound);

  auto lp = a_->prepare_local(local_small);
  auto rp = a_->prepare_remote("target", remote_small);
  ASSERT_TRUE(lp.ok() && rp.ok());
  std::vector<std::uint32_t> bad{3};
  std::vector<std::uint32_t> zero{0};
  EXPECT_EQ(a_->create_transfer(TransferOp::kRead, *lp, bad, *rp, zero).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(a_->create_transfer(TransferOp::kRead, *rp, zero, *rp, zero).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(Conformance, TargetRefusesMemoryItNeverAnnounced) {
  // The initiator's view of the target is stale: the target withdrew the memory after
  // announcing it. The target must refuse the bytes and say so.
  DescriptorList past = remote().range(kSize - 4096, 4096);
  DescriptorList mine = local().range(0, 4096);
  auto ok = a_->create_transfer(TransferOp::kWrite, mine, "target", past);
  ASSERT_TRUE(ok.ok());
  KVF_ASSERT_OK(b_->deregister_memory(remote().whole()));  // target withdraws it
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
    auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
    ASSERT_TRUE(w.ok());
    KVF_ASSERT_OK(w->post());
    if (i % 2 == 0) {
      w->cancel();
      EXPECT_NE(w->state(), TransferState::kInProgress);
    }
    // Odd iterations: destroyed while in flight.
  }
  auto r = a_->create_transfer(TransferOp::kRead, local().whole(), "target", remote().whole());
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));                            // the link still works afterwards
  KVF_ASSERT_OK(a_->deregister_memory(local().whole()));  // nothing pins it any more
}

// Reads into poisoned slices, each cancelled at once or after a short while: when
// cancel() returns the request is done (with exactly the target's bytes) or cancelled,
// and its slice never changes again (snapshot, wait, compare).
TEST_P(Conformance, AfterCancelReturnsOurMemoryNeverChanges) {
  constexpr int kSlices = 8;
  constexpr std::size_t kSlice = kSize / kSlices;
  remote().randomize(91);
  const std::vector<std::uint8_t> source = remote().bytes();
  local().fill(0xA5);
  std::vector<std::vector<std::uint8_t>> at_cancel(kSlices);
  std::vector<TransferRequest> reqs;
  for (int i = 0; i < kSlices; ++i) {
    auto r = a_->create_transfer(TransferOp::kRead, local().range(i * kSlice, kSlice), "target",
                                 remote().range(i * kSlice, kSlice));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    KVF_ASSERT_OK(r->post());
    if (i % 2) std::this_thread::sleep_for(std::chrono::microseconds(200 * i));
    r->cancel();
    const TransferState st = r->state();
    ASSERT_NE(st, TransferState::kInProgress) << "slice " << i;
    at_cancel[i] = local().bytes_at(i * kSlice, kSlice);
    if (st == TransferState::kDone) {
      EXPECT_EQ(std::memcmp(at_cancel[i].data(), source.data() + i * kSlice, kSlice), 0) << "slice " << i;
    } else {
      EXPECT_EQ(r->error().code(), StatusCode::kCancelled) << r->error().to_string();
    }
    reqs.push_back(std::move(r).value());
  }
  std::this_thread::sleep_for(300ms);
  for (int i = 0; i < kSlices; ++i)
    EXPECT_EQ(local().bytes_at(i * kSlice, kSlice), at_cancel[i]) << "slice " << i << " changed after cancel()";
}

TEST_P(Conformance, DeregisterWhileAPostedTransferUsesTheMemoryIsRefused) {
  auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  Status s = a_->deregister_memory(local().whole());
  if (w->state() == TransferState::kInProgress || !s.ok()) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
    EXPECT_NE(s.message().find("used by"), std::string::npos);
  }
  KVF_ASSERT_OK(w->wait(10s));
  if (!s.ok()) KVF_ASSERT_OK(a_->deregister_memory(local().whole()));
  EXPECT_EQ(w->post().code(), StatusCode::kFailedPrecondition);  // its memory is gone
}

TEST_P(Conformance, ForgottenPeerFailsFastAndReloadWorks) {
  auto w = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(a_->forget_remote("target"));
  EXPECT_EQ(w->post().code(), StatusCode::kNotFound);
  introduce(*a_, *b_);
  auto again = a_->create_transfer(TransferOp::kWrite, local().whole(), "target", remote().whole());
  ASSERT_TRUE(again.ok());
  KVF_ASSERT_OK(again->post());
  KVF_ASSERT_OK(again->wait(10s));
}

TEST_P(Conformance, ManyConcurrentRequestsFromSeveralThreads) {
  constexpr int kThreads = 4, kPerThread = 25;
  constexpr std::size_t kSlice = kSize / kThreads;
  local().randomize(77);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::mutex first_mu;
  std::string first_failure;  // which step of which request, and its status
  auto failed = [&](int t, int i, const char* step, const Status& s) {
    std::lock_guard lock(first_mu);
    if (failures++ == 0)
      first_failure = "thread " + std::to_string(t) + " request " + std::to_string(i) + ": " + step + ": " + s.to_string();
  };
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      DescriptorList l = local().range(t * kSlice, kSlice);
      DescriptorList r = remote().range(t * kSlice, kSlice);
      for (int i = 0; i < kPerThread; ++i) {
        auto w = a_->create_transfer(TransferOp::kWrite, l, "target", r);
        if (!w.ok()) {
          failed(t, i, "create_transfer", w.status());
          continue;
        }
        if (Status s = w->post(); !s.ok()) failed(t, i, "post", s);
        else if (Status s2 = w->wait(10s); !s2.ok()) failed(t, i, "wait", s2);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << "first failure: " << first_failure;
  EXPECT_TRUE(SameBytes(local().bytes(), remote().bytes()));
}

// Named backend_local_remote, e.g. tcp_vram_dram.
INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(kCases), [](const auto& p) {
  std::string tls = p.param.tls;
  std::replace(tls.begin(), tls.end(), ',', '_');
  return p.param.backend + (tls.empty() ? "" : "_" + tls) + "_" +
         std::string(to_string(p.param.local)) + "_" +
         std::string(to_string(p.param.remote));
});

}  // namespace
}  // namespace kvferry::testing
