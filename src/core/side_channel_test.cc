#include "core/side_channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <random>
#include <thread>

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

TEST(SideChannel, GarbageAndHostileFramesLeaveTheServerServing) {
  SideChannelHandlers h;
  h.local_metadata = [] { return Result<std::vector<std::uint8_t>>(std::vector<std::uint8_t>{1, 2, 3}); };
  h.load_remote = [](std::span<const std::uint8_t>) { return Corrupt("not metadata"); };
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
  h.load_remote = [&](std::span<const std::uint8_t>) {
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

}  // namespace
}  // namespace kvferry::detail
