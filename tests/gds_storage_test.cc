// GPU memory <-> files: the gds backend (cuFile) and the staging path of the KV store.
// Skips (GTEST_SKIP) where there is no GPU or no cuFile; run on the GPU machine with
// scripts/gpu_storage_check.sh, which also sets KVFERRY_GPU_BENCH=1 for the measured
// case at the end (40 layers x 256 scattered 64 KiB blocks, gds vs staging).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>

#include "backends/gds/cufile_api.h"
#include "core/cuda_driver.h"
#include "file_test_util.h"
#include "kv/kv_test_reference.h"
#include "kvferry/kv/offload.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using detail::CudaDriver;

const BackendInfo* gds_info(const std::vector<BackendInfo>& all) {
  for (const auto& b : all)
    if (b.name == "gds") return &b;
  return nullptr;
}

// Skips the test unless a GPU and (with `need_cufile`) cuFile are usable here.
#define KVF_REQUIRE_GPU(need_cufile)                                                                      \
  do {                                                                                                    \
    auto cuda_ = CudaDriver::get();                                                                       \
    if (!cuda_.ok()) GTEST_SKIP() << "no GPU here: " << cuda_.status().message();                         \
    if (need_cufile) {                                                                                    \
      const auto all_ = compiled_backends();                                                              \
      const BackendInfo* g_ = gds_info(all_);                                                             \
      if (!g_ || !g_->usable) GTEST_SKIP() << "gds not usable here: " << (g_ ? g_->reason : "not built"); \
    }                                                                                                     \
  } while (0)

class GpuBuffer {
 public:
  explicit GpuBuffer(std::size_t bytes, int device = 0) : bytes_(bytes), device_(device) {
    cuda_ = *CudaDriver::get();
    CudaDriver::Scope scope(*cuda_, device);
    EXPECT_TRUE(cuda_->check(cuda_->cuMemAlloc(&ptr_, bytes), "cuMemAlloc").ok());
  }
  ~GpuBuffer() {
    CudaDriver::Scope scope(*cuda_, device_);
    if (ptr_) cuda_->cuMemFree(ptr_);
  }
  std::uint64_t addr(std::size_t off = 0) const { return ptr_ + off; }
  std::size_t size() const { return bytes_; }
  DescriptorList whole() const {
    return DescriptorList(MemoryKind::kVram, {Descriptor{ptr_, bytes_, static_cast<std::uint32_t>(device_)}});
  }
  void upload(const void* host) const {
    CudaDriver::Scope scope(*cuda_, device_);
    EXPECT_TRUE(cuda_->check(cuda_->cuMemcpyHtoD(ptr_, host, bytes_), "cuMemcpyHtoD").ok());
  }
  void download(void* host) const {
    CudaDriver::Scope scope(*cuda_, device_);
    EXPECT_TRUE(cuda_->check(cuda_->cuMemcpyDtoH(host, ptr_, bytes_), "cuMemcpyDtoH").ok());
  }
  void fill(std::uint8_t byte) const {
    CudaDriver::Scope scope(*cuda_, device_);
    EXPECT_TRUE(cuda_->check(cuda_->cuMemsetD8(ptr_, byte, bytes_), "cuMemsetD8").ok());
  }

 private:
  const CudaDriver* cuda_ = nullptr;
  detail::CUdeviceptr ptr_ = 0;
  std::size_t bytes_;
  int device_;
};

