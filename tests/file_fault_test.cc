// Faults of the file backend: a file truncated or removed underneath, a full disk (a
// small tmpfs when this process may mount one, else RLIMIT_FSIZE), a disk too small for
// a reservation. Each must fail the transfer with a message naming file and offset.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "file_test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

Status write_then_wait(Agent& agent, const DescriptorList& mem, const DescriptorList& file, TransferOp op) {
  auto t = agent.create_transfer(op, mem, agent.name(), file);
  if (!t.ok()) return t.status();
  KVF_RETURN_IF_ERROR(t->post());
  return t->wait(20s);
}

class FileFaults : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    agent_ = make_file_agent("solo", {{"file.io_uring", GetParam() == "io_uring" ? "on" : "off"}});
    ASSERT_TRUE(agent_);
    KVF_ASSERT_OK(agent_->register_memory(mem_.whole()));
  }
  static constexpr std::size_t kSize = 4u << 20;
  ScratchDir dir_;
  Buffer mem_{kSize};
  std::unique_ptr<Agent> agent_;
};

TEST_P(FileFaults, ReadPastATruncatedFileIsAShortReadError) {
  FileOpenOptions o;
  o.create = true;
  o.capacity = kSize;
  auto f = agent_->register_file(dir_.file("data"), o);
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(::truncate(f->path.c_str(), 1 << 20), 0);  // someone shrinks it underneath
  Status s = write_then_wait(*agent_, mem_.whole(), f->region(), TransferOp::kRead);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
  EXPECT_NE(s.message().find("short read"), std::string::npos) << s.to_string();
  EXPECT_NE(s.message().find(f->path), std::string::npos) << s.to_string();
}

TEST_P(FileFaults, AFileRemovedUnderneathIsAnError) {
  FileOpenOptions o;
  o.create = true;
  o.capacity = kSize;
  auto f = agent_->register_file(dir_.file("data"), o);
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(::unlink(f->path.c_str()), 0);
  for (TransferOp op : {TransferOp::kWrite, TransferOp::kRead}) {
    Status s = write_then_wait(*agent_, mem_.whole(), f->region(), op);
    EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
    EXPECT_NE(s.message().find("was removed"), std::string::npos) << s.to_string();
  }
}

TEST_P(FileFaults, FileSizeLimitFailsTheWriteWithEfbig) {
  FileOpenOptions o;
  o.create = true;
  o.capacity = kSize;
  o.preallocate = false;
  auto f = agent_->register_file(dir_.file("data"), o);
  ASSERT_TRUE(f.ok());
  // A size limit of 1 MiB for this process (ctest runs each test in its own process).
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  Status s = write_then_wait(*agent_, mem_.whole(), f->region(), TransferOp::kWrite);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
  EXPECT_NE(s.message().find("file size limit exceeded writing '" + f->path + "' at offset 1048576"),
            std::string::npos)
      << s.to_string();
}

// A 2 MiB tmpfs: the first 2 MiB of a 4 MiB write land, the rest is ENOSPC.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(const std::string& dir) : dir_(dir) {
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=2m") == 0;
    if (!mounted_) why_ = std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

TEST_P(FileFaults, DiskFullIsENOSPCNamingFileAndOffset) {
  const std::string mnt = dir_.file("mnt");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  SmallTmpfs tmpfs(mnt);
  if (!tmpfs.mounted())
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << tmpfs.why()
                 << "); FileSizeLimitFailsTheWriteWithEfbig covers the write path";
  {
    FileOpenOptions o;
    o.create = true;
    o.capacity = kSize;
    o.preallocate = false;  // sparse: the disk fills during the transfer
    auto f = agent_->register_file(mnt + "/data", o);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    Status s = write_then_wait(*agent_, mem_.whole(), f->region(), TransferOp::kWrite);
    EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
    EXPECT_NE(s.message().find("no space left on device writing '" + f->path + "' at offset"),
              std::string::npos)
        << s.to_string();
    KVF_ASSERT_OK(agent_->deregister_file(f->id));
  }
  // A reservation larger than the disk fails at registration, before any transfer.
  FileOpenOptions big;
  big.create = true;
  big.capacity = 64u << 20;
  auto r = agent_->register_file(mnt + "/big", big);
  EXPECT_EQ(r.status().code(), StatusCode::kIoError) << r.status().to_string();
  EXPECT_NE(r.status().message().find("no space"), std::string::npos) << r.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(Engines, FileFaults, ::testing::Values("io_uring", "sync"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace kvferry::testing
