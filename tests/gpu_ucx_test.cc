// GPU memory over the ucx backend: whether the UCX in use reports CUDA memory support,
// and then which way vram moves, checked byte for byte. Where UCX moves CUDA memory and the
// backend uses put/get (RDMA present, or ucx.data=rma), vram travels over ucx itself (route
// "ucx") and a peer's vram is reachable; otherwise local vram goes through the core's pinned
// staging (route "ucx+staging") and a peer's vram is not offered over ucx. Each case prints
// one "gpu_ucx:" line for scripts/gpu_ucx.sh. Skips without a GPU or without the ucx backend.
#if defined(KVFERRY_HAVE_CUDA) && __has_include(<ucp/api/ucp.h>)
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>

#include "backends/ucx/ucx_context.h"
#include "test_memory.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// (ucx.data, the peer's memory kind)
using Case = std::tuple<std::string, MemoryKind>;
class GpuUcx : public ::testing::TestWithParam<Case> {};

TEST_P(GpuUcx, VramMovesTheRightBytesOverUcxOrThroughStaging) {
  const auto& [data, peer_kind] = GetParam();
  bool compiled = false;
  for (const BackendInfo& b : compiled_backends()) compiled = compiled || (b.name == "ucx" && b.usable);
  if (!compiled) GTEST_SKIP() << "the ucx backend is not usable in this build or on this machine";
  auto ucx = detail::ucx::UcxContext::create({});  // UCX_TLS / UCX_NET_DEVICES from the environment
  ASSERT_TRUE(ucx.ok()) << ucx.status().to_string();
  const bool cuda = (*ucx)->has_cuda(), rdma = (*ucx)->has_rdma();
  const bool native = cuda && (rdma || data == "rma");
  std::printf("gpu_ucx: UCX transports %s; CUDA memory support: %s; RDMA: %s\n", (*ucx)->describe().c_str(),
              cuda ? "yes" : "no", rdma ? "yes" : "no");

  constexpr std::size_t kSize = 64u << 20;
  const int peer_gpu = visible_gpus() > 1 ? 1 : 0;
  std::string why;
  auto local = TestMemory::make(MemoryKind::kVram, 0, kSize, &why);
  std::unique_ptr<TestMemory> peer;
  if (local) peer = TestMemory::make(peer_kind, peer_gpu, kSize, &why);
  if (!local || !peer) {
    if (!HasFailure()) GTEST_SKIP() << why;
    return;
  }
  AgentOptions o;
  o.backends = {"ucx"};
  o.backend_params = {{"ucx.data", data}};
  o.name = "initiator";
  auto a = Agent::create(o);
  o.name = "target";
  auto b = Agent::create(o);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << " " << b.status().to_string();
  KVF_ASSERT_OK((*a)->register_memory(local->whole()));
  const std::string where = peer_kind == MemoryKind::kVram ? "GPU" + std::to_string(peer_gpu) + " vram" : "host memory";
  Status reg = (*b)->register_memory(peer->whole());
  if (peer_kind == MemoryKind::kVram && !native) {
    // Nothing over ucx reaches it: registering or creating the transfer says so.
    if (reg.ok()) {
      introduce(**a, **b);
      auto r = (*a)->create_transfer(TransferOp::kWrite, local->whole(), "target", peer->whole());
      EXPECT_FALSE(r.ok()) << "a transfer to the peer's vram was created without UCX CUDA support over put/get";
      if (!r.ok()) reg = r.status();
    }
    std::printf("gpu_ucx: ucx.data=%s, GPU0 vram -> peer %s: not offered over ucx (%s)\n", data.c_str(),
                where.c_str(), reg.to_string().c_str());
    return;
  }
  KVF_ASSERT_OK(reg);
  introduce(**a, **b);
  const std::string expected_route = native ? "ucx" : "ucx+staging";
  for (TransferOp op : {TransferOp::kWrite, TransferOp::kRead}) {
    TestMemory& src = op == TransferOp::kWrite ? *local : *peer;
    TestMemory& dst = op == TransferOp::kWrite ? *peer : *local;
    src.randomize(op == TransferOp::kWrite ? 11 : 12);
    dst.fill(0xEE);  // poisoned
    auto r = (*a)->create_transfer(op, local->whole(), "target", peer->whole());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    const auto t0 = std::chrono::steady_clock::now();
    KVF_ASSERT_OK(r->post());
    KVF_ASSERT_OK(r->wait(60s));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool same = SameBytes(src.bytes(), dst.bytes());
    EXPECT_TRUE(same);
    EXPECT_EQ(r->telemetry().backend, expected_route);
    std::printf("gpu_ucx: ucx.data=%s, GPU0 vram %s peer %s: route %s, %zu MiB %s, %.2f GB/s (one request)\n",
                data.c_str(), op == TransferOp::kWrite ? "->" : "<-", where.c_str(),
                r->telemetry().backend.c_str(), kSize >> 20, same ? "verified" : "MISMATCH",
                static_cast<double>(kSize) / s / 1e9);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuUcx,
                         ::testing::Combine(::testing::Values("auto", "rma"),
                                            ::testing::Values(MemoryKind::kDram, MemoryKind::kVram)),
                         [](const auto& p) {
                           return std::get<0>(p.param) + "_" + std::string(to_string(std::get<1>(p.param)));
                         });

}  // namespace
}  // namespace kvferry::testing
#endif