std::unique_ptr<Agent> make_gpu_agent(const std::string& name,
                                      std::map<std::string, std::string> params = {}) {
  AgentOptions o;
  o.name = name;
  o.backends = {"gds", "file", "loopback"};
  o.backend_params = std::move(params);
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

TEST(GdsProbe, InfoSaysWhyWhenUnusable) {
  const auto all = compiled_backends();
  const BackendInfo* g = gds_info(all);
  ASSERT_NE(g, nullptr) << "the gds backend is not compiled in";
  if (!g->usable) {
    EXPECT_FALSE(g->reason.empty());
    const bool names_it =
        g->reason.find("CUDA") != std::string::npos || g->reason.find("cuFile") != std::string::npos;
    EXPECT_TRUE(names_it) << g->reason;
  }
  // Without a GPU, asking for it by name fails with that reason, not a crash.
  if (!g->usable) {
    AgentOptions o;
    o.name = "x";
    o.backends = {"gds"};
    auto a = Agent::create(o);
    EXPECT_FALSE(a.ok());
    EXPECT_NE(a.status().message().find(g->reason), std::string::npos) << a.status().to_string();
  }
}

class Gds : public ::testing::TestWithParam<std::string> {};

TEST_P(Gds, RoundTripAndScatteredBlocks) {
  KVF_REQUIRE_GPU(true);
  constexpr std::size_t kSize = 64u << 20, kBlock = 64u << 10;
  GpuBuffer vram(kSize);
  auto agent = make_gpu_agent("gpu", {{"gds.engine", GetParam()}});
  ASSERT_TRUE(agent);
  ScratchDir dir;
  Buffer host(kSize), back(kSize);
  host.randomize(11);
  vram.upload(host.data());
  KVF_ASSERT_OK(agent->register_memory(vram.whole()));
  FileOpenOptions fo;
  fo.create = true;
  fo.capacity = kSize;
  auto file = agent->register_file(dir.file("gpu.dat"), fo);
  ASSERT_TRUE(file.ok()) << file.status().to_string();

  auto w = agent->create_transfer(TransferOp::kWrite, vram.whole(), agent->name(), file->region());
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->telemetry().backend, "gds");
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(60s));
  ASSERT_EQ(std::memcmp(read_whole_file(file->path).data(), host.data(), kSize), 0);

  vram.fill(0xAB);
  auto r = agent->create_transfer(TransferOp::kRead, vram.whole(), agent->name(), file->region());
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(60s));
  vram.download(back.data());
  ASSERT_EQ(std::memcmp(back.data(), host.data(), kSize), 0);

  // Scattered GPU blocks into consecutive file blocks, with a notification.
  DescriptorList blocks(MemoryKind::kVram), slots(MemoryKind::kFile);
  for (std::size_t i = 0; i < kSize / kBlock; ++i) {
    blocks.add(vram.addr(i * kBlock), kBlock, 0);
    slots.add(file->at(i * kBlock, kBlock));
  }
  auto bp = agent->prepare_local(blocks);
  auto sp = agent->prepare_remote(agent->name(), slots);
  ASSERT_TRUE(bp.ok() && sp.ok());
  std::vector<std::uint32_t> from = {900, 3, 4, 5, 17, 1000}, to = {0, 1, 2, 3, 4, 5};
  TransferOptions o;
  o.notification = "gpu-offloaded";
  auto s = agent->create_transfer(TransferOp::kWrite, *bp, from, *sp, to, o);
  ASSERT_TRUE(s.ok());
  KVF_ASSERT_OK(s->post());
  KVF_ASSERT_OK(s->wait(60s));
  auto disk = read_whole_file(file->path);
  for (std::size_t k = 0; k < from.size(); ++k)
    EXPECT_EQ(std::memcmp(disk.data() + to[k] * kBlock, host.data() + from[k] * kBlock, kBlock), 0) << k;
  ASSERT_TRUE(agent->wait_for_notifications(10s));
  EXPECT_EQ(agent->take_notifications()[0].message, "gpu-offloaded");

  // Cancel in flight, then the memory is free to deregister.
  auto c = agent->create_transfer(TransferOp::kRead, vram.whole(), agent->name(), file->region());
  ASSERT_TRUE(c.ok());
  KVF_ASSERT_OK(c->post());
  c->cancel();
  EXPECT_NE(c->state(), TransferState::kInProgress);
  KVF_ASSERT_OK(agent->deregister_file(file->id));
  KVF_ASSERT_OK(agent->deregister_memory(vram.whole()));
}

TEST_P(Gds, HostMemoryIsNotVram) {
  KVF_REQUIRE_GPU(true);
  auto agent = make_gpu_agent("gpu", {{"gds.engine", GetParam()}});
  ASSERT_TRUE(agent);
  Buffer host(1 << 20);
  DescriptorList fake(MemoryKind::kVram, {Descriptor{host.addr(), host.size(), 0}});
  Status s = agent->register_memory(fake);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("vram region"), std::string::npos) << s.to_string();
}

INSTANTIATE_TEST_SUITE_P(Engines, Gds, ::testing::Values("threads", "batch"),
                         [](const auto& p) { return p.param; });

