// Failure suite: dead and stopped peers, untrusted metadata, garbage on listening ports,
// requests outside registered memory, unreachable side channels. Every wait is bounded.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<PeerProcess> spawn_peer(PeerOptions o) {
  if (o.backend == "tcp") o.backend = suite_backend();
  std::string error;
  auto p = PeerProcess::spawn(o, &error);
  EXPECT_TRUE(p) << "cannot start kvferry_test_peer: " << error;
  return p;
}

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

DescriptorList remote_range(const PeerProcess& p, std::uint64_t offset, std::uint64_t length) {
  return DescriptorList(MemoryKind::kDram, {Descriptor{p.address() + offset, length, 0}});
}

// A socket fd closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

Fd raw_connect(std::uint16_t port) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa = loopback(port);
  timeval tv{2, 0};
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return Fd();
  return s;
}

void send_bytes(const Fd& s, const void* p, std::size_t n) {
  // The server may drop us half-way: errors are expected and ignored.
  [[maybe_unused]] ssize_t rc = ::send(s.fd, p, n, MSG_NOSIGNAL);
}

// Reads until EOF/reset or `timeout`; true if the server closed the connection.
bool server_closes(const Fd& s, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{s.fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    ssize_t n = ::recv(s.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
  return false;
}

std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// Side-channel frame header: magic "KVFS" u32 | type u16 | reserved u16 | length u32.
std::vector<std::uint8_t> side_header(std::uint16_t type, std::uint32_t length) {
  std::vector<std::uint8_t> h;
  put_le(h, 0x5346564b, 4);
  put_le(h, type, 2);
  put_le(h, 0, 2);
  put_le(h, length, 4);
  return h;
}

// tcp backend frame header (32 bytes): magic u16 0x464b | type u8 | flags u8 | aux u32 |
// req u64 | addr u64 | len u64.
std::vector<std::uint8_t> tcp_header(std::uint8_t type, std::uint64_t addr, std::uint64_t len) {
  std::vector<std::uint8_t> h;
  put_le(h, 0x464b, 2);
  put_le(h, type, 1);
  put_le(h, 0, 1);
  put_le(h, 0, 4);
  put_le(h, 1, 8);
  put_le(h, addr, 8);
  put_le(h, len, 8);
  return h;
}

// Posts `count` transfers of `local.size()` bytes with the peer (cycling over its
// buffer), so that the link is busy for a while.
std::vector<TransferRequest> post_transfers(Agent& a, const PeerProcess& peer, Buffer& local, int count,
                                            TransferOp op = TransferOp::kRead) {
  std::vector<TransferRequest> reqs;
  const std::uint64_t chunk = local.size();
  const std::uint64_t slots = peer.size() / chunk;
  for (int i = 0; i < count; ++i) {
    auto r = a.create_transfer(op, local.whole(), peer.name(),
                               remote_range(peer, (static_cast<std::uint64_t>(i) % slots) * chunk, chunk));
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) break;
    Status s = r->post();
    EXPECT_TRUE(s.ok()) << s.to_string();
    reqs.push_back(std::move(r).value());
  }
  return reqs;
}

// Waits for every request up to one shared deadline; returns how many ended in kPeerLost
// and flags any other failure.
int wait_all_lost(std::vector<TransferRequest>& reqs, Clock::time_point deadline) {
  int lost = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto left = std::max<Clock::duration>(deadline - Clock::now(), Clock::duration::zero());
    Status s = reqs[i].wait(left);
    if (s.ok()) continue;  // finished before the peer went away
    EXPECT_EQ(s.code(), StatusCode::kPeerLost) << "request " << i << ": " << s.to_string();
    lost += s.code() == StatusCode::kPeerLost;
  }
  return lost;
}

// A 1 GiB zero-filled tcp peer, and a tcp initiator with 256 MiB registered that knows it.
struct LoadedPeer {
  std::unique_ptr<PeerProcess> peer;
  Buffer local{256u << 20};
  std::unique_ptr<Agent> agent;
};

void load_peer(const std::string& name, std::chrono::milliseconds peer_timeout, LoadedPeer* out) {
  out->peer = spawn_peer({.name = name, .size = 1u << 30, .seed = 0, .fill = "zero", .peer_timeout = peer_timeout});
  ASSERT_TRUE(out->peer);
  out->agent = make_agent("initiator", suite_backend(), peer_timeout);
  ASSERT_TRUE(out->agent);
  KVF_ASSERT_OK(out->agent->register_memory(out->local.whole()));
  ASSERT_TRUE(out->agent->fetch_remote("127.0.0.1", out->peer->port()).ok());
}

