// The failure guarantees, written once over a list of backends and run with fault
// injection off and on (core/fault_connection.h):
// - after cancel() returns, or a request ends in an error, no byte of our memory that it
//   could write changes any more (poisoned destinations, snapshot, wait, compare);
// - a request that reports done moved exactly the right bytes;
// - a peer process killed mid-transfer turns its requests into kPeerLost, never "done";
// - a killed and restarted peer is loaded again without disturbing another peer.
// A new backend joins with one line in kBackends. Process peers run kvferry_test_peer;
// loopback has an in-process target; file reads a file of the agent itself; cuda_ipc
// moves GPU memory (ours on GPU 0, the peer's on GPU 1 where there is one) and skips
// where no GPU is present.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "file_test_util.h"
#include "peer_process.h"
#include "test_memory.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct BackendCase {
  std::string backend;
  enum Peer { kProcess, kInProcess, kOwnFile } peer;
  MemoryKind memory = MemoryKind::kDram;  // of both sides
};
const BackendCase kBackends[] = {
    {"loopback", BackendCase::kInProcess},
    {"tcp", BackendCase::kProcess},
    {"shm", BackendCase::kProcess},
    {"ucx", BackendCase::kProcess},
    {"file", BackendCase::kOwnFile},
    {"cuda_ipc", BackendCase::kProcess, MemoryKind::kVram},
};

// The peer's GPU for vram cases: another one where there are two.
int peer_device() { return visible_gpus() > 1 ? 1 : 0; }

// A peer process's pool as a remote list of the case's memory kind.
DescriptorList peer_range(const BackendCase& b, const PeerProcess& peer, std::uint64_t length) {
  const std::uint32_t device = b.memory == MemoryKind::kVram ? static_cast<std::uint32_t>(peer_device()) : 0;
  return DescriptorList(b.memory, {Descriptor{peer.address(), length, device}});
}

// A peer process serving `size` bytes of mt19937_64(seed) in the case's memory.
std::unique_ptr<PeerProcess> spawn_peer(const BackendCase& b, const std::string& name, std::uint64_t size,
                                        std::uint64_t seed, std::chrono::milliseconds peer_timeout, std::string* error) {
  const bool vram = b.memory == MemoryKind::kVram;
  return PeerProcess::spawn({.name = name, .size = size, .seed = seed, .peer_timeout = peer_timeout,
                             .backend = b.backend, .shared = b.backend == "shm", .mem = vram ? "vram" : "dram",
                             .device = vram ? peer_device() : 0},
                            error);
}

struct Param {
  BackendCase backend;
  bool faults;
};

std::string param_name(const ::testing::TestParamInfo<Param>& p) {
  return p.param.backend.backend + (p.param.faults ? "_WithFaults" : "_Plain");
}

// Fault injection mixed: delays, failures, truncations, stalls (kill is its own test).
std::map<std::string, std::string> fault_settings(bool on) {
  if (!on) return {};
  return {{"fault.seed", "7"},       {"fault.delay_us", "300"}, {"fault.fail", "100"},
          {"fault.truncate", "100"}, {"fault.stall", "100"}};
}

constexpr std::uint64_t kSlice = 4u << 20;
constexpr int kSlices = 12;
constexpr std::uint64_t kRegionBytes = kSlice * kSlices;
constexpr auto kPeerTimeout = 1500ms;

