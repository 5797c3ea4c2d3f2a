// The head gather/scatter kernels (src/cuda/head_copy_kernels.cu) against the naive
// element-by-element reference (src/kv/tp/tp_test_reference.h): every arrangement, block
// sizes, odd row widths (narrow vector units), staging in device memory and in pinned host
// memory, windows longer than one launch's block table, the caller's stream. Fresh random
// data, poisoned destinations, byte comparison. Skips where no GPU is present.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cuda/head_copy_kernels.h"
#include "gpu_test_util.h"
#include "kv/tp/tp_test_reference.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/staging_slots.h"

namespace kvferry::testing {
namespace {

constexpr std::uint8_t kPoison = 0x5A;

KvGeometry geometry(std::uint32_t heads, std::uint32_t bt, std::uint32_t dim, std::uint32_t layers = 3) {
  KvGeometry g;
  g.layers = layers;
  g.kv_heads = heads;
  g.head_dim = dim;
  g.block_tokens = bt;
  g.dtype = KvDtype::kBf16;
  return g;
}

// A vram pool on GPU 0 and its host mirror (what the reference reads and writes).
struct GpuPool {
  std::unique_ptr<DeviceBuffer> memory;
  std::vector<std::uint8_t> host;
  KvLayout layout;
  KvPool pool;