// ---------------------------------------------------------------------------------------

TEST(Failure, PeerKilledMidTransferBecomesPeerLostWithinBound) {
  constexpr auto kPeerTimeout = 2000ms;
  LoadedPeer loaded;
  ASSERT_NO_FATAL_FAILURE(load_peer("victim", kPeerTimeout, &loaded));
  auto& [peer, local, a] = loaded;

  auto reqs = post_transfers(*a, *peer, local, 16);  // 4 GiB through loopback: well over 50 ms
  ASSERT_EQ(reqs.size(), 16u);
  std::this_thread::sleep_for(50ms);
  int in_flight = 0;
  for (auto& r : reqs) in_flight += r.state() == TransferState::kInProgress;
  ASSERT_TRUE(peer->signal(SIGKILL));
  const auto killed = Clock::now();
  ASSERT_TRUE(peer->wait_exit(5s)) << "SIGKILLed peer did not exit";
  ASSERT_GT(in_flight, 0) << "every read finished within 50 ms: the link is too fast for this test";

  const int lost = wait_all_lost(reqs, killed + kPeerTimeout + 3s);
  const auto settled_ms = ms_since(killed);
  EXPECT_GT(lost, 0);
  EXPECT_LE(settled_ms, std::chrono::duration_cast<std::chrono::milliseconds>(kPeerTimeout + 1s).count())
      << "transfers of a killed peer took " << settled_ms << " ms to fail";

  // Later calls to the lost peer fail fast with kPeerLost.
  DescriptorList small_local(MemoryKind::kDram, {Descriptor{local.addr(), 4096, 0}});
  auto t0 = Clock::now();
  auto again = a->create_transfer(TransferOp::kRead, small_local, "victim", remote_range(*peer, 0, 4096));
  Status fast = again.ok() ? again->post() : again.status();
  if (fast.ok()) fast = again->wait(kPeerTimeout + 2s);  // not fast: reported below
  const auto fast_ms = ms_since(t0);
  EXPECT_EQ(fast.code(), StatusCode::kPeerLost) << fast.to_string();
  EXPECT_LT(fast_ms, 100) << "a call to a lost peer took " << fast_ms << " ms";
  // A lost request can be posted again: it must fail fast as well.
  t0 = Clock::now();
  Status repost = reqs.back().post();
  if (repost.ok()) repost = reqs.back().wait(kPeerTimeout + 2s);
  EXPECT_EQ(repost.code(), StatusCode::kPeerLost) << repost.to_string();
  EXPECT_LT(ms_since(t0), 100);
  // notify to a lost peer: an error, promptly (its side channel is gone too).
  t0 = Clock::now();
  EXPECT_FALSE(a->notify("victim", "anyone?").ok());
  EXPECT_LT(ms_since(t0), 1000);

  // A new process under the same name: fresh metadata makes it reachable again.
  constexpr std::size_t kSize2 = 64u << 20;
  auto reborn = spawn_peer({.name = "victim", .size = kSize2, .seed = 66, .peer_timeout = kPeerTimeout});
  ASSERT_TRUE(reborn);
  auto name = a->fetch_remote("127.0.0.1", reborn->port());
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  EXPECT_EQ(*name, "victim");
  DescriptorList head(MemoryKind::kDram, {Descriptor{local.addr(), kSize2, 0}});
  auto r = a->create_transfer(TransferOp::kRead, head, "victim", remote_range(*reborn, 0, kSize2));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  Buffer expected(kSize2);
  expected.randomize(66);
  EXPECT_EQ(std::memcmp(local.data(), expected.data(), kSize2), 0);
}