// One initiator and a source of kRegionBytes random bytes (seed 41) it reads from, on a backend.
class Guarantees : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const Param& p = GetParam();
    std::string why;
    if (p.backend.memory == MemoryKind::kVram && visible_gpus() == 0) GTEST_SKIP() << "needs a CUDA GPU";
    local_ = TestMemory::make(p.backend.memory, 0, kRegionBytes, &why);
    if (!local_) GTEST_SKIP() << why;
    AgentOptions o;
    o.name = p.backend.peer == BackendCase::kOwnFile ? "solo" : "initiator";
    o.backends = {p.backend.backend};
    if (p.backend.peer == BackendCase::kOwnFile) o.backends.push_back("loopback");
    o.backend_params = fault_settings(p.faults);
    o.peer_timeout = kPeerTimeout;
    auto a = Agent::create(o);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    agent_ = std::move(a).value();
    KVF_ASSERT_OK(agent_->register_memory(local_->whole()));
    source_.randomize(41);
    switch (p.backend.peer) {
      case BackendCase::kProcess: {
        std::string error;
        peer_ = spawn_peer(p.backend, "target", kRegionBytes, 41, kPeerTimeout, &error);
        ASSERT_TRUE(peer_) << error;
        ASSERT_TRUE(agent_->fetch_remote("127.0.0.1", peer_->port()).ok());
        peer_name_ = "target";
        remote_ = peer_range(p.backend, *peer_, kRegionBytes);
        break;
      }
      case BackendCase::kInProcess: {
        target_ = make_agent("target", p.backend.backend, kPeerTimeout);
        ASSERT_TRUE(target_);
        target_memory_ = std::make_unique<Buffer>(kRegionBytes);
        target_memory_->randomize(41);
        KVF_ASSERT_OK(target_->register_memory(target_memory_->whole()));
        introduce(*agent_, *target_);
        peer_name_ = "target";
        remote_ = target_memory_->whole();
        break;
      }
      case BackendCase::kOwnFile: {
        FileOpenOptions fo;
        fo.create = fo.truncate = true;
        fo.capacity = kRegionBytes;
        auto f = agent_->register_file(dir_.file("source"), fo);
        ASSERT_TRUE(f.ok()) << f.status().to_string();
        peer_name_ = "solo";
        remote_ = f->region();
        // Fill the file with the source bytes through the agent itself.
        KVF_ASSERT_OK(agent_->register_memory(source_.whole()));
        auto w = agent_->create_transfer(TransferOp::kWrite, source_.whole(), "solo", remote_);
        ASSERT_TRUE(w.ok()) << w.status().to_string();
        for (int attempt = 0; attempt < 50; ++attempt) {  // injected faults fail some attempts
          Status s = w->post();
          if (s.ok()) s = w->wait(20s);
          if (s.ok()) break;
          ASSERT_NE(attempt, 49) << s.to_string();
        }
        break;
      }
    }
  }

  DescriptorList local_slice(int i) const { return local_->range(i * kSlice, kSlice); }
  std::vector<std::uint8_t> slice_bytes(int i) const { return local_->bytes_at(i * kSlice, kSlice); }
  DescriptorList remote_slice(int i) const { return remote_range(i, 1); }
  DescriptorList remote_range(int first, int slices) const {
    DescriptorList out(remote_.kind());
    const Descriptor& d = remote_[0];
    out.add(d.address + first * kSlice, slices * kSlice, d.device);
    return out;
  }
  bool slice_is_source(int i) const {
    return slice_bytes(i) == std::vector<std::uint8_t>(source_.data() + i * kSlice, source_.data() + (i + 1) * kSlice);
  }

  Buffer source_{kRegionBytes};  // outlives agent_ (declared first)
  std::unique_ptr<TestMemory> local_;  // ours, of the case's memory kind; outlives agent_
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<PeerProcess> peer_;
  std::unique_ptr<Buffer> target_memory_;  // outlives target_ (declared first)
  std::unique_ptr<Agent> target_;
  ScratchDir dir_;
  std::string peer_name_;
  DescriptorList remote_{MemoryKind::kDram};
};

