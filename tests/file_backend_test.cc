// The file backend against the conformance checks that apply to a local backend: round
// trips with random data into poisoned destinations, index transfers with merging,
// unaligned pieces, notifications to the agent's own inbox, reposting, cancel and
// destroy in flight, misuse. Run with io_uring and with the preadv/pwritev fallback.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "file_test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

class FileBackend : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    agent_ = make_file_agent("solo", {{"file.io_uring", GetParam() == "io_uring" ? "on" : "off"},
                                      {"file.queue_depth", "8"},
                                      {"file.max_io", "262144"}});
    ASSERT_TRUE(agent_);
    KVF_ASSERT_OK(agent_->register_memory(mem_.whole()));
    FileOpenOptions o;
    o.create = o.truncate = true;
    o.capacity = kSize;
    auto f = agent_->register_file(dir_.file("data"), o);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    file_ = *f;
  }

  Status run(TransferOp op, const DescriptorList& mem, const DescriptorList& file, TransferOptions o = {}) {
    auto t = agent_->create_transfer(op, mem, "solo", file, std::move(o));
    if (!t.ok()) return t.status();
    KVF_RETURN_IF_ERROR(t->post());
    return t->wait(20s);
  }

  static constexpr std::size_t kSize = 8u << 20;
  ScratchDir dir_;
  Buffer mem_{kSize};
  std::unique_ptr<Agent> agent_;
  FileRegistration file_;
};

TEST_P(FileBackend, WriteThenReadBackMatches) {
  EXPECT_EQ(file_.length, kSize);
  mem_.randomize(1);
  auto w = agent_->create_transfer(TransferOp::kWrite, mem_.whole(), "solo", file_.region());
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->telemetry().backend, "file");
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(20s));
  auto disk = read_whole_file(file_.path);
  ASSERT_EQ(disk.size(), kSize);
  EXPECT_EQ(std::memcmp(disk.data(), mem_.data(), kSize), 0);

  std::vector<std::uint8_t> copy(mem_.data(), mem_.data() + kSize);
  std::memset(mem_.data(), 0xAB, kSize);
  KVF_ASSERT_OK(run(TransferOp::kRead, mem_.whole(), file_.region()));
  EXPECT_EQ(std::memcmp(copy.data(), mem_.data(), kSize), 0);
}

TEST_P(FileBackend, IndexTransferMergesContiguousRunsAndMovesTheRightBlocks) {
  constexpr std::size_t kBlock = 64 * 1024, kBlocks = kSize / kBlock;
  DescriptorList m(MemoryKind::kDram), f(MemoryKind::kFile);
  for (std::size_t i = 0; i < kBlocks; ++i) {
    m.add(mem_.addr(i * kBlock), kBlock);
    f.add(file_.at(i * kBlock, kBlock));
  }
  auto mp = agent_->prepare_local(m);
  auto fp = agent_->prepare_remote("solo", f);
  ASSERT_TRUE(mp.ok() && fp.ok()) << fp.status().to_string();
  // Scattered memory blocks into consecutive file blocks (offload), plus a run that merges.
  std::vector<std::uint32_t> mi = {90, 17, 3, 4, 5, 64}, fi = {0, 1, 2, 3, 4, 100};
  mem_.randomize(2);
  auto w = agent_->create_transfer(TransferOp::kWrite, *mp, mi, *fp, fi);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->telemetry().descriptors_merged, 4u);  // 3,4,5 -> 2,3,4 merge
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(20s));
  auto disk = read_whole_file(file_.path);
  for (std::size_t k = 0; k < mi.size(); ++k)
    ASSERT_EQ(std::memcmp(disk.data() + fi[k] * kBlock, mem_.data() + mi[k] * kBlock, kBlock), 0) << k;

  // Onboard them into other memory blocks of a poisoned pool.
  std::vector<std::uint8_t> before(mem_.data(), mem_.data() + kSize);
  std::memset(mem_.data(), 0xAB, kSize);
  std::vector<std::uint32_t> to = {10, 11, 12, 13, 14, 50};
  auto r = agent_->create_transfer(TransferOp::kRead, *mp, to, *fp, fi);
  ASSERT_TRUE(r.ok());
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  for (std::size_t k = 0; k < to.size(); ++k)
    ASSERT_EQ(std::memcmp(mem_.data() + to[k] * kBlock, before.data() + mi[k] * kBlock, kBlock), 0) << k;
  EXPECT_EQ(mem_.data()[0], 0xAB);  // untouched memory stays untouched
}