// A stopped process keeps its sockets open and its kernel keeps acknowledging what fits
// in its socket buffers: only the initiator's no-progress timer can notice.
void stopped_peer_case(TransferOp op) {
  constexpr auto kPeerTimeout = 2000ms;
  LoadedPeer loaded;
  ASSERT_NO_FATAL_FAILURE(load_peer("sleeper", kPeerTimeout, &loaded));
  auto& [peer, local, a] = loaded;

  auto reqs = post_transfers(*a, *peer, local, 16, op);
  ASSERT_EQ(reqs.size(), 16u);
  std::this_thread::sleep_for(50ms);
  int in_flight = 0;
  for (auto& r : reqs) in_flight += r.state() == TransferState::kInProgress;
  ASSERT_TRUE(peer->signal(SIGSTOP));
  const auto stopped = Clock::now();
  ASSERT_GT(in_flight, 0) << "every transfer finished within 50 ms: the link is too fast for this test";

  const int lost = wait_all_lost(reqs, stopped + kPeerTimeout + 3s);
  const auto settled_ms = ms_since(stopped);
  EXPECT_GT(lost, 0) << to_string(op) << "s of a stopped peer never failed";
  EXPECT_LE(settled_ms, std::chrono::duration_cast<std::chrono::milliseconds>(kPeerTimeout + 2s).count())
      << to_string(op) << "s of a stopped peer took " << settled_ms << " ms to fail";
  EXPECT_TRUE(peer->alive()) << "the stopped peer should still exist";

  // Later calls fail fast while it is lost.
  DescriptorList small_local(MemoryKind::kDram, {Descriptor{local.addr(), 4096, 0}});
  auto t0 = Clock::now();
  auto again = a->create_transfer(op, small_local, "sleeper", remote_range(*peer, 0, 4096));
  Status fast = again.ok() ? again->post() : again.status();
  if (fast.ok()) fast = again->wait(1s);
  EXPECT_EQ(fast.code(), StatusCode::kPeerLost) << fast.to_string();
  EXPECT_LT(ms_since(t0), 100);

  peer->signal(SIGKILL);
  peer->signal(SIGCONT);
  EXPECT_TRUE(peer->wait_exit(5s));
}

// LIBRARY BUG (found by this test): reads from a SIGSTOPped peer never fail. The tcp
// engine counts every successful send as progress (on_writable sets last_progress), and
// its keep-alive ping, sent every peer_timeout/4 while nothing arrives, is accepted by
// the stopped peer's kernel socket buffer - so the no-progress timer is reset forever and
// TCP_USER_TIMEOUT never fires either (the data is acknowledged). Observed: all 16 reads
// still kInProgress 96 s after SIGSTOP with peer_timeout = 2 s.
TEST(Failure, PeerStoppedMidTransferTimesOut) { stopped_peer_case(TransferOp::kRead); }

// The same with writes: the stopped peer's socket buffers fill up, sends stop, and the
// no-progress timer can fire.
TEST(Failure, PeerStoppedMidWriteTimesOut) { stopped_peer_case(TransferOp::kWrite); }

