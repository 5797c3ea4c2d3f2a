// Pushed metadata that names a loaded peer under another instance makes the agent ask
// the old instance's side channel whether it is still there. That probe runs on the
// agent's reactor without holding it: a flood of such pushes does not stall transfers,
// pushes about one instance share one probe, probes in flight are capped, and the
// identity rules hold as before (an impostor is refused, an honest restart is accepted).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "core/metadata.h"
#include "core/side_channel.h"
#include "core/socket_util.h"
#include "kvferry/metrics.h"
#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// Metadata of an agent nobody runs: `name` on another host, reached (if at all) through
// a side channel on 127.0.0.1:`side_port`.
std::vector<std::uint8_t> phantom(const std::string& name, std::uint16_t side_port) {
  detail::AgentMetadata md;
  md.name = name;
  md.instance = detail::random_instance_id();
  md.host_id = "phantom-host";
  md.process_id = "phantom-host:1";
  md.side_channel = detail::SideChannelAddress{"127.0.0.1", side_port};
  return detail::encode_metadata(md);
}

// Pushes `md` to the side channel on 127.0.0.1:port, waiting `limit` for the answer.
Result<std::vector<std::uint8_t>> push(std::uint16_t port, const std::vector<std::uint8_t>& md,
                                       std::chrono::milliseconds limit) {
  return detail::side_channel_call("127.0.0.1", port, detail::SideFrame::kFetch, md, detail::SideFrame::kMetadata,
                                   detail::deadline_after(limit));
}

// A figure of the agent's own metrics (-1: absent).
double metric(const Agent& a, const std::string& name) {
  auto samples = parse_metrics_text(a.metrics_text());
  EXPECT_TRUE(samples.ok()) << samples.status().to_string();
  if (samples.ok())
    for (const auto& s : *samples)
      if (s.name == name) return s.value;
  return -1;
}

// A listener that accepts and never answers; counts the connections it was given.
class Blackhole {
 public:
  Blackhole() {
    auto l = detail::tcp_listen("127.0.0.1", 0);
    EXPECT_TRUE(l.ok());
    listener_ = std::move(l).value();
    port_ = *detail::local_port(listener_.get());
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{listener_.get(), POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) continue;
        int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        held_.emplace_back(fd);
        ++accepted_;
      }
    });
  }
  ~Blackhole() {
    stop_ = true;
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  detail::UniqueFd listener_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<detail::UniqueFd> held_;
  std::thread thread_;
};

// The attacker, a process of its own (forked before any agent exists): reads the target's
// side-channel port from `control`, loads a phantom "q" there whose side channel never
// answers, then pushes other instances of "q" and of the live peer "p" every 2 ms (not
// waiting for answers) until `control` closes; writes its push count to `report`.
[[noreturn]] void attacker(int control, int report) {
  std::uint16_t port = 0;
  if (::read(control, &port, sizeof port) != sizeof port) ::_exit(2);
  Blackhole hole;
  if (!push(port, phantom("q", hole.port()), 2s).ok()) ::_exit(3);
  std::uint32_t pushes = 0;
  for (;;) {
    pollfd p{control, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) break;  // EOF: the test is done
    (void)push(port, phantom(pushes % 2 ? "p" : "q", hole.port()), 5ms);
    ++pushes;
    std::this_thread::sleep_for(2ms);
  }
  const std::uint32_t counts[2] = {pushes, static_cast<std::uint32_t>(hole.accepted())};
  if (::write(report, counts, sizeof counts) != sizeof counts) ::_exit(4);
  ::_exit(0);
}