// Reads into poisoned slices, each cancelled after a random short delay. When cancel()
// returns the request is done (exact bytes) or failed; its slice never changes again.
TEST_P(Guarantees, AfterCancelReturnsOurMemoryNeverChanges) {
  local_->fill(0xA5);
  std::mt19937_64 rng(5);
  std::vector<TransferRequest> reqs;
  for (int i = 0; i < kSlices; ++i) {
    auto r = agent_->create_transfer(TransferOp::kRead, local_slice(i), peer_name_, remote_slice(i));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    reqs.push_back(std::move(r).value());
  }
  std::vector<std::vector<std::uint8_t>> at_cancel(kSlices);
  int done = 0, cancelled = 0;
  for (int i = 0; i < kSlices; ++i) {
    Status posted = reqs[i].post();
    if (posted.ok()) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    reqs[i].cancel();
    const TransferState st = reqs[i].state();
    ASSERT_NE(st, TransferState::kInProgress) << "request " << i << " is in progress after cancel returned";
    at_cancel[i] = slice_bytes(i);
    if (st == TransferState::kDone) {
      ++done;
      EXPECT_TRUE(slice_is_source(i)) << "request " << i << " reported done with wrong bytes";
    } else if (posted.ok()) {
      const StatusCode code = reqs[i].error().code();
      ++cancelled;
      if (!GetParam().faults) {
        EXPECT_EQ(code, StatusCode::kCancelled) << reqs[i].error().to_string();
      } else {
        EXPECT_TRUE(code == StatusCode::kCancelled || code == StatusCode::kRemoteError || code == StatusCode::kPeerLost)
            << reqs[i].error().to_string();
      }
    }
  }
  std::this_thread::sleep_for(500ms);  // anything still moving would land by now
  for (int i = 0; i < kSlices; ++i)
    EXPECT_TRUE(at_cancel[i] == slice_bytes(i)) << "slice " << i << " changed after cancel() returned";
  RecordProperty("done", done);
  RecordProperty("cancelled", cancelled);
  // The link still works afterwards (faults may fail single attempts).
  auto again = agent_->create_transfer(TransferOp::kRead, local_slice(0), peer_name_, remote_slice(0));
  ASSERT_TRUE(again.ok());
  Status s;
  for (int attempt = 0; attempt < 20; ++attempt) {
    s = again->post();
    if (s.ok()) s = again->wait(10s);
    if (s.ok()) break;
  }
  EXPECT_TRUE(s.ok()) << s.to_string();
  EXPECT_TRUE(slice_is_source(0));
}

// Every request that ends in an error (injected or not) leaves its slice as it was at
// that moment; every done request moved exactly the source bytes.
TEST_P(Guarantees, AfterAnErrorReturnsOurMemoryNeverChanges) {
  local_->fill(0x5A);
  std::vector<TransferRequest> reqs;
  for (int i = 0; i < kSlices; ++i) {
    auto r = agent_->create_transfer(TransferOp::kRead, local_slice(i), peer_name_, remote_slice(i));
    ASSERT_TRUE(r.ok());
    KVF_ASSERT_OK(r->post());
    reqs.push_back(std::move(r).value());
  }
  std::vector<std::vector<std::uint8_t>> at_end(kSlices);
  std::vector<bool> failed(kSlices, false);
  for (int i = 0; i < kSlices; ++i) {
    Status s = reqs[i].wait(kPeerTimeout + 10s);
    ASSERT_NE(s.code(), StatusCode::kTimeout) << "request " << i << " never ended";
    at_end[i] = slice_bytes(i);
    failed[i] = !s.ok();
    if (s.ok()) {
      EXPECT_TRUE(slice_is_source(i)) << "request " << i << " reported done with wrong bytes";
    } else if (!GetParam().faults) {
      ADD_FAILURE() << "request " << i << " failed without faults: " << s.to_string();
    }
  }
  std::this_thread::sleep_for(500ms);
  for (int i = 0; i < kSlices; ++i)
    EXPECT_TRUE(at_end[i] == slice_bytes(i))
        << "slice " << i << (failed[i] ? " (failed)" : " (done)") << " changed after its request returned";
}