TEST(Failure, CorruptAndTruncatedMetadataAreErrors) {
  Buffer b1(1u << 20), b2(64u << 10);
  auto src = make_agent("meta-source", "tcp");
  auto dst = make_agent("meta-sink", "tcp");
  ASSERT_TRUE(src && dst);
  KVF_ASSERT_OK(src->register_memory(b1.whole()));
  KVF_ASSERT_OK(src->register_memory(b2.whole()));
  ASSERT_TRUE(src->listen("127.0.0.1", 0).ok());  // adds the side-channel record
  auto md = src->local_metadata();
  ASSERT_TRUE(md.ok()) << md.status().to_string();
  const std::vector<std::uint8_t> blob = *md;
  ASSERT_GT(blob.size(), 0u);
  {
    auto ok = dst->load_remote(blob);
    ASSERT_TRUE(ok.ok()) << ok.status().to_string();
    EXPECT_EQ(*ok, "meta-source");
    KVF_ASSERT_OK(dst->forget_remote("meta-source"));
  }

  // Every truncation.
  for (std::size_t len = 0; len < blob.size(); ++len) {
    auto r = dst->load_remote(std::span<const std::uint8_t>(blob.data(), len));
    ASSERT_FALSE(r.ok()) << "truncated to " << len << " of " << blob.size() << " bytes was accepted";
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << len << ": " << r.status().to_string();
  }
  // Padded.
  {
    auto padded = blob;
    padded.push_back(0);
    auto r = dst->load_remote(padded);
    EXPECT_FALSE(r.ok()) << "a padded blob was accepted";
  }
  // Every byte inverted, and every single bit flipped (or 2000 sampled positions if large).
  std::vector<std::size_t> positions(blob.size());
  for (std::size_t i = 0; i < blob.size(); ++i) positions[i] = i;
  std::mt19937_64 rng(8);
  if (positions.size() > 2000) {
    std::shuffle(positions.begin(), positions.end(), rng);
    positions.resize(2000);
  }
  for (std::size_t pos : positions) {
    for (int mask : {0xFF, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80}) {
      auto bad = blob;
      bad[pos] ^= static_cast<std::uint8_t>(mask);
      auto r = dst->load_remote(bad);
      ASSERT_FALSE(r.ok()) << "byte " << pos << " ^ " << mask << " was accepted";
      ASSERT_EQ(r.status().code(), StatusCode::kCorrupt) << pos << ": " << r.status().to_string();
      ASSERT_FALSE(r.status().message().empty());
    }
  }
  // Random garbage of random sizes.
  for (int i = 0; i < 1000; ++i) {
    auto g = random_bytes(rng, rng() % 4096);
    auto r = dst->load_remote(g);
    ASSERT_FALSE(r.ok()) << "garbage blob " << i << " of " << g.size() << " bytes was accepted";
  }
  // Garbage that starts with the real header (magic, version...).
  for (int i = 0; i < 1000; ++i) {
    auto g = random_bytes(rng, 20 + rng() % 1024);
    std::copy(blob.begin(), blob.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(8, blob.size())),
              g.begin());
    EXPECT_FALSE(dst->load_remote(g).ok()) << "header + garbage blob " << i << " was accepted";
  }
  // Empty.
  EXPECT_FALSE(dst->load_remote(std::span<const std::uint8_t>()).ok());
  EXPECT_TRUE(dst->remote_agents().empty());
  // A peer's metadata naming the loader itself is refused.
  auto self = dst->local_metadata();
  ASSERT_TRUE(self.ok());
  EXPECT_FALSE(dst->load_remote(*self).ok());
}

// Goes beyond the checksum: re-seals mutated blobs with a valid XXH3 so that the record
// parser behind it sees hostile input. Relies on the header layout observed on the real
// blob (magic 4 | version 2 | reserved 2 | body length 4 | XXH3-64 of body 8); skipped
// if the library's layout differs from that.
TEST(Failure, ResealedMetadataMutationsNeverCrash) {
  Buffer b1(1u << 20);
  auto src = make_agent("meta-source", "tcp");
  auto dst = make_agent("meta-sink", "tcp");
  ASSERT_TRUE(src && dst);
  KVF_ASSERT_OK(src->register_memory(b1.whole()));
  ASSERT_TRUE(src->listen("127.0.0.1", 0).ok());
  auto md = src->local_metadata();
  ASSERT_TRUE(md.ok());
  const std::vector<std::uint8_t> blob = *md;
  constexpr std::size_t kHdr = 20;
  auto rd32 = [](const std::uint8_t* p) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
    return v;
  };
  auto rd64 = [](const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
  };
  if (blob.size() < kHdr || rd32(blob.data() + 8) != blob.size() - kHdr ||
      rd64(blob.data() + 12) != XXH3_64bits(blob.data() + kHdr, blob.size() - kHdr))
    GTEST_SKIP() << "metadata header layout is not the one this test knows; nothing to re-seal";

  auto reseal = [&](std::vector<std::uint8_t> body) {
    std::vector<std::uint8_t> out(blob.begin(), blob.begin() + 8);
    put_le(out, body.size(), 4);
    put_le(out, XXH3_64bits(body.data(), body.size()), 8);
    out.insert(out.end(), body.begin(), body.end());
    return out;
  };
  const std::vector<std::uint8_t> body(blob.begin() + kHdr, blob.end());
  auto check = [&](const std::vector<std::uint8_t>& m, const std::string& what) {
    auto r = dst->load_remote(m);  // must return, never crash
    if (r.ok()) {
      EXPECT_FALSE(r->empty()) << what;
      dst->forget_remote(*r).ok();
    } else {
      EXPECT_TRUE(r.status().code() == StatusCode::kCorrupt || r.status().code() == StatusCode::kInvalidArgument)
          << what << ": " << r.status().to_string();
    }
  };
  ASSERT_TRUE(dst->load_remote(reseal(body)).ok()) << "re-sealing the unchanged body must load";
  KVF_ASSERT_OK(dst->forget_remote("meta-source"));
  for (std::size_t len = 0; len < body.size(); ++len)
    check(reseal(std::vector<std::uint8_t>(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(len))),
          "body truncated to " + std::to_string(len));
  for (std::size_t pos = 0; pos < body.size(); ++pos)
    for (int mask : {0xFF, 0x01, 0x80}) {
      auto m = body;
      m[pos] ^= static_cast<std::uint8_t>(mask);
      check(reseal(m), "body byte " + std::to_string(pos) + " ^ " + std::to_string(mask));
    }
  std::mt19937_64 rng(9);
  for (int i = 0; i < 2000; ++i) {
    auto m = body;
    for (int k = 0, n = 1 + static_cast<int>(rng() % 8); k < n; ++k)
      m[rng() % m.size()] = static_cast<std::uint8_t>(rng());
    check(reseal(m), "multi-byte mutation " + std::to_string(i));
    check(reseal(random_bytes(rng, rng() % 512)), "sealed garbage " + std::to_string(i));
  }
  // Records whose declared length runs past the body, huge counts of records.
  std::vector<std::uint8_t> evil;
  put_le(evil, 5, 2);
  put_le(evil, 0xFFFFFFFF, 4);
  check(reseal(evil), "record length 4 GiB");
  std::vector<std::uint8_t> many = body;
  for (int i = 0; i < 100000; ++i) {
    put_le(many, 5, 2);  // region record
    put_le(many, 29, 4);
    put_le(many, static_cast<std::uint64_t>(i) + 1000, 8);
    put_le(many, 0, 1);
    put_le(many, 0, 4);
    put_le(many, (static_cast<std::uint64_t>(i) + 1) << 20, 8);
    put_le(many, 4096, 8);
  }
  check(reseal(many), "100000 region records");
}