// (a) While an attacker pushes metadata naming loaded peers every few milliseconds, a
// stream of small writes between two honest agents keeps its pace: each completes, the
// bytes land, and no write waits for a probe (the old probe held the loop up to 1 s).
TEST(IdentityProbe, APushFloodDoesNotStallTransfers) {
  int control[2], report[2];
  ASSERT_EQ(::pipe2(control, O_CLOEXEC), 0);  // not inherited by the peer process
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(control[1]);
    ::close(report[0]);
    attacker(control[0], report[1]);
  }
  ::close(control[0]);
  ::close(report[1]);

  constexpr std::size_t kChunk = 4096, kWrites = 200;
  std::string error;
  auto p = PeerProcess::spawn({.name = "p", .size = kChunk * kWrites, .seed = 31}, &error);
  ASSERT_TRUE(p) << error;
  auto x = make_agent("x", "tcp");
  ASSERT_TRUE(x);
  Buffer local(kChunk * kWrites);
  local.randomize(32);
  KVF_ASSERT_OK(x->register_memory(local.whole()));
  auto port = x->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  ASSERT_TRUE(x->fetch_remote("127.0.0.1", p->port()).ok());
  const std::string p_instance_regions = std::to_string(x->remote_regions("p")->at(0)[0].address);

  const std::uint16_t target = *port;
  ASSERT_EQ(::write(control[1], &target, sizeof target), static_cast<ssize_t>(sizeof target));
  const auto flood_start = std::chrono::steady_clock::now();
  for (int i = 0; i < 500; ++i) {
    auto peers = x->remote_agents();
    if (std::find(peers.begin(), peers.end(), "q") != peers.end()) break;
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(50ms);  // the flood is on

  std::vector<double> ms;
  for (std::size_t i = 0; i < kWrites; ++i) {
    const DescriptorList src(MemoryKind::kDram, {Descriptor{local.addr(i * kChunk), kChunk, 0}});
    const DescriptorList dst(MemoryKind::kDram, {Descriptor{p->address() + i * kChunk, kChunk, 0}});
    const auto t0 = std::chrono::steady_clock::now();
    auto w = x->create_transfer(TransferOp::kWrite, src, "p", dst);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(10s));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    std::this_thread::sleep_for(10ms);  // spread over several probe deadlines
  }
  ::close(control[1]);
  const auto flood_time = std::chrono::steady_clock::now() - flood_start;
  std::uint32_t counts[2] = {0, 0};  // pushes, probes of the phantom's side channel
  EXPECT_EQ(::read(report[0], counts, sizeof counts), static_cast<ssize_t>(sizeof counts));
  const std::uint32_t pushes = counts[0], probes = counts[1];
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "attacker status " << status;

  std::sort(ms.begin(), ms.end());
  const double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100], worst = ms.back();
  std::printf("writes under a push flood (%u pushes, %u probes of the phantom): p50 %.2f ms, p99 %.2f ms, "
              "max %.2f ms\n", pushes, probes, p50, p99, worst);
  EXPECT_GE(pushes, 200u) << "the flood was thin";
  // Pushes about the phantom share its probe: one per probe deadline (1 s), not one each.
  EXPECT_LE(probes, 2 + std::chrono::duration_cast<std::chrono::seconds>(flood_time).count() + 1);
  EXPECT_LT(p99, 250.0) << "writes waited on the side channel's probes";
  EXPECT_LT(worst, 900.0);
  // No handler of x's reactor was held by a probe (one would take the full second).
  const double longest = metric(*x, "kvferry_reactor_longest_handler_seconds");
  std::printf("x's reactor: %.0f handlers, %.0f over 50 ms, the longest %.2f ms\n",
              metric(*x, "kvferry_reactor_handlers_total"), metric(*x, "kvferry_reactor_slow_handlers_total"),
              longest * 1e3);
  EXPECT_GE(longest, 0.0);
  EXPECT_LT(longest, 0.5);

  // Every byte landed: p's checksum is of x's buffer. And p is still p.
  Inbox inbox(*x);
  KVF_ASSERT_OK(x->notify("p", "checksum"));
  auto reply = inbox.next_from("p", 10s);
  ASSERT_TRUE(reply) << "no checksum from p";
  EXPECT_EQ(*reply, checksum_text(local.data(), local.size()));
  EXPECT_EQ(std::to_string(x->remote_regions("p")->at(0)[0].address), p_instance_regions);
}