// --- The KV store with GPU pools --------------------------------------------------------

struct GpuKvPool {
  GpuKvPool(const KvGeometry& g, KvArrangement a, std::uint32_t blocks)
      : layout(*KvLayout::create(g, a, blocks)),
        vram(layout.pool_bytes()),
        pool(*KvPool::create_contiguous(layout, MemoryKind::kVram, vram.addr(), 0)) {}
  KvLayout layout;
  GpuBuffer vram;
  KvPool pool;
};

KvGeometry gpu_geometry(std::uint32_t layers) {
  KvGeometry g;
  g.layers = layers;
  g.kv_heads = 8;
  g.head_dim = 128;
  g.block_tokens = 16;
  g.dtype = KvDtype::kBf16;  // 64 KiB per block and layer (seed 001)
  return g;
}

bool same_block(const KvPool& a, std::uint32_t s, const KvPool& b, std::uint32_t d) {
  for (std::uint32_t layer = 0; layer < a.layout().geometry().layers; ++layer) {
    const auto from = kv_testing::naive_block_addresses(a, layer, s);
    const auto to = kv_testing::naive_block_addresses(b, layer, d);
    for (std::size_t i = 0; i < from.size(); ++i)
      if (*reinterpret_cast<const std::uint8_t*>(from[i]) != *reinterpret_cast<const std::uint8_t*>(to[i]))
        return false;
  }
  return true;
}

TEST(GdsStore, VramPoolsThroughGdsAndStagingInEveryCombination) {
  KVF_REQUIRE_GPU(false);
  const KvArrangement a = KvArrangement::kVllmNhd;
  GpuKvPool src(gpu_geometry(4), a, 64), dst(gpu_geometry(4), a, 96);
  auto agent = make_gpu_agent("gpu");  // after the pools: goes (deregistering them) first
  ASSERT_TRUE(agent);
  const auto started = agent->backends();
  const bool gds = std::find(started.begin(), started.end(), "gds") != started.end();
  Buffer src_host(src.vram.size()), dst_host(dst.vram.size());
  src_host.randomize(21);
  src.vram.upload(src_host.data());
  KVF_ASSERT_OK(agent->register_memory(src.pool.tensor_regions()));
  KVF_ASSERT_OK(agent->register_memory(dst.pool.tensor_regions()));
  auto host_src = *KvPool::create_contiguous(src.layout, MemoryKind::kDram, src_host.addr());
  auto host_dst = *KvPool::create_contiguous(dst.layout, MemoryKind::kDram, dst_host.addr());
  ScratchDir dir;
  const std::vector<std::uint32_t> from = {63, 1, 2, 3, 40, 7}, into = {90, 10, 11, 12, 0, 50};
  std::vector<std::pair<KvVramPath, KvVramPath>> combos = {{KvVramPath::kStaging, KvVramPath::kStaging}};
  if (gds)
    combos.insert(combos.end(), {{KvVramPath::kGds, KvVramPath::kGds},
                                 {KvVramPath::kGds, KvVramPath::kStaging},
                                 {KvVramPath::kStaging, KvVramPath::kGds}});
  for (const auto& [out_path, in_path] : combos) {
    KvStoreOptions o;
    o.overwrite = true;
    o.vram_path = out_path;
    o.staging_bytes = 1 << 20;  // several groups: the double buffering is exercised
    auto off = offload_blocks(*agent, offload_view(src.pool), from, dir.file("store"), o);
    ASSERT_TRUE(off.ok()) << off.status().to_string();
    EXPECT_EQ(off->path, out_path == KvVramPath::kGds ? "gds" : "staging");
    dst.vram.fill(0xAB);
    o.vram_path = in_path;
    auto on = onboard_blocks(*agent, offload_view(dst.pool), dir.file("store"), into, {}, o);
    ASSERT_TRUE(on.ok()) << on.status().to_string();
    EXPECT_EQ(on->verified, out_path == KvVramPath::kStaging && in_path == KvVramPath::kStaging);
    dst.vram.download(dst_host.data());
    for (std::size_t k = 0; k < from.size(); ++k)
      EXPECT_TRUE(same_block(host_src, from[k], host_dst, into[k]))
          << k << " via " << off->path << "/" << on->path;
    const auto untouched = kv_testing::naive_block_addresses(host_dst, 1, 48);  // block 48 is no destination
    EXPECT_EQ(*reinterpret_cast<const std::uint8_t*>(untouched.front()), 0xAB);
  }
}

