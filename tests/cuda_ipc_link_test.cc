// cuda_ipc's link without a GPU: its target and initiator run the core's same-host link
// (core/host_link.h), so they authenticate with the shared secret like shm. Neither
// needs a GPU until a region is exported or a copy posted, so this runs on any machine
// built with CUDA; the copies themselves are tests/gpu_cuda_ipc_test.cc's.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "backends/cuda_ipc/cuda_ipc_initiator.h"
#include "backends/cuda_ipc/cuda_ipc_target.h"
#include "core/peer_auth.h"

namespace kvferry::detail::cuda_ipc {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const SharedSecret> secret_of(const std::string& s) {
  if (s.empty()) return nullptr;
  return SharedSecret::create({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}).value();
}

// Connects an initiator with `initiator_secret` to a target with `target_secret`.
Status link(const std::string& target_secret, const std::string& initiator_secret) {
  TargetConfig tc;
  tc.agent_name = "b";
  tc.peer_timeout = 2000ms;
  tc.deliver = [](std::string, std::string) { return Status::Ok(); };
  tc.secret = secret_of(target_secret);
  auto target = CudaIpcTarget::start(nullptr, std::move(tc));
  if (!target.ok()) return target.status();
  SessionConfig sc;
  sc.agent_name = "a";
  sc.peer_timeout = 2000ms;
  sc.lanes = std::make_shared<Lanes>(CopyMethod::kKernel, 0);  // no lane is made: nothing is posted
  sc.secret = secret_of(initiator_secret);
  const std::string pid = std::to_string(::getpid());
  auto initiator = CudaIpcInitiator::start(nullptr, std::move(sc), pid);
  if (!initiator.ok()) return initiator.status();
  PeerEndpoint peer;
  peer.agent_name = "b";
  peer.process_id = pid;
  auto session = (*initiator)->connect(peer, (*target)->socket_name(), deadline_after(3s));
  if (!session.ok()) return session.status();
  return (*session)->health();
}

const std::string kSecret = "correct horse battery staple 0123", kOther = "another secret of enough length!!";

TEST(CudaIpcLink, TheSameSecretOrNoneOnBothSidesConnects) {
  Status plain = link("", "");
  EXPECT_TRUE(plain.ok()) << plain.to_string();
  Status secret = link(kSecret, kSecret);
  EXPECT_TRUE(secret.ok()) << secret.to_string();
}

TEST(CudaIpcLink, AWrongOrMissingSecretIsRefusedNamingWhy) {
  Status wrong = link(kSecret, kOther);
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("authentication failed"), std::string::npos) << wrong.to_string();
  Status missing = link(kSecret, "");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("authentication required"), std::string::npos) << missing.to_string();
  Status unexpected = link("", kSecret);
  EXPECT_FALSE(unexpected.ok());
  EXPECT_NE(unexpected.message().find("this agent has none"), std::string::npos) << unexpected.to_string();
}

}  // namespace
}  // namespace kvferry::detail::cuda_ipc
#endif  // KVFERRY_HAVE_CUDA