TEST(Failure, GarbageOnListeningPortsLeavesAgentHealthy) {
  constexpr std::size_t kSize = 16u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 19});
  ASSERT_TRUE(peer);
  std::mt19937_64 rng(19);
  std::vector<Fd> idle;  // (c): connected, silent, held open through the health check

  // --- side channel --------------------------------------------------------------------
  {
    Fd s = raw_connect(peer->port());  // (a) random bytes
    ASSERT_GE(s.fd, 0);
    auto g = random_bytes(rng, 64u << 10);
    send_bytes(s, g.data(), g.size());
    EXPECT_TRUE(server_closes(s, 3s)) << "side channel kept a connection that sent garbage";
  }
  {
    Fd s = raw_connect(peer->port());  // (b) a valid header claiming a 4 GiB payload
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 0xFFFFFFFFu);
    send_bytes(s, h.data(), h.size());
    auto g = random_bytes(rng, 4096);
    send_bytes(s, g.data(), g.size());
    EXPECT_TRUE(server_closes(s, 3s)) << "side channel kept a connection announcing 4 GiB";
  }
  {
    Fd s = raw_connect(peer->port());  // (b') at the cap, then only part of it, then close
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 16u << 20);
    send_bytes(s, h.data(), h.size());
    auto g = random_bytes(rng, 1u << 20);
    send_bytes(s, g.data(), g.size());
  }
  {
    Fd s = raw_connect(peer->port());  // unknown frame type
    ASSERT_GE(s.fd, 0);
    auto h = side_header(77, 0);
    send_bytes(s, h.data(), h.size());
    EXPECT_TRUE(server_closes(s, 3s));
  }
  {
    Fd s = raw_connect(peer->port());  // a truncated notify: answered with an error frame
    ASSERT_GE(s.fd, 0);
    auto h = side_header(3, 1);
    h.push_back(0x7f);
    send_bytes(s, h.data(), h.size());
    std::uint8_t reply[12] = {};
    ssize_t n = ::recv(s.fd, reply, sizeof reply, MSG_WAITALL);
    EXPECT_EQ(n, 12);
    if (n == 12) {
      EXPECT_EQ(reply[4], 5) << "expected an error frame";
    }
  }
  {
    Fd s = raw_connect(peer->port());  // a fetch whose pushed "metadata" is garbage
    ASSERT_GE(s.fd, 0);
    auto g = random_bytes(rng, 300);
    auto h = side_header(1, static_cast<std::uint32_t>(g.size()));
    h.insert(h.end(), g.begin(), g.end());
    send_bytes(s, h.data(), h.size());
    std::uint8_t reply[12] = {};
    ssize_t n = ::recv(s.fd, reply, sizeof reply, MSG_WAITALL);
    EXPECT_EQ(n, 12);
    if (n == 12) {
      EXPECT_EQ(reply[4], 5) << "expected an error frame";
    }
  }
  for (int i = 0; i < 3; ++i) {  // (c) nothing, kept open
    idle.push_back(raw_connect(peer->port()));
    ASSERT_GE(idle.back().fd, 0);
  }
  {
    Fd s = raw_connect(peer->port());  // (d) a partial header, then close
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 0);
    send_bytes(s, h.data(), 6);
  }

  // --- tcp data port (found by the peer scanning its own listening sockets); over ucx,
  // the side channel only: UCX's own ports belong to UCX -----------------------------------
  const bool tcp = suite_backend() == "tcp";
  const std::uint16_t dp = tcp ? peer->data_port() : 0;
  EXPECT_TRUE(!tcp || dp != 0) << "the peer could not find its tcp data port; that part is not exercised";
  if (dp != 0) {
    {
      Fd s = raw_connect(dp);  // (a) random bytes
      ASSERT_GE(s.fd, 0);
      auto g = random_bytes(rng, 64u << 10);
      send_bytes(s, g.data(), g.size());
      EXPECT_TRUE(server_closes(s, 3s)) << "tcp port kept a connection that sent garbage";
    }
    {
      Fd s = raw_connect(dp);  // (b) a hello header claiming 4 GiB
      ASSERT_GE(s.fd, 0);
      auto h = tcp_header(1, 0, 0xFFFFFFFFull + 1);
      send_bytes(s, h.data(), h.size());
      EXPECT_TRUE(server_closes(s, 3s)) << "tcp port kept a connection announcing 4 GiB";
    }
    {
      Fd s = raw_connect(dp);  // a write before any hello, aimed at the registered buffer
      ASSERT_GE(s.fd, 0);
      auto h = tcp_header(3, peer->address(), 4096);
      auto g = random_bytes(rng, 4096);
      h.insert(h.end(), g.begin(), g.end());
      send_bytes(s, h.data(), h.size());
      EXPECT_TRUE(server_closes(s, 3s)) << "tcp port accepted a write before a hello";
    }
    {
      Fd s = raw_connect(dp);  // a hello with a malformed payload: refused
      ASSERT_GE(s.fd, 0);
      auto g = random_bytes(rng, 10);
      auto h = tcp_header(1, 0, g.size());
      h.insert(h.end(), g.begin(), g.end());
      send_bytes(s, h.data(), h.size());
      EXPECT_TRUE(server_closes(s, 3s)) << "tcp port kept a connection with a malformed hello";
    }
    for (int i = 0; i < 3; ++i) {  // (c) nothing, kept open
      idle.push_back(raw_connect(dp));
      ASSERT_GE(idle.back().fd, 0);
    }
    {
      Fd s = raw_connect(dp);  // (d) a partial header, then close
      ASSERT_GE(s.fd, 0);
      auto h = tcp_header(1, 0, 16);
      send_bytes(s, h.data(), 13);
    }
  }

  // --- the peer is alive and serves a normal initiator ----------------------------------
  EXPECT_EQ(::kill(peer->pid(), 0), 0);
  ASSERT_TRUE(peer->alive()) << "the peer died of garbage on its ports";
  Buffer local(kSize);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  auto name = a->fetch_remote("127.0.0.1", peer->port());
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 0, kSize));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(20s));
  Buffer expected(kSize);
  expected.randomize(19);
  EXPECT_EQ(std::memcmp(local.data(), expected.data(), kSize), 0) << "the garbage changed the peer's memory";
  Inbox inbox(*a);
  KVF_ASSERT_OK(a->notify("peer", "echo still here"));
  auto reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, "still here");
  EXPECT_TRUE(peer->alive());
}