TEST_P(FileBackend, UnalignedPiecesGoThroughThePageCacheAndStayExact) {
  // Odd memory addresses, odd file offsets, odd lengths, and pieces that straddle.
  const std::uint64_t lens[] = {1, 4095, 4096, 4097, 65536 + 100, 3, 1 << 20};
  DescriptorList m(MemoryKind::kDram), f(MemoryKind::kFile);
  std::uint64_t moff = 3, foff = 4096 * 5 + 7;
  for (std::uint64_t len : lens) {
    m.add(mem_.addr(moff), len);
    f.add(file_.at(foff, len));
    moff += len + 5;
    foff += len;  // contiguous in the file: gathered into one op where allowed
  }
  m.add(mem_.addr(2 << 20), 8192);  // and one aligned piece
  f.add(file_.at(4 << 20, 8192));
  mem_.randomize(3);
  KVF_ASSERT_OK(run(TransferOp::kWrite, m, f));
  auto disk = read_whole_file(file_.path);
  for (std::size_t i = 0; i < m.size(); ++i)
    ASSERT_EQ(std::memcmp(disk.data() + f[i].address, reinterpret_cast<void*>(m[i].address), m[i].length), 0)
        << i;
  std::vector<std::uint8_t> before(mem_.data(), mem_.data() + kSize);
  std::memset(mem_.data(), 0xAB, kSize);
  KVF_ASSERT_OK(run(TransferOp::kRead, m, f));
  for (std::size_t i = 0; i < m.size(); ++i) {
    const auto off = m[i].address - mem_.addr();
    ASSERT_EQ(std::memcmp(mem_.data() + off, before.data() + off, m[i].length), 0) << i;
  }
  EXPECT_EQ(mem_.data()[0], 0xAB);
}

TEST_P(FileBackend, TwoFilesInOneTransfer) {
  FileOpenOptions o;
  o.create = true;
  o.capacity = 1 << 20;
  auto second = agent_->register_file(dir_.file("second"), o);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  EXPECT_NE(second->id, file_.id);
  DescriptorList m(MemoryKind::kDram,
                   {Descriptor{mem_.addr(0), 1 << 20, 0}, Descriptor{mem_.addr(1 << 20), 1 << 20, 0}});
  DescriptorList f(MemoryKind::kFile, {file_.at(0, 1 << 20), second->at(0, 1 << 20)});
  mem_.randomize(4);
  KVF_ASSERT_OK(run(TransferOp::kWrite, m, f));
  EXPECT_EQ(std::memcmp(read_whole_file(second->path).data(), mem_.data() + (1 << 20), 1 << 20), 0);
  EXPECT_EQ(std::memcmp(read_whole_file(file_.path).data(), mem_.data(), 1 << 20), 0);
  KVF_ASSERT_OK(agent_->deregister_file(second->id));
  EXPECT_EQ(agent_->deregister_file(second->id).code(), StatusCode::kNotFound);
}

TEST_P(FileBackend, NotificationReachesTheOwnInboxAfterTheBytes) {
  mem_.randomize(5);
  TransferOptions o;
  o.notification = "offloaded:7";
  auto w = agent_->create_transfer(TransferOp::kWrite, mem_.whole(), "solo", file_.region(), o);
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  ASSERT_TRUE(agent_->wait_for_notifications(20s));
  EXPECT_EQ(std::memcmp(read_whole_file(file_.path).data(), mem_.data(), kSize), 0);
  auto n = agent_->take_notifications();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].from, "solo");
  EXPECT_EQ(n[0].message, "offloaded:7");
  KVF_ASSERT_OK(w->wait(20s));
}

TEST_P(FileBackend, FinishedRequestCanBePostedAgain) {
  auto w = agent_->create_transfer(TransferOp::kWrite, mem_.whole(), "solo", file_.region());
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 3; ++i) {
    mem_.randomize(10 + i);
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(20s));
    ASSERT_EQ(std::memcmp(read_whole_file(file_.path).data(), mem_.data(), kSize), 0) << i;
  }
  EXPECT_EQ(w->telemetry().posts, 3u);
}

TEST_P(FileBackend, CancelAndDestroyInFlightAreSafe) {
  for (int i = 0; i < 10; ++i) {
    auto w = agent_->create_transfer(i % 4 < 2 ? TransferOp::kWrite : TransferOp::kRead, mem_.whole(), "solo",
                                     file_.region());
    ASSERT_TRUE(w.ok());
    KVF_ASSERT_OK(w->post());
    if (i % 2 == 0) {
      w->cancel();
      EXPECT_NE(w->state(), TransferState::kInProgress);
    }
  }
  KVF_ASSERT_OK(run(TransferOp::kRead, mem_.whole(), file_.region()));  // still works
  KVF_ASSERT_OK(agent_->deregister_memory(mem_.whole()));               // nothing pins it
  KVF_ASSERT_OK(agent_->deregister_file(file_.id));
}

