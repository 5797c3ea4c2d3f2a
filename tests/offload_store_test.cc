// KV offload and onboard (kvferry/kv/offload.h): round trips for every arrangement, with
// unaligned (page cache) and aligned (O_DIRECT) segments, checked byte by byte against
// the naive reference of the KV layer; checksums, incomplete and damaged stores, wrong
// geometry, a writer killed mid-way.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <thread>

#include "file_test_util.h"
#include "kv/kv_test_reference.h"
#include "kvferry/kv/offload.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// A host pool of `blocks` blocks: one allocation, carved into the layout's tensors.
struct HostKvPool {
  HostKvPool(const KvGeometry& g, KvArrangement a, std::uint32_t blocks, std::uint64_t seed)
      : layout(*KvLayout::create(g, a, blocks)),
        memory(layout.pool_bytes()),
        pool(*KvPool::create_contiguous(layout, MemoryKind::kDram, memory.addr())) {
    memory.randomize(seed);
  }
  KvLayout layout;
  Buffer memory;
  KvPool pool;
};

KvGeometry aligned_geometry() {
  KvGeometry g;
  g.layers = 4;
  g.kv_heads = 2;
  g.head_dim = 64;
  g.block_tokens = 16;
  g.dtype = KvDtype::kBf16;  // 4 KiB per K or V segment
  return g;
}

// Block `s` of `a` and block `d` of `b` hold the same elements, layer by layer.
::testing::AssertionResult same_block(const KvPool& a, std::uint32_t s, const KvPool& b, std::uint32_t d) {
  for (std::uint32_t layer = 0; layer < a.layout().geometry().layers; ++layer) {
    const auto from = kv_testing::naive_block_addresses(a, layer, s);
    const auto to = kv_testing::naive_block_addresses(b, layer, d);
    if (from.size() != to.size()) return ::testing::AssertionFailure() << "sizes differ";
    for (std::size_t i = 0; i < from.size(); ++i)
      if (*reinterpret_cast<const std::uint8_t*>(from[i]) != *reinterpret_cast<const std::uint8_t*>(to[i]))
        return ::testing::AssertionFailure()
               << "layer " << layer << " byte " << i << " of block " << s << " -> " << d;
  }
  return ::testing::AssertionSuccess();
}

class OffloadStore : public ::testing::TestWithParam<std::tuple<KvArrangement, bool>> {
 protected:
  void SetUp() override {
    agent_ = make_file_agent("kv");
    ASSERT_TRUE(agent_);
  }
  KvGeometry geometry() const {
    return std::get<1>(GetParam()) ? aligned_geometry() : kv_testing::small_geometry(std::get<0>(GetParam()));
  }
  std::unique_ptr<Agent> agent_;
  ScratchDir dir_;
};

TEST_P(OffloadStore, RoundTripIntoOtherBlocksOfAnotherPool) {
  const KvArrangement a = std::get<0>(GetParam());
  KvGeometry g = geometry();
  if (a == KvArrangement::kMla) g.kv_heads = 1;
  HostKvPool src(g, a, 24, 1), dst(g, a, 40, 2);  // pools of different sizes, same geometry
  KVF_ASSERT_OK(agent_->register_memory(src.pool.tensor_regions()));
  KVF_ASSERT_OK(agent_->register_memory(dst.pool.tensor_regions()));
  const std::vector<std::uint32_t> from = {17, 3, 4, 5, 22, 0, 9};
  auto off = offload_blocks(*agent_, offload_view(src.pool), from, dir_.file("store"));
  ASSERT_TRUE(off.ok()) << off.status().to_string();
  EXPECT_EQ(off->path, "file");
  EXPECT_EQ(off->bytes, from.size() * src.layout.block_bytes_all_layers());
  EXPECT_TRUE(off->store.checksums);
  EXPECT_EQ(off->store.source_blocks, from);

  std::vector<std::uint8_t> before(dst.memory.data(), dst.memory.data() + dst.memory.size());
  const std::vector<std::uint32_t> into = {39, 1, 2, 30, 31, 32, 8};
  auto on = onboard_blocks(*agent_, offload_view(dst.pool), dir_.file("store"), into);
  ASSERT_TRUE(on.ok()) << on.status().to_string();
  EXPECT_TRUE(on->verified);
  for (std::size_t k = 0; k < from.size(); ++k)
    EXPECT_TRUE(same_block(src.pool, from[k], dst.pool, into[k])) << k;
  // Every other block of the destination is untouched.
  std::vector<bool> landed(40, false);
  for (std::uint32_t b : into) landed[b] = true;
  HostKvPool copy(g, a, 40, 2);
  for (std::uint32_t b = 0; b < 40; ++b)
    if (!landed[b]) { EXPECT_TRUE(same_block(copy.pool, b, dst.pool, b)) << "block " << b << " changed"; }

  // A subset, by entry.
  const std::vector<std::uint32_t> entries = {6, 0}, into2 = {11, 12};
  ASSERT_TRUE(onboard_blocks(*agent_, offload_view(dst.pool), dir_.file("store"), into2, entries).ok());
  EXPECT_TRUE(same_block(src.pool, from[6], dst.pool, 11));
  EXPECT_TRUE(same_block(src.pool, from[0], dst.pool, 12));
}