TEST(Failure, RequestOutsideRegisteredMemoryIsRefusedByTarget) {
  constexpr std::size_t kSize = 16u << 20, kPiece = 1u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 10});
  ASSERT_TRUE(peer);
  Buffer local(kPiece);
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);

  // Valid against what the peer announced; then the peer withdraws the memory.
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 4 * kPiece, kPiece));
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote_range(*peer, 8 * kPiece, kPiece));
  TransferOptions o;
  o.notification = "should-not-arrive";
  auto wn = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kPiece), o);
  ASSERT_TRUE(w.ok() && r.ok() && wn.ok());
  KVF_ASSERT_OK(a->notify("peer", "deregister"));
  auto reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  ASSERT_EQ(*reply, "deregistered");

  local.randomize(5);
  for (TransferRequest* t : {&*w, &*r, &*wn}) {
    KVF_ASSERT_OK(t->post());
    Status s = t->wait(10s);
    EXPECT_EQ(s.code(), StatusCode::kRemoteError) << to_string(t->op()) << ": " << s.to_string();
    EXPECT_NE(s.message().find("refused"), std::string::npos) << to_string(t->op()) << ": " << s.to_string();
  }
  // The failed write's notification must not reach the peer (it would answer "got ...").
  auto stray = inbox.next_from("peer", 500ms);
  EXPECT_FALSE(stray) << "the peer received the notification of a refused write: " << *stray;
  EXPECT_EQ(::kill(peer->pid(), 0), 0);
  EXPECT_TRUE(peer->alive());

  // The link still works, and fresh metadata makes the initiator refuse locally.
  KVF_ASSERT_OK(a->notify("peer", "echo ok"));
  reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, "ok");
  auto again = a->fetch_remote("127.0.0.1", peer->port());
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  auto stale = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote_range(*peer, 0, kPiece));
  EXPECT_EQ(stale.status().code(), StatusCode::kOutOfRange) << stale.status().to_string();
}

