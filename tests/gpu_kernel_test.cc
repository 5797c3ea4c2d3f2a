// The copy kernel (src/cuda/copy_kernels.h) against a CPU reference on fresh random
// data: gather (scattered blocks -> one contiguous staging area), scatter (the reverse),
// odd lengths and alignments, items longer than the kernel's split size. And the vram
// registration checks. Skips where no GPU is present.
#ifdef KVFERRY_HAVE_CUDA
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "cuda/copy_kernels.h"
#include "gpu_test_util.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using detail::cuda::CopyItem;

struct Case {
  std::uint64_t src_off, dst_off, length;
};

// Runs `cases` as one kernel launch from `src` to `dst` (device), and the same copies on
// the host; the destination, poisoned first, must match byte for byte.
void check_against_cpu(const std::vector<Case>& cases, std::size_t size, std::uint64_t seed) {
  DeviceBuffer src(0, size), dst(0, size);
  ASSERT_TRUE(src.ok() && dst.ok());
  Buffer host_src(size), expect(size, 0xA5);
  host_src.randomize(seed);
  ASSERT_TRUE(src.upload(host_src.data()));
  ASSERT_TRUE(dst.upload(expect.data()));  // poison
  std::vector<CopyItem> items;
  for (const Case& c : cases) {
    detail::cuda::append_items(&items, src.address() + c.src_off, dst.address() + c.dst_off, c.length);
    std::memcpy(expect.data() + c.dst_off, host_src.data() + c.src_off, c.length);
  }
  ASSERT_EQ(detail::cuda::copy_items_sync(0, items), "");
  auto got = dst.download();
  ASSERT_EQ(got.size(), size);
  EXPECT_EQ(std::memcmp(got.data(), expect.data(), size), 0);
}

TEST(GpuKernels, GatherOfScatteredBlocksMatchesCpu) {
  KVF_SKIP_WITHOUT_GPU(1);
  constexpr std::uint64_t kBlock = 64u << 10, kBlocks = 512;
  std::vector<std::uint32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 rng(std::random_device{}());
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<Case> cases;
  for (std::uint32_t i = 0; i < kBlocks / 2; ++i) cases.push_back({ids[i] * kBlock, i * kBlock, kBlock});
  check_against_cpu(cases, kBlocks * kBlock, rng());
}

TEST(GpuKernels, ScatterToScatteredBlocksMatchesCpu) {
  KVF_SKIP_WITHOUT_GPU(1);
  constexpr std::uint64_t kBlock = 16u << 10, kBlocks = 1024;
  std::vector<std::uint32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 rng(std::random_device{}());
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<Case> cases;
  for (std::uint32_t i = 0; i < kBlocks / 2; ++i) cases.push_back({i * kBlock, ids[i] * kBlock, kBlock});
  check_against_cpu(cases, kBlocks * kBlock, rng());
}

TEST(GpuKernels, OddLengthsAlignmentsAndLongItemsMatchCpu) {
  KVF_SKIP_WITHOUT_GPU(1);
  constexpr std::size_t kSize = 8u << 20;
  std::mt19937_64 rng(std::random_device{}());
  std::vector<Case> cases = {{1, 3, 1}, {17, 4096 + 5, 12345}, {0, 1u << 20, (3u << 20) + 7}};  // > kMaxItemBytes
  // Random non-overlapping destinations in the last 4 MiB, random sources anywhere.
  for (std::uint64_t d = (4u << 20) + 4096; d + 70000 < kSize;) {  // past the long item's end
    const std::uint64_t len = 1 + rng() % 65536;
    cases.push_back({rng() % (kSize - len), d, len});
    d += len + rng() % 64;
  }
  check_against_cpu(cases, kSize, rng());
}

TEST(GpuVram, RegistrationChecksKindAndDevice) {
  KVF_SKIP_WITHOUT_GPU(1);
  auto a = make_cuda_ipc_agent("reg", "kernel");
  ASSERT_TRUE(a);
  DeviceBuffer dev(0, 1u << 20);
  ASSERT_TRUE(dev.ok());
  KVF_ASSERT_OK(a->register_memory(dev.region()));
  KVF_ASSERT_OK(a->deregister_memory(dev.region()));
  // Host memory registered as vram.
  Buffer host(1u << 20);
  Status s = a->register_memory(DescriptorList(MemoryKind::kVram, {make_descriptor(host.data(), host.size(), 0)}));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  // The wrong device.
  s = a->register_memory(DescriptorList(MemoryKind::kVram, {Descriptor{dev.address(), dev.size(), 1}}));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("GPU"), std::string::npos) << s.to_string();
  // A region running past its allocation.
  s = a->register_memory(DescriptorList(MemoryKind::kVram, {Descriptor{dev.address() + 4096, dev.size(), 0}}));
  EXPECT_FALSE(s.ok()) << "a region past the end of its allocation was accepted";
}

}  // namespace
}  // namespace kvferry::testing
#endif  // KVFERRY_HAVE_CUDA
