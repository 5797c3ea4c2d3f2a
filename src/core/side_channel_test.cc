#include "core/side_channel.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "core/side_channel_probe.h"

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

TEST(SideChannel, GarbageAndHostileFramesLeaveTheServerServing) {
  SideChannelHandlers h;
  h.local_metadata = [] { return Result<std::vector<std::uint8_t>>(std::vector<std::uint8_t>{1, 2, 3}); };
  h.load_remote = [](std::span<const std::uint8_t>, SideChannelHandlers::Later) -> std::optional<Status> {
    return Corrupt("not metadata");
  };
  h.notify = [](std::string, std::string) { return Status::Ok(); };
  auto server = SideChannelServer::start("127.0.0.1", 0, h, 500ms);
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::uint16_t port = (*server)->port();

  std::mt19937 rng(5);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 20; ++i) {
    auto fd = tcp_connect("127.0.0.1", port, deadline_after(1s));
    ASSERT_TRUE(fd.ok());
    std::vector<std::uint8_t> junk(1 + rng() % 4096);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    if (i % 4 == 1) {  // a valid header claiming 4 GiB
      std::uint32_t hdr[3] = {kSideMagic, 1, 0xffffffffu};
      junk.assign(reinterpret_cast<std::uint8_t*>(hdr), reinterpret_cast<std::uint8_t*>(hdr) + 12);
    }
    if (i % 4 == 2) junk.resize(5);  // a partial header, kept open
    (void)send_all(fd->get(), junk.data(), junk.size(), deadline_after(1s));
    if (i % 4 == 2) idle.push_back(std::move(fd).value());
  }
  auto md = side_channel_call("127.0.0.1", port, SideFrame::kFetch, {}, SideFrame::kMetadata, deadline_after(2s));
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  EXPECT_EQ(*md, (std::vector<std::uint8_t>{1, 2, 3}));
  // A pushed blob that does not parse is answered with the reason, not a hang.
  std::vector<std::uint8_t> bogus{9, 9, 9};
  auto refused = side_channel_call("127.0.0.1", port, SideFrame::kFetch, bogus, SideFrame::kMetadata,
                                   deadline_after(2s));
  EXPECT_EQ(refused.status().code(), StatusCode::kRemoteError);
  EXPECT_NE(refused.status().message().find("not metadata"), std::string::npos);
}

TEST(SideChannel, ServedOnTheReactorItIsGiven) {
  auto reactor = Reactor::start("side-test");
  ASSERT_TRUE(reactor.ok()) << reactor.status().to_string();
  std::atomic<int> on_reactor{0}, elsewhere{0};
  auto where = [&] { (*reactor)->in_reactor_thread() ? ++on_reactor : ++elsewhere; };
  SideChannelHandlers h;
  h.local_metadata = [&] {
    where();
    return Result<std::vector<std::uint8_t>>(std::vector<std::uint8_t>{7});
  };
  h.load_remote = [&](std::span<const std::uint8_t>, SideChannelHandlers::Later) -> std::optional<Status> {
    where();
    return Status::Ok();
  };
  h.notify = [&](std::string, std::string) {
    where();
    return Status::Ok();
  };
  auto server = SideChannelServer::start("127.0.0.1", 0, h, 500ms, nullptr, *reactor);
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::uint16_t port = (*server)->port();
  std::vector<std::uint8_t> pushed{1, 2};
  auto md = side_channel_call("127.0.0.1", port, SideFrame::kFetch, pushed, SideFrame::kMetadata, deadline_after(2s));
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  EXPECT_EQ(*md, std::vector<std::uint8_t>{7});
  std::vector<std::uint8_t> note{1, 0, 'a', 'h', 'i'};
  auto ok = side_channel_call("127.0.0.1", port, SideFrame::kNotify, note, SideFrame::kOk, deadline_after(2s));
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(on_reactor.load(), 3);  // load_remote, local_metadata, notify
  EXPECT_EQ(elsewhere.load(), 0);
  server->reset();  // then no handler of the server runs: the reactor goes on serving others
  auto gone = side_channel_call("127.0.0.1", port, SideFrame::kFetch, {}, SideFrame::kMetadata, deadline_after(1s));
  EXPECT_FALSE(gone.ok());
  EXPECT_TRUE((*reactor)->run_sync([] {}));
}