// A peer process killed mid-read: every request ends within the bound, either done with
// exactly the source bytes (the peer had sent them all before it died: over tcp the
// bytes may still be on their way) or kPeerLost, and our memory never changes after
// the last one returned. (That shm never reports done for a copy that outlived its
// peer is ShmFailure.*InFlightWhenThePeerIsKilledArePeerLost.)
TEST_P(Guarantees, PeerKilledMidReadIsPeerLostAndOurMemoryStaysPut) {
  if (GetParam().backend.peer != BackendCase::kProcess) GTEST_SKIP() << "no peer process to kill on this backend";
  local_->fill(0xC3);
  // A GPU copies a slice far faster than a request is posted: there, whole-region requests,
  // many rounds and no pause keep copies in flight when the kill lands.
  const bool gpu = GetParam().backend.memory == MemoryKind::kVram;
  const int span = gpu ? kSlices : 1, rounds = gpu ? 128 : 3;
  std::vector<TransferRequest> reqs;
  std::vector<int> slice_of;
  for (int round = 0; round < rounds; ++round)
    for (int i = 0; i < kSlices; i += span) {
      auto r = agent_->create_transfer(TransferOp::kRead, local_->range(i * kSlice, span * kSlice), peer_name_,
                                       remote_range(i, span));
      ASSERT_TRUE(r.ok());
      if (!r->post().ok()) continue;
      reqs.push_back(std::move(r).value());
      slice_of.push_back(i);
    }
  if (!gpu) std::this_thread::sleep_for(2ms);
  ASSERT_TRUE(peer_->signal(SIGKILL));
  const auto killed = Clock::now();
  std::vector<TransferState> at_kill;
  for (auto& r : reqs) at_kill.push_back(r.state());
  int lost = 0;
  std::vector<bool> done(reqs.size(), false);
  for (std::size_t k = 0; k < reqs.size(); ++k) {
    Status s = reqs[k].wait(killed + kPeerTimeout + 3s - Clock::now());
    ASSERT_NE(s.code(), StatusCode::kTimeout) << "request " << k << " never ended after the kill";
    done[k] = s.ok();
    if (at_kill[k] == TransferState::kInProgress && !GetParam().faults && !s.ok()) {
      EXPECT_EQ(s.code(), StatusCode::kPeerLost) << "request " << k << " in flight at the kill: " << s.to_string();
    }
    lost += s.code() == StatusCode::kPeerLost;
  }
  // Slices are only ever written with source bytes (several requests share one): a
  // request reported done whose slice still holds poison did not move its bytes.
  for (std::size_t k = 0; k < reqs.size(); ++k) {
    for (int j = slice_of[k]; done[k] && j < slice_of[k] + span; ++j)
      EXPECT_TRUE(slice_is_source(j)) << "request " << k << " done, bytes of slice " << j << " wrong";
  }
  EXPECT_LT(Clock::now() - killed, kPeerTimeout + 1s);
  const std::vector<std::uint8_t> after = local_->bytes();
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(after == local_->bytes()) << "our memory changed after every request ended";
  EXPECT_GT(lost, 0);
}

