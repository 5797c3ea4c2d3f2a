// Shared-secret authentication (AgentOptions::secret, core/peer_auth.h) with real peer
// processes: the same secret works over the side channel, tcp, shm and ucx; a wrong or
// missing secret is refused on the side channel and on data connections, naming why; a
// recorded handshake or side-channel frame replayed on a new connection is refused.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "backends/tcp/tcp_wire.h"
#include "core/byte_io.h"
#include "core/peer_auth.h"
#include "core/side_channel.h"
#include "peer_process.h"
#include "raw_tcp.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kSecret = "correct horse battery staple 0123";
const std::string kOther = "another secret of enough length!!";
constexpr std::uint64_t kPeerBytes = 1u << 20;

std::shared_ptr<const detail::SharedSecret> secret_of(const std::string& s) {
  auto k = detail::SharedSecret::create({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
  EXPECT_TRUE(k.ok());
  return k.ok() ? *k : nullptr;
}

std::unique_ptr<PeerProcess> spawn(const std::string& backend, const std::string& secret, std::uint64_t seed = 7) {
  std::string error;
  PeerOptions o{.name = "guarded", .size = kPeerBytes, .seed = seed};
  o.backend = backend;
  o.shared = backend == "shm";
  o.secret = secret;
  auto p = PeerProcess::spawn(o, &error);
  EXPECT_TRUE(p) << "cannot start kvferry_test_peer: " << error;
  return p;
}

std::unique_ptr<Agent> agent_with(const std::string& name, const std::string& backend, const std::string& secret) {
  AgentOptions o;
  o.name = name;
  o.backends = {backend};
  o.peer_timeout = 3000ms;
  o.secret.assign(secret.begin(), secret.end());
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

// Reads the peer's whole buffer; the outcome of create_transfer, post and wait together.
Status read_all(Agent& a, const PeerProcess& p, Buffer& local) {
  DescriptorList remote(MemoryKind::kDram, {Descriptor{p.address(), kPeerBytes, 0}});
  auto r = a.create_transfer(TransferOp::kRead, local.whole(), p.name(), remote);
  if (!r.ok()) return r.status();
  KVF_RETURN_IF_ERROR(r->post());
  return r->wait(10s);
}

// The peer's metadata, fetched over its side channel with the right secret (as a
// trusted directory would hand it out).
std::vector<std::uint8_t> metadata_of(const PeerProcess& p) {
  auto md = detail::side_channel_call("127.0.0.1", p.port(), detail::SideFrame::kFetch, {}, detail::SideFrame::kMetadata,
                                      detail::deadline_after(5s), secret_of(kSecret));
  EXPECT_TRUE(md.ok()) << md.status().to_string();
  return md.ok() ? *md : std::vector<std::uint8_t>{};
}

bool contains(const Status& s, const std::string& what) { return s.message().find(what) != std::string::npos; }

// The backends whose data connections authenticate: tcp, shm, and ucx where it is built.
std::vector<std::string> data_backends() {
  std::vector<std::string> out{"tcp", "shm"};
  for (const BackendInfo& b : compiled_backends())
    if (b.name == "ucx") out.push_back("ucx");
  return out;
}

TEST(Auth, SameSecretWorksOverSideChannelTcpShmAndUcx) {
  for (const std::string& backend : data_backends()) {
    SCOPED_TRACE(backend);
    auto peer = spawn(backend, kSecret, 11);
    ASSERT_TRUE(peer);
    auto a = agent_with("reader-" + backend, backend, kSecret);
    ASSERT_TRUE(a);
    Buffer local(kPeerBytes, 0xEE);
    KVF_ASSERT_OK(a->register_memory(local.whole()));
    auto name = a->fetch_remote("127.0.0.1", peer->port());
    ASSERT_TRUE(name.ok()) << name.status().to_string();
    KVF_ASSERT_OK(read_all(*a, *peer, local));
    Buffer expected(kPeerBytes);
    expected.randomize(11);
    EXPECT_EQ(std::memcmp(local.data(), expected.data(), kPeerBytes), 0);
    Status note = a->notify("guarded", "hello over an authenticated link");
    EXPECT_TRUE(note.ok()) << note.to_string();
    // The peer answers over its own link to us: authenticated the other way round.
    ASSERT_TRUE(a->wait_for_notifications(10s));
    auto got = a->take_notifications();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].message, "got hello over an authenticated link");
  }
}

TEST(Auth, SideChannelRefusesAWrongOrMissingSecretNamingWhy) {
  auto guarded = spawn("tcp", kSecret);
  ASSERT_TRUE(guarded);
  auto wrong = agent_with("wrong", "tcp", kOther);
  auto none = agent_with("none", "tcp", "");
  ASSERT_TRUE(wrong && none);
  auto w = wrong->fetch_remote("127.0.0.1", guarded->port());
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(contains(w.status(), "different secrets")) << w.status().to_string();
  auto n = none->fetch_remote("127.0.0.1", guarded->port());
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(contains(n.status(), "authentication required")) << n.status().to_string();
  // Neither pushed metadata nor a notification got through: the peer still answers the
  // right secret, and knows no "wrong" or "none".
  auto right = agent_with("right", "tcp", kSecret);
  ASSERT_TRUE(right);
  auto r = right->fetch_remote("127.0.0.1", guarded->port());
  EXPECT_TRUE(r.ok()) << r.status().to_string();

  // A peer without a secret refuses an agent that has one, saying so.
  auto open = spawn("tcp", "");
  ASSERT_TRUE(open);
  auto o = right->fetch_remote("127.0.0.1", open->port());
  ASSERT_FALSE(o.ok());
  EXPECT_TRUE(contains(o.status(), "has none")) << o.status().to_string();
}

TEST(Auth, DataConnectionsRefuseAWrongOrMissingSecret) {
  for (const std::string& backend : data_backends()) {
    SCOPED_TRACE(backend);
    auto peer = spawn(backend, kSecret);
    ASSERT_TRUE(peer);
    const auto md = metadata_of(*peer);
    ASSERT_FALSE(md.empty());
    struct Case {
      std::string secret, expect;
    };
    for (const Case& c : {Case{kOther, "authentication failed"}, Case{"", "authentication required"}}) {
      auto a = agent_with("intruder", backend, c.secret);
      ASSERT_TRUE(a);
      Buffer local(kPeerBytes, 0xEE);
      KVF_ASSERT_OK(a->register_memory(local.whole()));
      auto loaded = a->load_remote(md);
      ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
      Status s = read_all(*a, *peer, local);
      EXPECT_FALSE(s.ok());
      EXPECT_TRUE(contains(s, c.expect)) << (c.secret.empty() ? "no secret: " : "wrong secret: ") << s.to_string();
      EXPECT_TRUE(std::all_of(local.data(), local.data() + kPeerBytes, [](std::uint8_t b) { return b == 0xEE; }));
    }
  }
}

// --- replay, on raw sockets -----------------------------------------------------------

std::vector<std::uint8_t> side_frame(detail::SideFrame type, std::span<const std::uint8_t> payload) {
  detail::ByteWriter w;
  w.u32(detail::kSideMagic);
  w.u16(static_cast<std::uint16_t>(type));
  w.u16(0);
  w.u32(static_cast<std::uint32_t>(payload.size()));
  w.bytes(payload);
  return w.take();
}

// (type, payload) of the next side-channel frame; type 0 when the connection ended.
std::pair<std::uint16_t, std::vector<std::uint8_t>> side_reply(const Sock& s) {
  auto h = s.get(detail::kSideHeaderBytes);
  if (h.size() != detail::kSideHeaderBytes) return {0, {}};
  std::uint16_t type;
  std::uint32_t len;
  std::memcpy(&type, h.data() + 4, 2);
  std::memcpy(&len, h.data() + 8, 4);
  return {type, s.get(len)};
}

TEST(Auth, ReplayedSideChannelFrameIsRefused) {
  auto peer = spawn("tcp", kSecret);
  ASSERT_TRUE(peer);
  auto secret = secret_of(kSecret);
  // A genuine exchange, recorded.
  std::vector<std::uint8_t> hello, request;
  {
    Sock s(peer->port());
    ASSERT_GE(s.fd, 0);
    detail::InitiatorAuth auth(secret, "side");
    hello = side_frame(detail::SideFrame::kAuthHello, auth.offer());
    s.put(hello);
    auto [type, challenge] = side_reply(s);
    ASSERT_EQ(type, static_cast<std::uint16_t>(detail::SideFrame::kChallenge));
    ASSERT_TRUE(auth.respond(auth.offer(), challenge, "test").ok());
    detail::ByteWriter covered;
    covered.u16(static_cast<std::uint16_t>(detail::SideFrame::kFetch));
    const auto tag = auth.frame_tag("request", 0, covered.buffer());
    request = side_frame(detail::SideFrame::kFetch, tag);
    s.put(request);
    auto [rtype, md] = side_reply(s);
    ASSERT_EQ(rtype, static_cast<std::uint16_t>(detail::SideFrame::kMetadata));
  }
  // The same bytes on a new connection: the server's nonce differs, the tag is refused.
  Sock s(peer->port());
  ASSERT_GE(s.fd, 0);
  s.put(hello);
  auto [type, challenge] = side_reply(s);
  ASSERT_EQ(type, static_cast<std::uint16_t>(detail::SideFrame::kChallenge));
  s.put(request);
  auto [rtype, why] = side_reply(s);
  EXPECT_EQ(rtype, static_cast<std::uint16_t>(detail::SideFrame::kError));
  EXPECT_NE(std::string(why.begin(), why.end()).find("replayed frame"), std::string::npos);
  // The recorded request alone, without a handshake: refused as unauthenticated.
  Sock bare(peer->port());
  bare.put(request);
  auto [btype, bwhy] = side_reply(bare);
  EXPECT_EQ(btype, static_cast<std::uint16_t>(detail::SideFrame::kError));
  EXPECT_NE(std::string(bwhy.begin(), bwhy.end()).find("authentication required"), std::string::npos);
}

TEST(Auth, ReplayedTcpHandshakeIsRefused) {
  auto peer = spawn("tcp", kSecret);
  ASSERT_TRUE(peer);
  ASSERT_NE(peer->data_port(), 0);
  auto secret = secret_of(kSecret);
  using detail::tcp::FrameType;
  detail::InitiatorAuth auth(secret, "tcp");
  std::vector<std::uint8_t> hello = tcp_hello(peer->name(), "recording", 0x1234567);
  const auto offer = auth.offer();
  hello.insert(hello.end(), offer.begin(), offer.end());
  std::vector<std::uint8_t> proof_frame;
  {  // a genuine handshake, recorded
    Sock s(peer->data_port());
    ASSERT_GE(s.fd, 0);
    s.put(tcp_frame(FrameType::kHello, hello));
    auto [h, challenge] = tcp_reply(s);
    ASSERT_EQ(h.type, static_cast<std::uint8_t>(FrameType::kChallenge));
    auto proof = auth.respond(hello, challenge, "test");
    ASSERT_TRUE(proof.ok()) << proof.status().to_string();
    proof_frame = tcp_frame(FrameType::kAuth, *proof);
    s.put(proof_frame);
    auto [ack, why] = tcp_reply(s);
    ASSERT_EQ(ack.type, static_cast<std::uint8_t>(FrameType::kHelloAck));
    ASSERT_EQ(ack.flags & detail::tcp::kFlagError, 0) << std::string(why.begin(), why.end());
  }
  // Replayed on a new connection: a fresh challenge, and the old proof is refused.
  Sock s(peer->data_port());
  ASSERT_GE(s.fd, 0);
  s.put(tcp_frame(FrameType::kHello, hello));
  auto [h, challenge] = tcp_reply(s);
  ASSERT_EQ(h.type, static_cast<std::uint8_t>(FrameType::kChallenge));
  s.put(proof_frame);
  auto [ack, why] = tcp_reply(s);
  EXPECT_EQ(ack.type, static_cast<std::uint8_t>(FrameType::kHelloAck));
  EXPECT_NE(ack.flags & detail::tcp::kFlagError, 0);
  EXPECT_NE(std::string(why.begin(), why.end()).find("replayed handshake"), std::string::npos)
      << std::string(why.begin(), why.end());
}

// What authentication costs: a side-channel fetch and a first tcp connection (hello of
// every stream), with and without a secret, in this process over loopback. Printed, and
// bounded loosely (it is a handful of HMACs and one extra round trip per connection).
TEST(Auth, HandshakeCost) {
  auto median_us = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  // Without and with a secret, interleaved so that load from other processes falls on both.
  std::unique_ptr<Agent> server[2];
  std::uint16_t port[2];
  Buffer remote(1 << 16, 1);
  for (int with = 0; with < 2; ++with) {
    server[with] = agent_with("server", "tcp", with ? kSecret : "");
    ASSERT_TRUE(server[with]);
    KVF_ASSERT_OK(server[with]->register_memory(remote.whole()));
    auto p = server[with]->listen();
    ASSERT_TRUE(p.ok());
    port[with] = *p;
  }
  std::vector<double> fetch[2], connect[2];
  for (int i = 0; i < 40; ++i) {
    for (int with = 0; with < 2; ++with) {
      auto client = agent_with("client" + std::to_string(i), "tcp", with ? kSecret : "");
      ASSERT_TRUE(client);
      Buffer local(1 << 16);
      KVF_ASSERT_OK(client->register_memory(local.whole()));
      auto t0 = Clock::now();
      auto name = client->fetch_remote("127.0.0.1", port[with], false);
      ASSERT_TRUE(name.ok()) << name.status().to_string();
      auto t1 = Clock::now();
      auto r = client->create_transfer(TransferOp::kRead, local.whole(), "server", remote.whole());
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      auto t2 = Clock::now();
      fetch[with].push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      connect[with].push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
  }
  const double f0 = median_us(fetch[0]), f1 = median_us(fetch[1]), c0 = median_us(connect[0]),
               c1 = median_us(connect[1]);
  std::printf("handshake cost (median of 40, interleaved, loopback): side-channel fetch %.0f us -> %.0f us with a "
              "secret; first tcp connection (every stream's hello) %.0f us -> %.0f us\n",
              f0, f1, c0, c1);
  EXPECT_LT(f1, f0 + 20000);
  EXPECT_LT(c1, c0 + 50000);
}

TEST(Auth, ShortSecretIsRefusedAndBackendsThatCannotAuthenticateAreNotStarted) {
  AgentOptions o;
  o.name = "short";
  o.secret = {1, 2, 3};
  auto a = Agent::create(o);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(contains(a.status(), "16..1024 bytes")) << a.status().to_string();
  // With a secret, every started backend authenticates or stays in the process.
  o.secret.assign(kSecret.begin(), kSecret.end());
  o.name = "guarded";
  auto b = Agent::create(o);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  for (const auto& name : (*b)->backends())
    EXPECT_TRUE(name == "tcp" || name == "shm" || name == "ucx" || name == "loopback" || name == "file" || name == "gds")
        << name;
}

}  // namespace
}  // namespace kvferry::testing