TEST(SideChannel, SilentServerTimesOut) {
  auto listener = tcp_listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  auto port = local_port(listener->get());
  auto t0 = std::chrono::steady_clock::now();
  auto r = side_channel_call("127.0.0.1", *port, SideFrame::kFetch, {}, SideFrame::kMetadata, deadline_after(300ms));
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}


SideChannelHandlers metadata_handlers(std::vector<std::uint8_t> ours) {
  SideChannelHandlers h;
  h.local_metadata = [ours] { return Result<std::vector<std::uint8_t>>(ours); };
  h.load_remote = [](std::span<const std::uint8_t>, SideChannelHandlers::Later) -> std::optional<Status> {
    return Status::Ok();
  };
  h.notify = [](std::string, std::string) { return Status::Ok(); };
  return h;
}

// A push answered later: the pushing client waits for the verdict; meanwhile the same
// reactor serves other connections; with a secret the late reply is tagged as usual.
TEST(SideChannel, APushIsAnsweredWhenItsVerdictComes) {
  for (bool with_secret : {false, true}) {
    SCOPED_TRACE(with_secret ? "with a secret" : "without a secret");
    auto reactor = Reactor::start("side-test");
    ASSERT_TRUE(reactor.ok());
    std::shared_ptr<const SharedSecret> secret;
    if (with_secret) {
      const std::string text = "a secret of the test, long enough";
      auto s = SharedSecret::create({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      secret = *s;
    }
    std::mutex mu;
    std::map<std::uint8_t, SideChannelHandlers::Later> waiting;  // by the push's first byte
    SideChannelHandlers h = metadata_handlers({7, 7});
    h.load_remote = [&](std::span<const std::uint8_t> md, SideChannelHandlers::Later later) -> std::optional<Status> {
      EXPECT_TRUE((*reactor)->in_reactor_thread());
      if (md[0] == 1) return Status::Ok();  // decided at once
      std::lock_guard lock(mu);
      waiting.emplace(md[0], std::move(later));
      return std::nullopt;
    };
    auto server = SideChannelServer::start("127.0.0.1", 0, h, 200ms, secret, *reactor);
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    const std::uint16_t port = (*server)->port();
    auto push = [&](std::uint8_t first) {
      return std::async(std::launch::async, [&, first] {
        std::vector<std::uint8_t> md{first};
        return side_channel_call("127.0.0.1", port, SideFrame::kFetch, md, SideFrame::kMetadata, deadline_after(5s),
                                 secret);
      });
    };
    auto accepted = push(2), refused = push(3);
    auto both_wait = [&] {
      std::lock_guard lock(mu);
      return waiting.size() == 2;
    };
    for (int i = 0; i < 2000 && !both_wait(); ++i) std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(both_wait());
    // Longer than the idle timeout: a pending push is not swept; others are served.
    std::this_thread::sleep_for(400ms);
    auto now = side_channel_call("127.0.0.1", port, SideFrame::kFetch, std::vector<std::uint8_t>{1},
                                 SideFrame::kMetadata, deadline_after(2s), secret);
    ASSERT_TRUE(now.ok()) << now.status().to_string();
    EXPECT_EQ(accepted.wait_for(0s), std::future_status::timeout);
    std::thread([&] {  // `later` may come from any thread
      std::lock_guard lock(mu);
      waiting.at(2)(Status::Ok());
      waiting.at(3)(AlreadyExists("refused by the test"));
    }).join();
    auto a = accepted.get(), r = refused.get();
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(*a, (std::vector<std::uint8_t>{7, 7}));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
    EXPECT_NE(r.status().message().find("refused by the test"), std::string::npos) << r.status().to_string();
    // A verdict for a connection that is gone, or after the server stopped, is dropped.
    auto gone = push(4);
    for (int i = 0; i < 2000; ++i) {
      std::lock_guard lock(mu);
      if (waiting.size() == 3) break;
      std::this_thread::sleep_for(1ms);
    }
    server->reset();
    EXPECT_FALSE(gone.get().ok());
    std::lock_guard lock(mu);
    ASSERT_EQ(waiting.size(), 3u);
    waiting.at(4)(Status::Ok());
    EXPECT_TRUE((*reactor)->run_sync([] {}));
  }
}

// The reactor's call: a reply, a refused connection, a silent server, a name; never
// inside start, and never holding the loop.
TEST(SideChannelProbe, CallsRunOnTheReactorWithoutHoldingIt) {
  auto reactor = Reactor::start("probe-test");
  ASSERT_TRUE(reactor.ok());
  auto server = SideChannelServer::start("127.0.0.1", 0, metadata_handlers({4, 2}), 5s, nullptr, *reactor);
  ASSERT_TRUE(server.ok());
  auto silent = tcp_listen("127.0.0.1", 0);
  ASSERT_TRUE(silent.ok());
  const std::uint16_t silent_port = *local_port(silent->get());
  std::uint16_t closed_port = 0;
  {
    auto l = tcp_listen("127.0.0.1", 0);
    ASSERT_TRUE(l.ok());
    closed_port = *local_port(l->get());
  }
  auto call = [&](const std::string& host, std::uint16_t port, std::chrono::milliseconds limit,
                  std::shared_ptr<const SharedSecret> secret = nullptr) {
    auto result = std::make_shared<std::promise<Result<std::vector<std::uint8_t>>>>();
    auto got = result->get_future();
    bool inside_start = false;
    bool starting = false;  // both on the reactor thread; they outlive the call (got.get() below)
    (*reactor)->run_sync([&] {
      starting = true;
      SideChannelCall::start(*reactor, host, port, SideFrame::kFetch, {}, SideFrame::kMetadata, deadline_after(limit),
                             secret, [&inside_start, &starting, result](Result<std::vector<std::uint8_t>> r) {
                               inside_start = inside_start || starting;
                               result->set_value(std::move(r));
                             });
      starting = false;
    });
    auto r = got.get();
    EXPECT_FALSE(inside_start);
    return r;
  };
  auto md = call("127.0.0.1", (*server)->port(), 2000ms);
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  EXPECT_EQ(*md, (std::vector<std::uint8_t>{4, 2}));
  auto refused = call("127.0.0.1", closed_port, 2000ms);
  EXPECT_NE(refused.status().message().find(std::strerror(ECONNREFUSED)), std::string::npos)
      << refused.status().to_string();
  // Authenticated both ways with a secret; refused with another one.
  auto secret_of = [](const std::string& text) {
    return *SharedSecret::create({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
  };
  auto guarded = SideChannelServer::start("127.0.0.1", 0, metadata_handlers({9}), 5s,
                                          secret_of("the probe test's secret, 32 bytes+"), *reactor);
  ASSERT_TRUE(guarded.ok());
  auto authed = call("127.0.0.1", (*guarded)->port(), 2000ms, secret_of("the probe test's secret, 32 bytes+"));
  ASSERT_TRUE(authed.ok()) << authed.status().to_string();
  EXPECT_EQ(*authed, std::vector<std::uint8_t>{9});
  auto wrong = call("127.0.0.1", (*guarded)->port(), 2000ms, secret_of("another secret, also long enough!"));
  EXPECT_FALSE(wrong.ok());
  auto bare = call("127.0.0.1", (*guarded)->port(), 2000ms);
  EXPECT_FALSE(bare.ok());
  EXPECT_NE(bare.status().message().find("authentication"), std::string::npos) << bare.status().to_string();
  auto named = call("localhost", (*server)->port(), 2000ms);
  EXPECT_EQ(named.status().code(), StatusCode::kUnavailable) << named.status().to_string();

  // While a call waits on a silent server, a timer of the same reactor keeps its beat.
  std::atomic<int> ticks{0};
  auto beat = (*reactor)->every(5ms, [&] { ++ticks; });
  const auto t0 = Clock::now();
  auto timed_out = call("127.0.0.1", silent_port, 300ms);
  const auto took = Clock::now() - t0;
  (*reactor)->cancel(beat);
  EXPECT_EQ(timed_out.status().code(), StatusCode::kTimeout) << timed_out.status().to_string();
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 2s);
  EXPECT_GE(ticks.load(), 20) << "the reactor was held while the call waited";
  EXPECT_LT((*reactor)->stats().longest, 100ms);
}

// Askers about one instance share one probe (one connection); distinct instances are
// capped, and so are askers of one probe; stop() answers every waiter.
TEST(SideChannelProbe, ProbesCoalesceAndAreCapped) {
  auto reactor = Reactor::start("probe-test");
  ASSERT_TRUE(reactor.ok());
  auto silent = tcp_listen("127.0.0.1", 0);  // counts the connections it is given
  ASSERT_TRUE(silent.ok());
  const std::uint16_t port = *local_port(silent->get());
  std::atomic<int> connections{0};
  std::vector<UniqueFd> held;
  auto counted = (*reactor)->watch(silent->get(), EPOLLIN, [&](std::uint32_t) {
    for (int fd; (fd = ::accept4(silent->get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
      held.emplace_back(fd);
      ++connections;
    }
  });
  ASSERT_TRUE(counted.ok());
  PeerProbes probes(*reactor, nullptr, /*max_in_flight=*/2, /*max_waiters=*/50);
  std::atomic<int> answered{0}, timed_out{0};
  auto waiter = [&](const Result<std::vector<std::uint8_t>>& r) {
    ++answered;
    if (r.status().code() == StatusCode::kTimeout) ++timed_out;
  };
  (*reactor)->run_sync([&] {
    const auto deadline = deadline_after(300ms);
    for (int i = 0; i < 50; ++i) EXPECT_TRUE(probes.ask("a", "127.0.0.1", port, deadline, waiter).ok());
    Status full = probes.ask("a", "127.0.0.1", port, deadline, waiter);
    EXPECT_EQ(full.code(), StatusCode::kUnavailable) << full.to_string();
    EXPECT_TRUE(probes.ask("b", "127.0.0.1", port, deadline, waiter).ok());
    Status capped = probes.ask("c", "127.0.0.1", port, deadline, waiter);
    EXPECT_EQ(capped.code(), StatusCode::kUnavailable) << capped.to_string();
    EXPECT_NE(capped.message().find("in flight"), std::string::npos) << capped.to_string();
    EXPECT_EQ(probes.in_flight(), 2u);
    EXPECT_EQ(probes.started(), 2u);
  });
  for (int i = 0; i < 3000 && answered.load() < 51; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(answered.load(), 51);
  EXPECT_EQ(timed_out.load(), 51);
  EXPECT_EQ(connections.load(), 2);
  // Room again once they concluded; stop() answers a probe's waiters at once.
  std::atomic<int> stopped{0};
  (*reactor)->run_sync([&] {
    EXPECT_EQ(probes.in_flight(), 0u);
    EXPECT_TRUE(probes.ask("c", "127.0.0.1", port, deadline_after(10s), [&](const auto& r) {
                        if (r.status().code() == StatusCode::kUnavailable) ++stopped;
                      }).ok());
    probes.stop();
    EXPECT_EQ(probes.ask("d", "127.0.0.1", port, deadline_after(10s), waiter).code(), StatusCode::kUnavailable);
  });
  EXPECT_EQ(stopped.load(), 1);
  (*reactor)->run_sync([&] { (*reactor)->cancel(*counted); });
}

}  // namespace
}  // namespace kvferry::detail