INSTANTIATE_TEST_SUITE_P(EveryArrangement, OffloadStore,
                         ::testing::Combine(::testing::ValuesIn(kv_testing::kAllArrangements),
                                            ::testing::Bool()),
                         [](const auto& p) {
                           std::string name(to_string(std::get<0>(p.param)));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name + (std::get<1>(p.param) ? "_aligned" : "_unaligned");
                         });

class StoreFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_ = make_file_agent("kv");
    ASSERT_TRUE(agent_);
    KVF_ASSERT_OK(agent_->register_memory(src_.pool.tensor_regions()));
    KVF_ASSERT_OK(agent_->register_memory(dst_.pool.tensor_regions()));
    auto off = offload_blocks(*agent_, offload_view(src_.pool), blocks_, store());
    ASSERT_TRUE(off.ok()) << off.status().to_string();
  }
  std::string store() const { return dir_.file("store"); }
  Status onboard(const KvStoreOptions& o = {}) {
    return onboard_blocks(*agent_, offload_view(dst_.pool), store(), blocks_, {}, o).status();
  }
  ScratchDir dir_;
  HostKvPool src_{aligned_geometry(), KvArrangement::kVllmNhd, 16, 5};
  HostKvPool dst_{aligned_geometry(), KvArrangement::kVllmNhd, 16, 6};
  std::vector<std::uint32_t> blocks_ = {1, 2, 3, 10};
  std::unique_ptr<Agent> agent_;
};

