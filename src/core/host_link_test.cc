#include "core/host_link.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "core/byte_io.h"
#include "core/fd_passing.h"
#include "core/unix_socket.h"

namespace kvferry::detail {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const SharedSecret> secret(char fill) {
  std::vector<std::uint8_t> key(32, static_cast<std::uint8_t>(fill));
  return SharedSecret::create(key).value();
}

HostLinkConfig config(std::string name, std::shared_ptr<const SharedSecret> s = nullptr, std::uint32_t version = 3) {
  return HostLinkConfig{"shm", version, std::move(name), std::move(s), 2000ms};
}

// A target over one end of a socket pair: accepts the hello (expecting `hello_fds`),
// answers with an eventfd and announces region 1 (payload "one", a memfd) and region 2
// (payload "two", no fd).
struct Target {
  std::thread thread;
  Status result;  // of the handshake, on the target's side
  std::string peer;
  std::size_t fds_seen = 0;
  Target(int sock, HostLinkConfig cfg, std::size_t hello_fds) {
    thread = std::thread([this, sock, cfg = std::move(cfg), hello_fds] {
      HostLinkAcceptor acceptor(std::make_shared<const HostLinkConfig>(cfg), hello_fds);
      for (;;) {
        std::vector<std::uint8_t> msg;
        std::vector<UniqueFd> fds;
        if (Status s = recv_message(sock, &msg, &fds, deadline_after(2s), "shm"); !s.ok()) {
          result = s;
          return;
        }
        Result<bool> accepted = acceptor.on_message(sock, std::move(msg), std::move(fds));
        if (!accepted.ok()) {
          result = accepted.status();
          return;
        }
        if (*accepted) break;
      }
      peer = acceptor.peer();
      fds_seen = acceptor.hello_fds().size();
      UniqueFd wake(::eventfd(0, EFD_CLOEXEC));
      int w = wake.get();
      const Deadline d = deadline_after(2s);
      result = acceptor.answer(sock, {&w, 1}, d);
      UniqueFd memfd(::memfd_create("host-link-test", MFD_CLOEXEC));
      const std::string one = "one", two = "two";
      AnnouncedRegion r1{1, 0x1000, 4096, {reinterpret_cast<const std::uint8_t*>(one.data()), one.size()}, {}};
      AnnouncedRegion r2{2, 0x9000, 8192, {reinterpret_cast<const std::uint8_t*>(two.data()), two.size()}, {}};
      if (result.ok()) result = send_host_region(sock, r1, memfd.get(), d, "shm");
      if (result.ok()) result = send_host_region(sock, r2, -1, d, "shm");
      if (result.ok()) result = send_host_regions_end(sock, d, "shm");
    });
  }
  void join() {
    if (thread.joinable()) thread.join();
  }
  ~Target() { join(); }
};

struct Pair {
  int t = -1, i = -1;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    t = sv[0];
    i = sv[1];
  }
  ~Pair() {
    ::close(t);
    ::close(i);
  }
};

struct Seen {
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, std::string, bool>> regions;
  std::function<Status(AnnouncedRegion&)> fn() {
    return [this](AnnouncedRegion& r) {
      regions.emplace_back(r.id, r.address, r.length,
                           std::string(reinterpret_cast<const char*>(r.payload.data()), r.payload.size()),
                           r.fd.valid());
      return Status::Ok();
    };
  }
};

// Runs the initiator's half as `from` (with `init_secret`) against a target named "b".
Result<std::vector<UniqueFd>> connect(Pair& p, Seen& seen, std::shared_ptr<const SharedSecret> init_secret,
                                      const std::string& target_name = "b", std::uint32_t version = 3) {
  HostLinkConfig cfg = config("a", std::move(init_secret), version);
  UniqueFd extra(::eventfd(0, EFD_CLOEXEC));
  const int fds[1] = {extra.get()};
  auto r = initiate_host_link(p.i, cfg, target_name, fds, 1, seen.fn(), deadline_after(3s));
  if (!r.ok()) ::shutdown(p.i, SHUT_RDWR);  // as a backend closes its socket: the target stops waiting
  return r;
}

void expect_regions(const Seen& seen) {
  ASSERT_EQ(seen.regions.size(), 2u);
  EXPECT_EQ(seen.regions[0], std::make_tuple(std::uint64_t{1}, std::uint64_t{0x1000}, std::uint64_t{4096},
                                             std::string("one"), true));
  EXPECT_EQ(seen.regions[1], std::make_tuple(std::uint64_t{2}, std::uint64_t{0x9000}, std::uint64_t{8192},
                                             std::string("two"), false));
}