// (b, c) The probe still decides both ways: while the loaded instance answers on its side
// channel, a pushed impostor is refused; once it is gone (its side channel refuses
// connections), the restarted peer's push is accepted, and transfers reach it.
TEST(IdentityProbe, ImpostorRefusedAndRestartAcceptedThroughTheProbe) {
  constexpr std::uint64_t kSize = 1u << 16;
  std::string error;
  auto r1 = PeerProcess::spawn({.name = "r", .size = kSize, .seed = 41}, &error);
  ASSERT_TRUE(r1) << error;
  auto x = make_agent("x", "tcp");
  ASSERT_TRUE(x);
  Buffer local(kSize);
  KVF_ASSERT_OK(x->register_memory(local.whole()));
  auto port = x->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  // x knows r1 as an agent of another host: only r1's side channel can tell it is gone.
  auto fetched = detail::side_channel_call("127.0.0.1", r1->port(), detail::SideFrame::kFetch, {},
                                           detail::SideFrame::kMetadata, detail::deadline_after(3s));
  ASSERT_TRUE(fetched.ok()) << fetched.status().to_string();
  auto md = detail::decode_metadata(*fetched);
  ASSERT_TRUE(md.ok());
  md->host_id = "another-host";
  ASSERT_TRUE(x->load_remote(detail::encode_metadata(*md)).ok());

  // A connection to r1, which replacing r1 later closes (off the reactor).
  const DescriptorList r1_remote(MemoryKind::kDram, {Descriptor{r1->address(), kSize, 0}});
  auto warm = x->create_transfer(TransferOp::kRead, local.whole(), "r", r1_remote);
  ASSERT_TRUE(warm.ok()) << warm.status().to_string();
  KVF_ASSERT_OK(warm->post());
  KVF_ASSERT_OK(warm->wait(10s));

  auto impostor = PeerProcess::spawn({.name = "r", .size = kSize / 2, .seed = 42, .push_to = *port}, &error);
  ASSERT_TRUE(impostor) << error;
  auto regions = x->remote_regions("r");
  ASSERT_TRUE(regions.ok());
  EXPECT_EQ((*regions)[0][0].address, r1->address()) << "the impostor replaced x's view of r";
  // Directly, to read the refusal.
  auto pushed = push(*port, detail::encode_metadata([&] {
                       auto other = *md;
                       other.instance = detail::random_instance_id();
                       return other;
                     }()),
                     3s);
  ASSERT_FALSE(pushed.ok());
  EXPECT_NE(pushed.status().message().find("still answers on its side channel"), std::string::npos)
      << pushed.status().to_string();

  ASSERT_TRUE(r1->signal(SIGKILL));
  ASSERT_TRUE(r1->wait_exit(5s));
  auto r2 = PeerProcess::spawn({.name = "r", .size = kSize, .seed = 43, .push_to = *port}, &error);
  ASSERT_TRUE(r2) << error;
  regions = x->remote_regions("r");
  ASSERT_TRUE(regions.ok());
  EXPECT_EQ((*regions)[0][0].address, r2->address()) << "the restarted peer was not accepted";
  local.randomize(44);
  Inbox inbox(*x);
  TransferOptions o;
  o.notification = "checksum";
  const DescriptorList remote(MemoryKind::kDram, {Descriptor{r2->address(), kSize, 0}});
  auto w = x->create_transfer(TransferOp::kWrite, local.whole(), "r", remote, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  auto reply = inbox.next_from("r", 10s);
  ASSERT_TRUE(reply) << "no checksum from r";
  EXPECT_EQ(*reply, checksum_text(local.data(), kSize));
}

// (d) Pushes about one instance share one probe; distinct instances are capped: a burst
// of pushes naming 12 loaded peers whose side channels never answer opens 8 connections
// to them; pushes beyond the cap are refused at once; none is accepted. (15 pushes at
// once: the side channel keeps 16 connections per address.)
TEST(IdentityProbe, ProbesAreSharedAndCapped) {
  Blackhole hole;
  auto x = make_agent("x", "tcp");
  ASSERT_TRUE(x);
  auto port = x->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  constexpr int kNames = 12, kExtra = 3;
  for (int n = 0; n < kNames; ++n)
    ASSERT_TRUE(x->load_remote(phantom("q" + std::to_string(n), hole.port())).ok());
  std::vector<std::future<std::pair<Status, std::chrono::steady_clock::duration>>> pushes;
  for (int k = 0; k < kNames + kExtra; ++k)
    pushes.push_back(std::async(std::launch::async, [&, n = k % kNames] {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = push(*port, phantom("q" + std::to_string(n), hole.port()), 5s);
      return std::make_pair(r.status(), std::chrono::steady_clock::now() - t0);
    }));
  int capped = 0, undecided = 0;
  for (auto& f : pushes) {
    auto [s, took] = f.get();
    ASSERT_FALSE(s.ok()) << "a push replaced a peer that was never shown gone";
    if (s.message().find("in flight") != std::string::npos) {
      ++capped;
      EXPECT_LT(took, 500ms) << "a push beyond the cap waited";
    } else if (s.message().find("cannot be shown gone") != std::string::npos) {
      ++undecided;
      EXPECT_LT(took, 3s) << s.to_string();
    } else {
      ADD_FAILURE() << s.to_string();
    }
  }
  for (int i = 0; i < 100 && hole.accepted() < 8; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(hole.accepted(), 8) << "one probe per instance, at most 8 at once";
  EXPECT_GE(capped, kNames - 8);
  EXPECT_EQ(capped + undecided, kNames + kExtra);
  for (int n = 0; n < kNames; ++n)  // the loaded phantoms are unchanged
    EXPECT_TRUE(x->remote_regions("q" + std::to_string(n)).ok());
}

}  // namespace
}  // namespace kvferry::testing