// --- Measured on the GPU machine ---------------------------------------------------------

// Drops the file's pages from the page cache (offload synced them: they are clean), so
// every onboard reads the disk: cuFile's compatibility mode goes through the page cache,
// the staging path does not (O_DIRECT).
void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double gbps(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
}

TEST(GdsBench, VramOffloadOnboardGdsVersusStaging) {
  if (!std::getenv("KVFERRY_GPU_BENCH"))
    GTEST_SKIP() << "set KVFERRY_GPU_BENCH=1 (scripts/gpu_storage_check.sh)";
  KVF_REQUIRE_GPU(false);
  constexpr std::uint32_t kLayers = 40, kPoolBlocks = 512, kBlocks = 256, kReps = 3;
  auto step = [](const char* what) { std::fprintf(stderr, "  setup: %s\n", what); };
  step("GPU pools");
  GpuKvPool src(gpu_geometry(kLayers), KvArrangement::kFlashInfer, kPoolBlocks);
  GpuKvPool dst(gpu_geometry(kLayers), KvArrangement::kFlashInfer, kPoolBlocks);
  step("host data");
  Buffer host(src.vram.size());
  host.randomize(31);
  step("upload");
  src.vram.upload(host.data());
  step("done");
  std::vector<std::uint32_t> ids(kPoolBlocks);
  std::iota(ids.begin(), ids.end(), 0u);
  std::mt19937 rng(7);
  std::shuffle(ids.begin(), ids.end(), rng);
  const std::vector<std::uint32_t> from(ids.begin(), ids.begin() + kBlocks),
      into(ids.begin() + kBlocks, ids.end());
  ScratchDir dir;
  FILE* out =
      std::getenv("KVFERRY_GPU_BENCH_OUT") ? std::fopen(std::getenv("KVFERRY_GPU_BENCH_OUT"), "a") : nullptr;
  std::printf("\n%-22s %-8s %10s %10s %10s %s\n", "path", "op", "GB/s", "best", "+sync", "verified");
  std::fflush(stdout);
  struct Case {
    std::string name;
    std::map<std::string, std::string> params;
    KvVramPath path;
  };
  const std::vector<Case> cases = {
      {"gds batch 64", {{"gds.engine", "batch"}}, KvVramPath::kGds},
      {"staging 64 MiB", {}, KvVramPath::kStaging},
      {"gds threads x16", {{"gds.engine", "threads"}, {"gds.threads", "16"}}, KvVramPath::kGds},
      {"staging 16 MiB", {}, KvVramPath::kStaging}};
  for (const Case& c : cases) {
    auto agent = make_gpu_agent("bench", c.params);
    ASSERT_TRUE(agent);
    const auto started = agent->backends();
    if (c.path == KvVramPath::kGds && std::find(started.begin(), started.end(), "gds") == started.end()) {
      std::printf("%-22s skipped: gds not usable\n", c.name.c_str());
      continue;
    }
    Status reg = agent->register_memory(src.pool.tensor_regions());
    if (reg.ok()) reg = agent->register_memory(dst.pool.tensor_regions());
    if (!reg.ok()) {
      ADD_FAILURE() << c.name << ": " << reg.to_string();
      std::printf("%-22s FAILED: %s\n", c.name.c_str(), reg.to_string().c_str());
      continue;
    }
    KvStoreOptions o;
    o.vram_path = c.path;
    o.overwrite = true;
    o.checksums = false;  // the gds path has none: compare like with like
    o.verify = false;
    o.staging_bytes = c.name == "staging 64 MiB" ? 64u << 20 : 16u << 20;
    bool failed = false;
    for (const char* op : {"offload", "onboard"}) {
      std::vector<double> rates, totals;
      for (std::uint32_t rep = 0; rep <= kReps && !failed; ++rep) {               // rep 0: warm-up
        if (std::string(op) == "onboard") evict(dir.file("store/kvstore.data"));  // cold reads on every path
        std::fprintf(stderr, "  %s %s rep %u\n", c.name.c_str(), op, rep);
        auto r = std::string(op) == "offload"
                     ? offload_blocks(*agent, offload_view(src.pool), from, dir.file("store"), o)
                     : onboard_blocks(*agent, offload_view(dst.pool), dir.file("store"), into, {}, o);
        if (!r.ok()) {
          ADD_FAILURE() << c.name << " " << op << ": " << r.status().to_string();
          std::printf("%-22s %-8s FAILED: %s\n", c.name.c_str(), op, r.status().to_string().c_str());
          failed = true;
          break;
        }
        if (rep == 0) continue;
        rates.push_back(gbps(r->bytes, r->io_seconds));
        totals.push_back(gbps(r->bytes, r->seconds));
      }
      if (failed) break;
      std::sort(rates.begin(), rates.end());
      std::sort(totals.begin(), totals.end());
      // Every byte of the last onboard, checked on the host.
      std::string verified = "-";
      if (std::string(op) == "onboard") {
        Buffer got(dst.vram.size());
        dst.vram.download(got.data());
        auto hs = *KvPool::create_contiguous(src.layout, MemoryKind::kDram, host.addr());
        auto hd = *KvPool::create_contiguous(dst.layout, MemoryKind::kDram, got.addr());
        bool ok = true;
        for (std::uint32_t k = 0; k < kBlocks && ok; ++k) ok = same_block(hs, from[k], hd, into[k]);
        verified = ok ? "yes" : "FAILED";
        EXPECT_TRUE(ok) << c.name;
      }
      const double med = rates[rates.size() / 2], best = rates.back(), total = totals[totals.size() / 2];
      std::printf("%-22s %-8s %10.2f %10.2f %10.2f %s\n", c.name.c_str(), op, med, best, total,
                  verified.c_str());
      std::fflush(stdout);  // each row as it is measured: a killed run keeps them
      if (out)
        std::fprintf(out,
                     "{\"case\":\"%s\",\"op\":\"%s\",\"bytes\":%llu,\"gbps_median\":%.3f,\"gbps_best\":%.3f,"
                     "\"gbps_with_index_and_sync\":%.3f,\"verified\":\"%s\"}\n",
                     c.name.c_str(), op,
                     static_cast<unsigned long long>(std::uint64_t{kBlocks} * kLayers * 65536), med, best,
                     total, verified.c_str());
      if (out) std::fflush(out);
    }
  }
  if (out) std::fclose(out);
}

}  // namespace
}  // namespace kvferry::testing