  static GpuPool make(const KvGeometry& g, KvArrangement a, std::uint32_t blocks) {
    KvLayout layout = KvLayout::create(g, a, blocks).value();
    auto memory = std::make_unique<DeviceBuffer>(0, layout.pool_bytes());
    KvPool pool = KvPool::create_contiguous(layout, MemoryKind::kVram, memory->address(), 0).value();
    return GpuPool{std::move(memory), std::vector<std::uint8_t>(layout.pool_bytes()), layout, pool};
  }
  void upload() const { ASSERT_TRUE(memory->upload(host.data())); }
};

// Pinned, mapped host memory.
struct Pinned {
  explicit Pinned(std::size_t n) : size(n) {
    if (cudaHostAlloc(&ptr, n, cudaHostAllocPortable | cudaHostAllocMapped) != cudaSuccess) ptr = nullptr;
  }
  ~Pinned() {
    if (ptr) cudaFreeHost(ptr);
  }
  std::uint8_t* data() const { return static_cast<std::uint8_t*>(ptr); }
  KvStaging staging() const {
    return KvStaging{reinterpret_cast<std::uint64_t>(ptr), size, MemoryKind::kDram, 0};
  }
  void* ptr = nullptr;
  std::size_t size;
};

void check_both_ways(const KvGeometry& g, KvArrangement a, std::uint32_t blocks, std::uint64_t first,
                     std::uint64_t tokens, HeadRange heads, std::uint64_t seed) {
  SCOPED_TRACE(std::string(to_string(a)) + " bt " + std::to_string(g.block_tokens) + " dim " +
               std::to_string(g.head_dim) + " tokens " + std::to_string(first) + "+" +
               std::to_string(tokens));
  GpuPool src = GpuPool::make(g, a, blocks);
  ASSERT_TRUE(src.memory->ok());
  tp_testing::fill_random(src.host, seed);
  src.upload();
  const std::uint32_t used =
      static_cast<std::uint32_t>((first + tokens + g.block_tokens - 1) / g.block_tokens);
  auto ids = tp_testing::scattered_blocks(blocks, used, seed + 1);
  const KvTokenWindow w{ids, first, tokens};
  const std::uint64_t bytes = KvStagingShape::of(src.layout, heads.count, tokens).bytes();
  std::vector<std::uint8_t> want(bytes + 256, kPoison);
  tp_testing::naive_gather(src.layout, src.host.data(), w, heads, want.data());

  // Gather into device staging and into pinned host staging.
  DeviceBuffer dev(0, bytes + 256);
  std::vector<std::uint8_t> poison(bytes + 256, kPoison);
  ASSERT_TRUE(dev.upload(poison.data()));
  ASSERT_TRUE(
      gather_kv_heads(src.pool, w, heads, KvStaging{dev.address(), dev.size(), MemoryKind::kVram, 0}).ok());
  EXPECT_EQ(dev.download(), want) << "gather into device staging";
  Pinned host(bytes + 256);
  ASSERT_NE(host.ptr, nullptr);
  std::memset(host.data(), kPoison, host.size);
  Status s = gather_kv_heads(src.pool, w, heads, host.staging());
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(std::memcmp(host.data(), want.data(), want.size()), 0) << "gather into pinned host staging";
  // Through device scratch of two pieces of two layers each (the copy engine moves them).
  const KvStagingShape shape = KvStagingShape::of(src.layout, heads.count, tokens);
  const std::uint64_t per_layer = shape.kv * tokens * shape.row_bytes();
  DeviceBuffer scratch(0, 4 * per_layer + 512);
  KvHeadCopyOptions through;
  through.device_scratch = KvStaging{scratch.address(), scratch.size(), MemoryKind::kVram, 0};
  std::memset(host.data(), kPoison, host.size);
  s = gather_kv_heads(src.pool, w, heads, host.staging(), through);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(std::memcmp(host.data(), want.data(), want.size()), 0) << "gather through device scratch";

  // Scatter random staging into a poisoned pool, from device and from pinned host memory.
  std::vector<std::uint8_t> staging(bytes);
  tp_testing::fill_random(staging, seed + 2);
  std::vector<std::uint8_t> expect(src.host.size(), kPoison);
  tp_testing::naive_scatter(src.layout, staging.data(), w, heads, expect.data());
  for (int from : {0, 1, 2}) {  // device staging, pinned host, pinned host through device scratch
    std::vector<std::uint8_t> poisoned(src.host.size(), kPoison);
    ASSERT_TRUE(src.memory->upload(poisoned.data()));
    if (from == 0) {
      std::memcpy(poison.data(), staging.data(), bytes);
      ASSERT_TRUE(dev.upload(poison.data()));
      ASSERT_TRUE(
          scatter_kv_heads(KvStaging{dev.address(), dev.size(), MemoryKind::kVram, 0}, src.pool, w, heads)
              .ok());
    } else {
      std::memcpy(host.data(), staging.data(), bytes);
      s = scatter_kv_heads(host.staging(), src.pool, w, heads, from == 2 ? through : KvHeadCopyOptions{});
      ASSERT_TRUE(s.ok()) << s.to_string();
    }
    EXPECT_EQ(src.memory->download(), expect)
        << "scatter " << (from == 0 ? "from device" : "from pinned host")
        << (from == 2 ? " through device scratch" : "");
  }
}

// Host-side arithmetic of the kernels: runs without a GPU.
TEST(GpuHeadCopy, VectorUnitIsTheWidestThatDividesEveryAddressAndStride) {
  detail::HeadCopyPlan p;
  p.row_bytes = 256;
  p.kv_stride = 1u << 20;
  p.block_stride = 4096;
  p.token_stride = 2048;
  p.head_stride = 256;
  std::uint64_t tensors[2] = {1u << 20, 3u << 20};
  EXPECT_EQ(detail::cuda::head_copy_unit(p, tensors, 2, 1u << 12), 16u);
  EXPECT_EQ(detail::cuda::head_copy_unit(p, tensors, 2, (1u << 12) + 8), 8u);
  tensors[1] += 4;
  EXPECT_EQ(detail::cuda::head_copy_unit(p, tensors, 2, 1u << 12), 4u);
  p.row_bytes = p.head_stride = 10;  // head_dim 5, bf16
  EXPECT_EQ(detail::cuda::head_copy_unit(p, tensors, 1, 1u << 12), 2u);
  p.row_bytes = 5;  // fp8
  EXPECT_EQ(detail::cuda::head_copy_unit(p, tensors, 1, 1u << 12), 1u);
}

// Host-side: the launches tile the window exactly, in order, each within the kernel's
// block table and 32-bit vector count. Runs without a GPU.
TEST(GpuHeadCopy, LaunchesTileTheWindowWithinTheirLimits) {
  struct Case {
    std::uint32_t bt;
    std::uint64_t first, tokens, upr;
  };
  for (const Case& c :
       {Case{1, 0, 7000, 16}, Case{1, 3, 20000, 16}, Case{16, 5, 4096, 16}, Case{16, 0, 200000, 16},
        Case{6, 5, 100001, 72}, Case{3, 2, 5, 1u << 20}, Case{1024, 1000, 9000000, 16}}) {
    detail::HeadCopyPlan p;
    p.block_tokens = c.bt;
    p.first_token = c.first;
    p.tokens = c.tokens;
    const std::uint64_t blocks = (c.first + c.tokens + c.bt - 1) / c.bt;
    const auto launches = detail::cuda::head_copy_launches(p, blocks, c.upr);
    ASSERT_FALSE(launches.empty());
    std::uint64_t next = 0;
    for (const auto& l : launches) {
      EXPECT_EQ(l.t_begin, next);
      EXPECT_GT(l.tokens, 0u);
      EXPECT_LE(l.blocks, detail::cuda::kHeadCopyMaxIds);
      EXPECT_LT(l.first_slot, c.bt);
      EXPECT_LE(l.tokens * c.upr, 1ull << 31);
      EXPECT_EQ(l.first_block * c.bt + l.first_slot, c.first + l.t_begin);  // the slot of its first token
      EXPECT_EQ((c.first + l.t_begin + l.tokens - 1) / c.bt,
                l.first_block + l.blocks - 1);  // its last token's block
      next += l.tokens;
    }
    EXPECT_EQ(next, c.tokens);
    EXPECT_TRUE(detail::cuda::head_copy_launches(p, blocks - 1, c.upr).empty());
  }
}

TEST(GpuHeadCopy, EveryArrangementMatchesTheReference) {
  KVF_SKIP_WITHOUT_GPU(1);
  for (KvArrangement a : kv_testing::kAllArrangements)
    for (std::uint32_t bt : {1u, 6u, 16u})
      for (std::uint32_t dim : {5u, 8u, 128u}) {  // 10-byte rows: 2-byte units; 16 and 256: 16-byte units
        const std::uint32_t heads = a == KvArrangement::kMla ? 1 : 4;
        check_both_ways(geometry(heads, bt, dim), a, 64, bt + 3, 41,
                        heads > 1 ? HeadRange{1, 2} : HeadRange{0, 1}, bt * 1000 + dim);
      }
}

TEST(GpuHeadCopy, WindowsLongerThanOneLaunchMatchTheReference) {
  KVF_SKIP_WITHOUT_GPU(1);
  // 7,000 one-token blocks: more block ids than one launch carries.
  check_both_ways(geometry(2, 1, 8, 2), KvArrangement::kSglangTokenSlots, 8192, 3, 7000, {1, 1}, 77);
  check_both_ways(geometry(2, 1, 8, 2), KvArrangement::kVllmNhd, 8192, 0, 6144, {0, 2}, 78);
}

TEST(GpuHeadCopy, ConvertsBetweenArrangementsAndBlockSizesOnTheCallersStream) {
  KVF_SKIP_WITHOUT_GPU(1);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  GpuPool src = GpuPool::make(geometry(8, 16, 128), KvArrangement::kVllmNhd, 96);
  GpuPool dst = GpuPool::make(geometry(4, 32, 128), KvArrangement::kSglangTokenSlots, 64);
  tp_testing::fill_random(src.host, 5);
  src.upload();
  std::vector<std::uint8_t> poisoned(dst.host.size(), kPoison);
  ASSERT_TRUE(dst.memory->upload(poisoned.data()));
  const std::uint64_t tokens = 1000;
  auto sids = tp_testing::scattered_blocks(96, 63, 6);
  auto dids = tp_testing::scattered_blocks(64, 32, 7);
  const std::uint64_t bytes = KvStagingShape::of(src.layout, 4, tokens).bytes();
  DeviceBuffer staging(0, bytes);
  const KvStaging st{staging.address(), bytes, MemoryKind::kVram, 0};
  ASSERT_TRUE(enqueue_gather_kv_heads(src.pool, {sids, 0, tokens}, {4, 4}, st, stream).ok());
  ASSERT_TRUE(enqueue_scatter_kv_heads(st, dst.pool, {dids, 0, tokens}, {0, 4}, stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaStreamDestroy(stream);
  std::vector<std::uint8_t> ref(bytes), want(dst.host.size(), kPoison);
  tp_testing::naive_gather(src.layout, src.host.data(), {sids, 0, tokens}, {4, 4}, ref.data());
  tp_testing::naive_scatter(dst.layout, ref.data(), {dids, 0, tokens}, {0, 4}, want.data());
  EXPECT_EQ(dst.memory->download(), want);
}

TEST(GpuHeadCopy, RefusesPageableHostStaging) {
  KVF_SKIP_WITHOUT_GPU(1);
  GpuPool src = GpuPool::make(geometry(2, 16, 8), KvArrangement::kVllmNhd, 8);
  std::vector<std::uint32_t> ids = {1, 2};
  std::vector<std::uint8_t> pageable(KvStagingShape::of(src.layout, 2, 32).bytes());
  Status s = gather_kv_heads(src.pool, {ids, 0, 32}, {0, 2}, tp_testing::host_staging(pageable));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not pinned host memory"), std::string::npos) << s.message();
}

TEST(GpuHeadCopy, StagingSlotsArePinnedAndServeTheKernels) {
  KVF_SKIP_WITHOUT_GPU(1);
  StagingSlotsOptions o;
  o.slot_bytes = 1u << 20;
  o.slots = 2;
  o.require_pinned = true;
  auto slots = StagingSlots::create(o);
  ASSERT_TRUE(slots.ok()) << slots.status().to_string();
  EXPECT_TRUE((*slots)->pinned());
  o.kind = MemoryKind::kVram;
  auto device_slots = StagingSlots::create(o);
  ASSERT_TRUE(device_slots.ok()) << device_slots.status().to_string();
  GpuPool src = GpuPool::make(geometry(2, 16, 128), KvArrangement::kVllmHnd, 8);
  tp_testing::fill_random(src.host, 9);
  src.upload();
  std::vector<std::uint32_t> ids = {5, 2};
  auto slot = (*slots)->acquire(KvStagingShape::of(src.layout, 2, 32).bytes(), std::chrono::seconds(1));
  ASSERT_TRUE(slot.ok());
  const KvStaging st{slot->address(), slot->size(), MemoryKind::kDram, 0};
  ASSERT_TRUE(gather_kv_heads(src.pool, {ids, 0, 32}, {0, 2}, st).ok());
  std::vector<std::uint8_t> want(KvStagingShape::of(src.layout, 2, 32).bytes());
  tp_testing::naive_gather(src.layout, src.host.data(), {ids, 0, 32}, {0, 2}, want.data());
  EXPECT_EQ(std::memcmp(slot->data(), want.data(), want.size()), 0);
}

}  // namespace
}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