TEST_P(FileBackend, DeregisterWhileAPostedTransferUsesTheFileIsRefused) {
  auto w = agent_->create_transfer(TransferOp::kWrite, mem_.whole(), "solo", file_.region());
  ASSERT_TRUE(w.ok());
  KVF_ASSERT_OK(w->post());
  Status s = agent_->deregister_file(file_.id);
  if (!s.ok()) { EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string(); }
  KVF_ASSERT_OK(w->wait(20s));
  if (!s.ok()) KVF_ASSERT_OK(agent_->deregister_file(file_.id));
  EXPECT_EQ(w->post().code(), StatusCode::kFailedPrecondition);  // its file is gone
}

TEST_P(FileBackend, ManyConcurrentRequestsFromSeveralThreads) {
  constexpr int kThreads = 4, kPerThread = 10;
  constexpr std::size_t kSlice = kSize / kThreads;
  mem_.randomize(77);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      DescriptorList m(MemoryKind::kDram, {Descriptor{mem_.addr(t * kSlice), kSlice, 0}});
      DescriptorList f(MemoryKind::kFile, {file_.at(t * kSlice, kSlice)});
      for (int i = 0; i < kPerThread; ++i)
        if (!run(i % 2 ? TransferOp::kRead : TransferOp::kWrite, m, f).ok()) failures++;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(std::memcmp(read_whole_file(file_.path).data(), mem_.data(), kSize), 0);
}

TEST_P(FileBackend, MisuseIsRefusedWithAClearError) {
  EXPECT_EQ(agent_->register_memory(file_.region()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(agent_->deregister_memory(file_.region()).code(), StatusCode::kInvalidArgument);
  // Beyond the file's region.
  DescriptorList m(MemoryKind::kDram, {Descriptor{mem_.addr(), 4096, 0}});
  DescriptorList past(MemoryKind::kFile, {file_.at(kSize - 100, 4096)});
  auto t = agent_->create_transfer(TransferOp::kWrite, m, "solo", past);
  EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange) << t.status().to_string();
  DescriptorList unknown(MemoryKind::kFile, {Descriptor{0, 4096, file_.id + 100}});
  EXPECT_EQ(agent_->create_transfer(TransferOp::kWrite, m, "solo", unknown).status().code(),
            StatusCode::kOutOfRange);
  // dram <-> dram is not the file backend's business.
  TransferOptions forced;
  forced.backend = "file";
  Buffer other(4096);
  KVF_ASSERT_OK(agent_->register_memory(other.whole()));
  t = agent_->create_transfer(TransferOp::kWrite, m, "solo", other.whole(), forced);
  EXPECT_EQ(t.status().code(), StatusCode::kUnavailable) << t.status().to_string();
  // Opening.
  EXPECT_EQ(agent_->register_file(dir_.file("missing")).status().code(), StatusCode::kNotFound);
  FileOpenOptions create;
  create.create = true;
  auto empty = agent_->register_file(dir_.file("empty"), create);
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument) << empty.status().to_string();
  EXPECT_EQ(agent_->register_file(dir_.path(), {}).status().code(), StatusCode::kIoError);  // a directory
  // A read-only file cannot be written.
  FileOpenOptions ro;
  ro.read_only = true;
  auto readonly = agent_->register_file(file_.path, ro);
  ASSERT_TRUE(readonly.ok()) << readonly.status().to_string();
  DescriptorList rof(MemoryKind::kFile, {readonly->at(0, 4096)});
  Status s = run(TransferOp::kWrite, m, rof);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("read-only"), std::string::npos) << s.to_string();
  KVF_ASSERT_OK(run(TransferOp::kRead, m, rof));
}

TEST_P(FileBackend, QueryFileAndRegisterADescriptor) {
  auto info = query_file(file_.path);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->exists && info->regular);
  EXPECT_EQ(info->size, kSize);
  auto none = query_file(dir_.file("nope"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->exists);

  int fd = ::open(file_.path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto viafd = agent_->register_file_descriptor(fd);
  ASSERT_TRUE(viafd.ok()) << viafd.status().to_string();
  EXPECT_EQ(viafd->length, kSize);
  EXPECT_EQ(viafd->path, file_.path);
  mem_.randomize(6);
  KVF_ASSERT_OK(run(TransferOp::kWrite, mem_.whole(), viafd->region()));
  KVF_ASSERT_OK(agent_->deregister_file(viafd->id));
  EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);  // the caller's descriptor is still open
  ::close(fd);
  EXPECT_EQ(std::memcmp(read_whole_file(file_.path).data(), mem_.data(), kSize), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, FileBackend, ::testing::Values("io_uring", "sync"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace kvferry::testing
