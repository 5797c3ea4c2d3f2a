// Listening ports under abuse, with real sockets: idle and trickling connections to the
// side channel do not lock real clients out and are closed within the idle bound (bytes
// alone do not keep them); silent connections to the tcp data port are bounded, and a
// peer out of descriptors neither spins nor stops serving.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Connects to 127.0.0.1:port without waiting for the server to accept (non-blocking).
int open_silent(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Sockets {
  std::vector<int> fds;
  ~Sockets() {
    for (int fd : fds) ::close(fd);
  }
};

// True once the server closed it (EOF or reset); never blocks.
bool closed_by_server(int fd) {
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
}

// CPU seconds (user + system) a process has used so far.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// 40 connections hold the side channel, each trickling one byte of a frame that never
// completes every 100 ms: fetch_remote still works, and every one of them is closed
// within the idle bound although bytes keep coming.
TEST(ConnectionLimits, TricklingSideChannelConnectionsDoNotLockOutClients) {
  constexpr auto kIdle = 1000ms;
  auto target = make_agent("target", "tcp", kIdle);
  auto client = make_agent("client", "tcp");
  ASSERT_TRUE(target && client);
  auto port = target->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  Sockets held;
  for (int i = 0; i < 40; ++i) {
    int fd = open_silent(*port);
    ASSERT_GE(fd, 0);
    held.fds.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    // "KVFS", type kFetch, a 1 MiB payload: the frame never completes.
    const std::uint8_t header[12] = {'K', 'V', 'F', 'S', 1, 0, 0, 0, 0, 0, 0x10, 0};
    for (std::size_t k = 0; !stop && k < 60; ++k) {
      for (int fd : held.fds) {
        const std::uint8_t b = k < sizeof header ? header[k] : 0;
        [[maybe_unused]] ssize_t rc = ::send(fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  std::this_thread::sleep_for(300ms);  // every slot is taken and trickling
  const auto t0 = Clock::now();
  auto fetched = client->fetch_remote("127.0.0.1", *port, true, 2s);
  EXPECT_TRUE(fetched.ok()) << "fetch_remote while 40 connections trickle: " << fetched.status().to_string();
  EXPECT_LT(Clock::now() - t0, 1s);
  std::this_thread::sleep_for(kIdle + 1500ms);  // the bound, and a round of the server
  int closed = 0;
  for (int fd : held.fds) closed += closed_by_server(fd);
  stop = true;
  trickle.join();
  EXPECT_EQ(closed, 40) << "trickling connections kept past the idle bound";
}

// 400 silent connections to the tcp data port: the peer keeps a bounded number of them
// open, closes them after its peer timeout, and still serves a real initiator.
TEST(ConnectionLimits, SilentDataPortConnectionsAreBounded) {
  constexpr std::uint64_t kSize = 1u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 31, .peer_timeout = 2000ms}, &error);
  ASSERT_TRUE(peer) << error;
  ASSERT_NE(peer->data_port(), 0);
  const std::size_t baseline = open_fds(peer->pid());
  Sockets silent;
  for (int i = 0; i < 400; ++i) {
    int fd = open_silent(peer->data_port());
    if (fd >= 0) silent.fds.push_back(fd);
  }
  std::this_thread::sleep_for(500ms);
  const std::size_t held = open_fds(peer->pid());
  EXPECT_LE(held, baseline + 256 + 8) << "the peer holds " << held - baseline << " silent connections";

  auto a = make_agent("initiator", "tcp");
  ASSERT_TRUE(a);
  Buffer local(kSize);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer",
                              DescriptorList(MemoryKind::kDram, {Descriptor{peer->address(), kSize, 0}}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  Buffer expected(kSize);
  expected.randomize(31);
  EXPECT_EQ(std::memcmp(local.data(), expected.data(), kSize), 0);
}

// A peer whose descriptor table is small runs out of it under 300 silent connections:
// it does not spin on its readable listener, and a real initiator still gets through.
TEST(ConnectionLimits, OutOfDescriptorsNeitherSpinsNorStopsServing) {
  constexpr std::uint64_t kSize = 1u << 20;
  std::string error;
  auto peer = PeerProcess::spawn({.name = "peer", .size = kSize, .seed = 32, .peer_timeout = 3000ms, .max_fds = 64},
                                 &error);
  ASSERT_TRUE(peer) << error;
  ASSERT_NE(peer->data_port(), 0);
  Sockets silent;
  for (int i = 0; i < 300; ++i) {
    int fd = open_silent(peer->data_port());
    if (fd >= 0) silent.fds.push_back(fd);
  }
  std::this_thread::sleep_for(300ms);
  const double cpu0 = cpu_seconds(peer->pid());
  std::this_thread::sleep_for(1500ms);
  const double used = cpu_seconds(peer->pid()) - cpu0;
  EXPECT_LT(used, 0.1) << "the peer used " << used << " s of CPU in 1.5 s while out of descriptors";

  auto a = make_agent("initiator", "tcp");
  ASSERT_TRUE(a);
  Buffer local(kSize);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer",
                              DescriptorList(MemoryKind::kDram, {Descriptor{peer->address(), kSize, 0}}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  Status s = r->post();
  if (s.ok()) s = r->wait(10s);
  EXPECT_TRUE(s.ok()) << "a real initiator was locked out: " << s.to_string();
}

}  // namespace
}  // namespace kvferry::testing