void flip_byte(const std::string& path, std::uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

TEST_F(StoreFaults, AFlippedByteFailsTheChecksum) {
  flip_byte(store() + "/kvstore.data", 3 * src_.layout.block_bytes_all_layers() + 77);  // entry 3
  Status s = onboard();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_NE(s.message().find("entry 3 onboarded into block 10"), std::string::npos) << s.to_string();
  KvStoreOptions no_verify;
  no_verify.verify = false;
  Status unverified = onboard(no_verify);
  EXPECT_TRUE(unverified.ok()) << unverified.to_string();
}

TEST_F(StoreFaults, WrongGeometryIsRefused) {
  KvGeometry g = aligned_geometry();
  g.head_dim = 128;
  HostKvPool other(g, KvArrangement::kVllmNhd, 16, 7);
  KVF_ASSERT_OK(agent_->register_memory(other.pool.tensor_regions()));
  auto r = onboard_blocks(*agent_, offload_view(other.pool), store(), blocks_);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("head_dim=64"), std::string::npos) << r.status().to_string();
  HostKvPool hnd(aligned_geometry(), KvArrangement::kVllmHnd, 16, 7);  // same sizes, other arrangement
  KVF_ASSERT_OK(agent_->register_memory(hnd.pool.tensor_regions()));
  EXPECT_EQ(onboard_blocks(*agent_, offload_view(hnd.pool), store(), blocks_).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StoreFaults, TruncatedDataAndDamagedIndexAreCorrupt) {
  ASSERT_EQ(::truncate((store() + "/kvstore.data").c_str(), 4096), 0);
  Status s = onboard();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.to_string();
  flip_byte(store() + "/kvstore.index", 20);
  s = inspect_store(store()).status();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
}

TEST_F(StoreFaults, DataWithoutIndexIsIncompleteAndAFailedOverwriteLeavesItIncomplete) {
  auto info = inspect_store(store());
  ASSERT_TRUE(info.ok());
  // Overwrite without permission: refused, the store stays valid.
  EXPECT_EQ(offload_blocks(*agent_, offload_view(src_.pool), blocks_, store()).status().code(),
            StatusCode::kAlreadyExists);
  KVF_ASSERT_OK(onboard());
  // An overwrite that fails half-way (a block the pool does not have) leaves no valid store.
  KvStoreOptions overwrite;
  overwrite.overwrite = true;
  const std::vector<std::uint32_t> bad = {1, 99};
  EXPECT_EQ(offload_blocks(*agent_, offload_view(src_.pool), bad, store(), overwrite).status().code(),
            StatusCode::kOutOfRange);
  Status s = onboard();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.message().find("incomplete store"), std::string::npos) << s.to_string();
  // A good overwrite makes it valid again; an empty directory is no store at all.
  ASSERT_TRUE(offload_blocks(*agent_, offload_view(src_.pool), blocks_, store(), overwrite).ok());
  KVF_ASSERT_OK(onboard());
  EXPECT_EQ(inspect_store(dir_.path()).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreFaults, MisuseIsRefused) {
  const std::vector<std::uint32_t> three = {0, 1, 2};
  EXPECT_EQ(onboard_blocks(*agent_, offload_view(dst_.pool), store(), three).status().code(),
            StatusCode::kInvalidArgument);  // 4 entries, 3 blocks
  const std::vector<std::uint32_t> twice = {0, 0, 1, 2};
  EXPECT_EQ(onboard_blocks(*agent_, offload_view(dst_.pool), store(), twice).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<std::uint32_t> entry = {7}, one = {0};
  EXPECT_EQ(onboard_blocks(*agent_, offload_view(dst_.pool), store(), one, entry).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(offload_blocks(*agent_, offload_view(src_.pool), {}, dir_.file("x")).status().code(),
            StatusCode::kInvalidArgument);
}

// A writer killed at a random moment leaves either no store, an incomplete one, or (had
// it finished) a complete one whose every block passes its checksum: never a store that
// reads as valid with wrong bytes.
TEST(StoreCrash, AKilledWriterNeverLeavesAValidLookingStore) {
  ScratchDir dir;
  for (int delay_us : {0, 1000, 3000, 10000, 200000}) {
    const std::string path = dir.file("store" + std::to_string(delay_us));
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // a fresh process image in all but name: only this thread exists
      auto agent = make_file_agent("writer");
      HostKvPool src(aligned_geometry(), KvArrangement::kFlashInfer, 1024, 9);
      if (!agent || !agent->register_memory(src.pool.tensor_regions()).ok()) _exit(2);
      std::vector<std::uint32_t> all(1024);
      std::iota(all.begin(), all.end(), 0u);
      if (::write(ready[1], "r", 1) != 1) _exit(3);
      _exit(offload_blocks(*agent, offload_view(src.pool), all, path).ok() ? 0 : 1);
    }
    ::close(ready[1]);
    char byte = 0;
    ASSERT_EQ(::read(ready[0], &byte, 1), 1);  // the writer starts now
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    auto info = inspect_store(path);
    if (!info.ok()) {
      EXPECT_TRUE(info.status().code() == StatusCode::kNotFound ||
                  info.status().code() == StatusCode::kFailedPrecondition)
          << info.status().to_string();
      continue;
    }
    auto agent = make_file_agent("reader");
    HostKvPool dst(aligned_geometry(), KvArrangement::kFlashInfer, 1024, 10);
    KVF_ASSERT_OK(agent->register_memory(dst.pool.tensor_regions()));
    std::vector<std::uint32_t> all(1024);
    std::iota(all.begin(), all.end(), 0u);
    auto on = onboard_blocks(*agent, offload_view(dst.pool), path, all);
    ASSERT_TRUE(on.ok()) << "delay " << delay_us << ": " << on.status().to_string();
    EXPECT_TRUE(on->verified);
  }
}

}  // namespace
}  // namespace kvferry::testing
