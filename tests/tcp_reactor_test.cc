// The tcp backend and the side channel are served by the agent's reactor: an agent that
// talks to eight peer processes runs exactly as many threads as with one, and none of them
// is a loop of the tcp backend or of the side channel.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "peer_test_util.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;

// Names (comm) of this process's threads.
std::vector<std::string> thread_names() {
  std::vector<std::string> names;
  DIR* dir = ::opendir("/proc/self/task");
  if (!dir) return names;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

long count_named(const std::vector<std::string>& names, const std::string& name) {
  return std::count(names.begin(), names.end(), name);
}

// Threads of earlier tests' agents may still be finishing: wait until the count holds.
std::size_t settled_thread_count() {
  std::size_t n = thread_names().size();
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(20ms);
    const std::size_t again = thread_names().size();
    if (again == n) return n;
    n = again;
  }
  return n;
}

TEST(TcpReactor, EightPeersCostNoThreadMoreThanOne) {
  if (suite_backend() != "tcp") GTEST_SKIP() << "tcp only";
  constexpr std::size_t kSize = 1u << 20;
  // A sanitizer runtime starts a helper thread of its own with the process's first
  // thread: let it do so before counting.
  std::thread([] {}).join();
  const std::size_t before = settled_thread_count();
  const long reactors_before = count_named(thread_names(), "kvf-reactor");
  auto hub = make_agent("hub", "tcp");
  ASSERT_TRUE(hub);
  auto port = hub->listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  // The agent's one new thread is its reactor; tcp and the side channel start none.
  const std::vector<std::string> started = thread_names();
  EXPECT_EQ(started.size(), before + 1);
  EXPECT_EQ(count_named(started, "kvf-reactor"), reactors_before + 1);
  EXPECT_EQ(count_named(started, "kvf-tcp"), 0) << "the tcp backend started a reactor of its own";
  EXPECT_EQ(count_named(started, "kvf-side"), 0) << "the side channel started a reactor of its own";

  Buffer out(kSize), back(kSize);
  KVF_ASSERT_OK(hub->register_memory(out.whole()));
  KVF_ASSERT_OK(hub->register_memory(back.whole()));
  Inbox inbox(*hub);
  std::vector<std::unique_ptr<PeerProcess>> peers;
  std::size_t with_one = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string name = "peer" + std::to_string(i);
    // Each peer pushes its metadata to our side channel (served on our reactor) and
    // connects back to our tcp port for its replies (accepted on our reactor).
    peers.push_back(spawn_peer({.name = name, .size = kSize, .seed = 40u + static_cast<unsigned>(i), .push_to = *port}));
    ASSERT_TRUE(peers.back());
    const auto agents = hub->remote_agents();
    ASSERT_NE(std::find(agents.begin(), agents.end(), name), agents.end()) << name << " did not push its metadata";

    out.randomize(500 + static_cast<std::uint64_t>(i));
    std::memset(back.data(), 0xA5, kSize);  // poisoned
    TransferOptions o;
    o.notification = "checksum";
    auto w = hub->create_transfer(TransferOp::kWrite, out.whole(), name, remote_range(*peers.back(), 0, kSize), o);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    KVF_ASSERT_OK(w->post());
    KVF_ASSERT_OK(w->wait(20s));
    auto reply = inbox.next_from(name, 20s);
    ASSERT_TRUE(reply) << name << ": no checksum reply";
    EXPECT_EQ(*reply, checksum_text(out.data(), kSize)) << name;
    auto r = hub->create_transfer(TransferOp::kRead, back.whole(), name, remote_range(*peers.back(), 0, kSize));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    KVF_ASSERT_OK(r->post());
    KVF_ASSERT_OK(r->wait(20s));
    EXPECT_EQ(std::memcmp(out.data(), back.data(), kSize), 0) << name;
    if (i == 0) with_one = thread_names().size();
  }
  EXPECT_EQ(with_one, before + 1);
  EXPECT_EQ(thread_names().size(), with_one) << "threads grew with the number of peers";
  // Every session still serves: a standalone notification to each peer over tcp.
  for (int i = 0; i < 8; ++i) {
    const std::string name = "peer" + std::to_string(i);
    ASSERT_TRUE(hub->notify(name, "hello").ok()) << name;
    auto got = inbox.next_from(name, 20s);
    ASSERT_TRUE(got) << name << ": no answer";
    EXPECT_EQ(*got, "got hello") << name;
  }
}

}  // namespace
}  // namespace kvferry::testing