namespace kvferry::testing {
namespace {

// What cuFileHandleRegister says of O_DIRECT and buffered descriptors of one file, and of
// registering one inode twice: printed for the record of the GPU machine.
TEST(GdsProbe, HandleRegistrationOfDescriptors) {
  KVF_REQUIRE_GPU(true);
  auto api = *detail::CuFileApi::get();
  detail::CudaDriver::Scope scope(*api->cuda, 0);
  ScratchDir dir;
  const std::string path = dir.file("h.dat");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  int dfd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  auto reg = [&](int f, const char* what) {
    detail::CUfileDescr_t d{};
    d.type = detail::kCuFileHandleTypeOpaqueFd;
    d.handle.fd = f;
    detail::CUfileHandle_t h = nullptr;
    Status s = detail::CuFileApi::check(api->cuFileHandleRegister(&h, &d), what);
    std::printf("cuFileHandleRegister %-28s -> %s\n", what, s.to_string().c_str());
    return s.ok() ? h : nullptr;
  };
  auto h1 = reg(dfd, "O_DIRECT fd");
  auto h2 = reg(fd, "buffered fd, same inode");
  if (h1) api->cuFileHandleDeregister(h1);
  if (h2) api->cuFileHandleDeregister(h2);
  auto h3 = reg(fd, "buffered fd alone");
  if (h3) api->cuFileHandleDeregister(h3);
  auto h4 = reg(dfd, "O_DIRECT fd after deregister");
  if (h4) api->cuFileHandleDeregister(h4);
  ::close(fd);
  ::close(dfd);
  std::printf("cuFile version %d, CUDA driver %d\n", api->version, api->cuda->version);
}

}  // namespace
}  // namespace kvferry::testing
