// Revocation over shm, end to end (core/revocation.h in the shm target): an initiator
// that holds the target's regions and does not confirm their revocation is cut off
// within peer_timeout, and deregister_memory returns; one that confirms keeps its link.
// The initiator here is written by hand over the same-host link (core/host_link.h), so
// that it can stay silent, as a stopped or misbehaving process would.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>

#include "backends/shm/shm_protocol.h"
#include "backends/shm/shm_ring.h"
#include "core/fd_passing.h"
#include "core/host_link.h"
#include "core/metadata.h"
#include "core/unix_socket.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A raw shm initiator linked to `target`: its control block, its eventfd, the regions it
// was announced.
struct RawInitiator {
  detail::UniqueFd sock, control, wake;
  detail::shm::ControlBlock* cb = nullptr;
  std::vector<std::uint64_t> regions;
  Status status;

  explicit RawInitiator(Agent& target) {
    auto md = target.local_metadata();
    status = md.status();
    if (!status.ok()) return;
    auto decoded = detail::decode_metadata(*md);
    status = decoded.status();
    if (!status.ok()) return;
    std::string name;
    for (const auto& b : decoded->backends)
      if (b.name == "shm") name.assign(b.info.begin(), b.info.end());
    auto s = detail::connect_abstract(name, "shm");
    status = s.status();
    if (!status.ok()) return;
    sock = std::move(*s);
    control.reset(::memfd_create("raw-initiator", MFD_CLOEXEC));
    void* p = ::ftruncate(control.get(), sizeof(detail::shm::ControlBlock)) == 0
                  ? ::mmap(nullptr, sizeof(detail::shm::ControlBlock), PROT_READ | PROT_WRITE, MAP_SHARED, control.get(), 0)
                  : MAP_FAILED;
    if (p == MAP_FAILED) {
      status = IoError("test: cannot make the control block");
      return;
    }
    cb = static_cast<detail::shm::ControlBlock*>(p);
    cb->magic = detail::shm::kControlMagic;
    wake.reset(::eventfd(0, EFD_CLOEXEC));
    const detail::HostLinkConfig cfg{"shm", detail::shm::kShmProtocolVersion, "raw", nullptr, 5000ms};
    const int fds[2] = {control.get(), wake.get()};
    auto answer = detail::initiate_host_link(
        sock.get(), cfg, target.name(), fds, 1,
        [this](detail::AnnouncedRegion& r) {
          regions.push_back(r.id);
          return Status::Ok();
        },
        detail::deadline_after(5s));
    status = answer.status();
  }
  ~RawInitiator() {
    if (cb) ::munmap(cb, sizeof(detail::shm::ControlBlock));
  }
  // The next control message (within `wait`).
  Status next(std::vector<std::uint8_t>* msg, std::chrono::milliseconds wait) {
    std::vector<detail::UniqueFd> fds;
    return detail::recv_message(sock.get(), msg, &fds, detail::deadline_after(wait), "shm");
  }
};

// A target agent (shm, the given peer_timeout) with one registered 1 MiB region, and a raw
// initiator linked to it that was announced that region.
struct LinkedTarget {
  std::unique_ptr<Agent> agent;
  std::optional<SharedMemory> mem;
  std::optional<RawInitiator> raw;

  void link(std::chrono::milliseconds peer_timeout) {
    agent = make_agent("target", "shm", peer_timeout);
    ASSERT_TRUE(agent);
    auto m = agent->allocate_shared_memory(1u << 20);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    mem.emplace(std::move(*m));
    KVF_ASSERT_OK(agent->register_memory(mem->descriptors()));
    raw.emplace(*agent);
    KVF_ASSERT_OK(raw->status);
    ASSERT_EQ(raw->regions.size(), 1u);
  }
};

TEST(ShmRevocation, AnInitiatorThatDoesNotConfirmIsCutOffWithinTheBound) {
  LinkedTarget t;
  ASSERT_NO_FATAL_FAILURE(t.link(600ms));
  Agent& b = *t.agent;
  RawInitiator& raw = *t.raw;

  const auto t0 = Clock::now();
  KVF_ASSERT_OK(b.deregister_memory(t.mem->descriptors()));  // we never confirm
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, 600ms);
  EXPECT_LT(took, 3s);
  std::vector<std::uint8_t> msg;
  KVF_ASSERT_OK(raw.next(&msg, 1s));
  EXPECT_EQ(detail::parse_host_revoke(msg, detail::HostMessage::kRevoke), raw.regions[0]);
  Status after = raw.next(&msg, 3s);  // then the target hangs up on us
  EXPECT_EQ(after.code(), StatusCode::kPeerLost) << after.to_string();
}

TEST(ShmRevocation, AnInitiatorThatConfirmsKeepsItsLinkAndIsNotWaitedFor) {
  LinkedTarget t;
  ASSERT_NO_FATAL_FAILURE(t.link(3000ms));
  Agent& b = *t.agent;
  RawInitiator& raw = *t.raw;

  std::thread answer([&] {
    std::vector<std::uint8_t> msg;
    if (!raw.next(&msg, 5s).ok()) return;
    if (auto region = detail::parse_host_revoke(msg, detail::HostMessage::kRevoke))
      (void)detail::send_message(raw.sock.get(), detail::host_revoke_message(detail::HostMessage::kRevokeAck, *region),
                                 {}, detail::deadline_after(1s), "shm");
  });
  const auto t0 = Clock::now();
  KVF_ASSERT_OK(b.deregister_memory(t.mem->descriptors()));
  EXPECT_LT(Clock::now() - t0, 2s);  // the confirmation, not the 3 s bound
  answer.join();
  std::vector<std::uint8_t> msg;
  Status after = raw.next(&msg, 300ms);
  EXPECT_EQ(after.code(), StatusCode::kTimeout) << "the link should stay open: " << after.to_string();
}

}  // namespace
}  // namespace kvferry::testing