TEST(HostLink, HelloAnswerAndRegionsWithTheirPayloadsAndDescriptors) {
  Pair p;
  Seen seen;
  Result<std::vector<UniqueFd>> answer = Status::Ok();
  {
    Target t(p.t, config("b"), 1);
    answer = connect(p, seen, nullptr);
    t.join();
    ASSERT_TRUE(t.result.ok()) << t.result.to_string();
    EXPECT_EQ(t.peer, "a");
    EXPECT_EQ(t.fds_seen, 1u);
  }
  ASSERT_TRUE(answer.ok()) << answer.status().to_string();
  ASSERT_EQ(answer->size(), 1u);
  EXPECT_TRUE((*answer)[0].valid());
  expect_regions(seen);
}

TEST(HostLink, TheSameSecretOnBothSidesAuthenticates) {
  Pair p;
  Seen seen;
  Target t(p.t, config("b", secret('k')), 1);
  auto answer = connect(p, seen, secret('k'));
  ASSERT_TRUE(answer.ok()) << answer.status().to_string();
  expect_regions(seen);
}

TEST(HostLink, ADifferentSecretIsRefusedAndNoRegionIsAnnounced) {
  Pair p;
  Seen seen;
  Target t(p.t, config("b", secret('k')), 1);
  auto answer = connect(p, seen, secret('x'));
  ASSERT_FALSE(answer.ok());
  EXPECT_TRUE(seen.regions.empty());
}

TEST(HostLink, ATargetWithASecretRefusesAnInitiatorWithout) {
  Pair p;
  Seen seen;
  Target t(p.t, config("b", secret('k')), 1);
  auto answer = connect(p, seen, nullptr);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kRemoteError);
  EXPECT_NE(answer.status().message().find("authentication required"), std::string::npos) << answer.status().to_string();
  EXPECT_TRUE(seen.regions.empty());
}

TEST(HostLink, ATargetWithoutASecretRefusesAnInitiatorThatAuthenticates) {
  Pair p;
  Seen seen;
  Target t(p.t, config("b"), 1);
  auto answer = connect(p, seen, secret('k'));
  ASSERT_FALSE(answer.ok());
  EXPECT_NE(answer.status().message().find("this agent has none"), std::string::npos) << answer.status().to_string();
}

TEST(HostLink, TheWrongNameVersionOrDescriptorsAreRefusedWithTheReason) {
  {
    Pair p;
    Seen seen;
    Target t(p.t, config("b"), 1);
    auto answer = connect(p, seen, nullptr, "c");
    ASSERT_FALSE(answer.ok());
    EXPECT_NE(answer.status().message().find("this is agent 'b', not 'c'"), std::string::npos)
        << answer.status().to_string();
  }
  {
    Pair p;
    Seen seen;
    Target t(p.t, config("b"), 1);
    auto answer = connect(p, seen, nullptr, "b", 4);
    ASSERT_FALSE(answer.ok());
    EXPECT_NE(answer.status().message().find("speaks protocol version 3, not 4"), std::string::npos)
        << answer.status().to_string();
  }
  {
    Pair p;
    Seen seen;
    Target t(p.t, config("b"), 2);  // expects two descriptors with the hello
    auto answer = connect(p, seen, nullptr);
    ASSERT_FALSE(answer.ok());
    EXPECT_NE(answer.status().message().find("malformed hello"), std::string::npos) << answer.status().to_string();
  }
}

TEST(HostLink, RevokeMessagesRoundTripAndRejectEverythingElse) {
  auto revoke = host_revoke_message(HostMessage::kRevoke, 42);
  EXPECT_EQ(parse_host_revoke(revoke, HostMessage::kRevoke), std::optional<std::uint64_t>(42));
  EXPECT_FALSE(parse_host_revoke(revoke, HostMessage::kRevokeAck).has_value());
  revoke.push_back(0);  // trailing bytes
  EXPECT_FALSE(parse_host_revoke(revoke, HostMessage::kRevoke).has_value());
  EXPECT_FALSE(parse_host_revoke(std::vector<std::uint8_t>{5, 0, 1}, HostMessage::kRevoke).has_value());
}

TEST(HostLink, AcceptsConnectionsOfOurUserOnAnAbstractSocket) {
  const std::string name = unique_abstract_name("kvferry-host-link-test");
  auto listener = listen_abstract(name, "shm");
  ASSERT_TRUE(listener.ok()) << listener.status().to_string();
  auto a = connect_abstract(name, "shm");
  auto b = connect_abstract(name, "shm");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<UniqueFd> got;
  for (int i = 0; i < 100 && got.size() < 2; ++i) {
    for (auto& fd : accept_host_links(listener->get())) got.push_back(std::move(fd));
    if (got.size() < 2) std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(got.size(), 2u);
  EXPECT_TRUE(accept_host_links(listener->get()).empty());  // nothing pending: returns at once
}

}  // namespace
}  // namespace kvferry::detail