// A killed peer restarted under the same name is loaded again, while transfers with
// another peer go on undisturbed.
TEST_P(Guarantees, RestartedPeerIsLoadedWithoutDisturbingAnother) {
  if (GetParam().backend.peer != BackendCase::kProcess) GTEST_SKIP() << "no peer process to restart on this backend";
  std::string error;
  const BackendCase& b = GetParam().backend;
  auto other = spawn_peer(b, "other", kSlice, 43, kPeerTimeout, &error);
  ASSERT_TRUE(other) << error;
  ASSERT_TRUE(agent_->fetch_remote("127.0.0.1", other->port()).ok());
  const DescriptorList other_remote = peer_range(b, *other, kSlice);
  ASSERT_TRUE(peer_->signal(SIGKILL));
  ASSERT_TRUE(peer_->wait_exit(5s));
  auto reborn = spawn_peer(b, "target", kRegionBytes, 44, kPeerTimeout, &error);
  ASSERT_TRUE(reborn) << error;
  auto name = agent_->fetch_remote("127.0.0.1", reborn->port());
  ASSERT_TRUE(name.ok()) << "the restarted peer was refused: " << name.status().to_string();
  Buffer expected(kRegionBytes);
  expected.randomize(44);
  Buffer other_expected(kSlice);
  other_expected.randomize(43);
  auto read_until_ok = [&](const DescriptorList& local, const std::string& peer, const DescriptorList& remote) {
    auto r = agent_->create_transfer(TransferOp::kRead, local, peer, remote);
    if (!r.ok()) return r.status();
    Status s;
    for (int attempt = 0; attempt < 20; ++attempt) {  // injected faults (stalls too) fail some attempts
      s = r->post();
      if (s.ok()) s = r->wait(10s);
      if (s.ok() || !GetParam().faults) break;
    }
    return s;
  };
  KVF_ASSERT_OK(read_until_ok(local_slice(0), "other", other_remote));
  EXPECT_TRUE(slice_bytes(0) == std::vector<std::uint8_t>(other_expected.data(), other_expected.data() + kSlice));
  KVF_ASSERT_OK(read_until_ok(local_slice(1), "target", peer_range(b, *reborn, kSlice)));
  EXPECT_TRUE(slice_bytes(1) == std::vector<std::uint8_t>(expected.data(), expected.data() + kSlice));
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (const BackendCase& b : kBackends)
    for (bool faults : {false, true}) out.push_back({b, faults});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Backends, Guarantees, ::testing::ValuesIn(all_params()), param_name);

// fault.kill: the connection is dropped, its requests fail kPeerLost, later posts fail
// fast, and loading the peer again (same instance) restores it.
TEST(FaultInjection, KilledConnectionIsLostUntilThePeerIsLoadedAgain) {
  // Memory outlives the agents that registered it (the contract; TSan checks it too:
  // the target may still be serving a read the initiator's killed connection gave up).
  Buffer x(1u << 20), y(1u << 20);
  AgentOptions o;
  o.name = "initiator";
  o.backends = {"tcp"};
  o.backend_params = {{"fault.kill", "1000"}, {"fault.every", "3"}};
  auto a = Agent::create(o);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  auto b = make_agent("target", "tcp");
  ASSERT_TRUE(b);
  y.randomize(3);
  KVF_ASSERT_OK((*a)->register_memory(x.whole()));
  KVF_ASSERT_OK(b->register_memory(y.whole()));
  introduce(**a, *b);
  auto r = (*a)->create_transfer(TransferOp::kRead, x.whole(), "target", y.whole());
  ASSERT_TRUE(r.ok());
  for (int i = 0; i < 2; ++i) {
    KVF_ASSERT_OK(r->post());
    KVF_ASSERT_OK(r->wait(10s));
  }
  Status s = r->post();  // the third job kills the connection
  if (s.ok()) s = r->wait(10s);
  EXPECT_EQ(s.code(), StatusCode::kPeerLost) << s.to_string();
  EXPECT_EQ(r->post().code(), StatusCode::kPeerLost);
  introduce(**a, *b);  // the same instance, loaded again: a fresh connection
  auto again = (*a)->create_transfer(TransferOp::kRead, x.whole(), "target", y.whole());
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  KVF_ASSERT_OK(again->post());
  KVF_ASSERT_OK(again->wait(10s));
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0);
}

TEST(FaultInjection, UnknownSettingsAreNamed) {
  AgentOptions o;
  o.name = "a";
  o.backends = {"loopback"};
  o.backend_params = {{"fault.explode", "1"}};
  auto a = Agent::create(o);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("fault.explode"), std::string::npos) << a.status().to_string();
  o.backend_params = {{"fault.fail", "1001"}};
  EXPECT_EQ(Agent::create(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvferry::testing