TEST(Failure, FetchFromClosedPortFailsFast) {
  auto a = make_agent("initiator", suite_backend());
  ASSERT_TRUE(a);

  // A port nobody listens on: bound once to learn a free number, then closed.
  std::uint16_t closed_port = 0;
  {
    Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = loopback(0);
    ASSERT_EQ(::bind(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    socklen_t len = sizeof sa;
    ASSERT_EQ(::getsockname(s.fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
    closed_port = ntohs(sa.sin_port);
  }
  auto t0 = Clock::now();
  auto r = a->fetch_remote("127.0.0.1", closed_port, true, 5s);
  auto took = ms_since(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_LT(took, 1000) << r.status().to_string();

  // A listener that never accepts nor answers: the kernel completes the handshake, the
  // reply never comes.
  Fd silent(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa = loopback(0);
  ASSERT_EQ(::bind(silent.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(silent.fd, 8), 0);
  socklen_t len = sizeof sa;
  ASSERT_EQ(::getsockname(silent.fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const std::uint16_t silent_port = ntohs(sa.sin_port);
  t0 = Clock::now();
  r = a->fetch_remote("127.0.0.1", silent_port, true, 500ms);
  took = ms_since(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout) << r.status().to_string();
  EXPECT_GE(took, 400);
  EXPECT_LT(took, 1500) << r.status().to_string();

  // A server that accepts and answers garbage, and one that accepts and hangs up.
  for (int variant = 0; variant < 2; ++variant) {
    // Connections left in the backlog by the earlier attempts go first.
    for (pollfd p{silent.fd, POLLIN, 0}; ::poll(&p, 1, 0) > 0; p.revents = 0) Fd drained(::accept(silent.fd, nullptr, nullptr));
    std::atomic<bool> done{false};
    std::thread server([&] {
      pollfd p{silent.fd, POLLIN, 0};
      if (::poll(&p, 1, 3000) <= 0) return;
      Fd c(::accept(silent.fd, nullptr, nullptr));
      if (c.fd < 0 || variant == 1) return;  // variant 1: hang up at once
      std::vector<std::uint8_t> g(64, 0x5a);
      send_bytes(c, g.data(), g.size());
      for (int i = 0; i < 300 && !done; ++i) std::this_thread::sleep_for(10ms);
    });
    t0 = Clock::now();
    r = a->fetch_remote("127.0.0.1", silent_port, true, 2s);
    took = ms_since(t0);
    done = true;
    server.join();
    ASSERT_FALSE(r.ok()) << "variant " << variant;
    if (variant == 0) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << r.status().to_string();
    } else {
      EXPECT_NE(r.status().code(), StatusCode::kTimeout) << r.status().to_string();
    }
    EXPECT_LT(took, 1000) << "variant " << variant << ": " << r.status().to_string();
  }
}

}  // namespace
}  // namespace kvferry::testing
