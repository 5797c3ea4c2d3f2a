// The tcp backend's strided segment tables (backends/tcp/tcp_wire.h) against a real peer
// process, spoken by hand on a raw socket: a strided entry lands every unit and nothing
// else; a hostile table (an entry past the region, a stride x count that overflows, more
// units than the cap, a zero unit, a stride below its unit, too many entries) is refused
// with the exact error, and not one byte of the peer's memory changes. And pieces of two
// regions that lie at one stride, which the sender makes one entry, land exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "backends/tcp/tcp_wire.h"
#include "peer_test_util.h"
#include "raw_tcp.h"
#include "test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using detail::tcp::FrameType;
using detail::tcp::WireHeader;
using detail::tcp::WireSegment;

constexpr std::uint64_t kPeerBytes = 1u << 20;
constexpr std::uint64_t kSeed = 41;

// A raw stream to the peer's tcp backend, past its hello.
std::unique_ptr<Sock> open_stream(const PeerProcess& peer, std::uint64_t session) {
  auto s = std::make_unique<Sock>(peer.data_port());
  EXPECT_GE(s->fd, 0);
  s->put(tcp_frame(FrameType::kHello, tcp_hello(peer.name(), "forger", session)));
  auto [ack, why] = tcp_reply(*s);
  EXPECT_EQ(ack.type, static_cast<std::uint8_t>(FrameType::kHelloAck));
  EXPECT_EQ(ack.flags & detail::tcp::kFlagError, 0) << std::string(why.begin(), why.end());
  return s;
}

// A write frame of request `req`: header, table, then `data` bytes (none: the table only).
std::vector<std::uint8_t> write_frame(std::uint64_t req, const std::vector<WireSegment>& table,
                                      std::uint64_t data_len, std::uint64_t data_sent, std::uint32_t aux = 0) {
  WireHeader h;
  h.type = static_cast<std::uint8_t>(FrameType::kWrite);
  h.flags = detail::tcp::kFlagLast;
  h.req = req;
  h.aux = aux ? aux : static_cast<std::uint32_t>(table.size());
  h.len = table.size() * sizeof(WireSegment) + data_len;
  std::vector<std::uint8_t> out(sizeof h + table.size() * sizeof(WireSegment));
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, table.data(), table.size() * sizeof(WireSegment));
  for (std::uint64_t i = 0; i < data_sent; ++i) out.push_back(static_cast<std::uint8_t>(0xA0 + i % 13));
  return out;
}

std::string text(const std::vector<std::uint8_t>& b) { return std::string(b.begin(), b.end()); }

// The peer's whole buffer, read by a genuine agent.
std::vector<std::uint8_t> read_back(const PeerProcess& peer) {
  Buffer back(kPeerBytes, 0xEE);  // outlives the agent (declared first)
  auto a = make_agent("reader", "tcp");
  if (!a || !a->register_memory(back.whole()).ok() || !a->fetch_remote("127.0.0.1", peer.port()).ok()) return {};
  auto r = a->create_transfer(TransferOp::kRead, back.whole(), peer.name(), remote_range(peer, 0, kPeerBytes));
  if (!r.ok() || !r->post().ok() || !r->wait(20s).ok()) return {};
  return std::vector<std::uint8_t>(back.data(), back.data() + kPeerBytes);
}

std::vector<std::uint8_t> original() {
  Buffer b(kPeerBytes);
  b.randomize(kSeed);
  return std::vector<std::uint8_t>(b.data(), b.data() + kPeerBytes);
}

TEST(TcpSegmentTable, StridedEntryLandsEveryUnitAndNothingElse) {
  if (suite_backend() != "tcp") GTEST_SKIP() << "tcp only";
  auto peer = spawn_peer({.name = "target", .size = kPeerBytes, .seed = kSeed});
  ASSERT_TRUE(peer && peer->data_port() != 0);
  const std::uint64_t base = peer->address() + 4096;
  // 100 rows of 512 B every 1 KiB, then one 3-byte unit: two entries, 51,203 bytes.
  const std::vector<WireSegment> table = {{base, 512, 1024, 100}, {base + 200 * 1024, 3, 0, 1}};
  const std::uint64_t data = 512 * 100 + 3;
  auto s = open_stream(*peer, 1);
  s->put(write_frame(7, table, data, data));
  auto [ack, why] = tcp_reply(*s);
  EXPECT_EQ(ack.type, static_cast<std::uint8_t>(FrameType::kWriteAck));
  EXPECT_EQ(ack.req, 7u);
  EXPECT_EQ(ack.flags & detail::tcp::kFlagError, 0) << text(why);

  std::vector<std::uint8_t> want = original();
  std::uint64_t i = 0;
  for (std::uint64_t k = 0; k < 100; ++k)
    for (std::uint64_t b = 0; b < 512; ++b, ++i) want[4096 + k * 1024 + b] = static_cast<std::uint8_t>(0xA0 + i % 13);
  for (std::uint64_t b = 0; b < 3; ++b, ++i) want[4096 + 200 * 1024 + b] = static_cast<std::uint8_t>(0xA0 + i % 13);
  EXPECT_TRUE(read_back(*peer) == want);
}

TEST(TcpSegmentTable, HostileTablesAreRefusedAndNoByteIsWritten) {
  if (suite_backend() != "tcp") GTEST_SKIP() << "tcp only";
  auto peer = spawn_peer({.name = "target", .size = kPeerBytes, .seed = kSeed});
  ASSERT_TRUE(peer && peer->data_port() != 0);
  const std::uint64_t base = peer->address();
  char where[64];
  std::snprintf(where, sizeof where, "0x%llx", static_cast<unsigned long long>(base));

  {  // Past the region by its last unit: the request fails, the session stays.
    auto s = open_stream(*peer, 2);
    const std::uint64_t data = 512 * 1025;
    s->put(write_frame(3, {{base, 512, 1024, 1025}}, data, data));
    auto [ack, why] = tcp_reply(*s);
    EXPECT_EQ(ack.type, static_cast<std::uint8_t>(FrameType::kWriteAck));
    EXPECT_NE(ack.flags & detail::tcp::kFlagError, 0);
    EXPECT_EQ(text(why), std::string("write to [") + where +
                             ", +512) x 1025, stride 1024 refused: not inside memory this agent registered");
    s->put(tcp_frame(FrameType::kPing, {}));  // the session still answers
    EXPECT_EQ(tcp_reply(*s).first.type, static_cast<std::uint8_t>(FrameType::kPong));
  }
  struct Case {
    const char* what;
    std::vector<WireSegment> table;
    std::uint64_t data;
    std::uint32_t aux;
    std::string error;
  };
  const Case cases[] = {
      {"stride x count overflows", {{base, 512, std::uint64_t{1} << 62, 8}}, 4096, 0,
       "segment table entry 0: extent overflows"},
      {"more units than the cap (iovecs)", {{base, 1, 2, detail::tcp::kMaxFrameUnits}, {base + 4, 1, 0, 1}},
       detail::tcp::kMaxFrameUnits + 1, 0, "segment table entry 1: more units in the frame than its cap"},
      {"zero unit", {{base, 0, 512, 4}}, 1, 0, "segment table entry 0: empty unit or count"},
      {"stride below its unit", {{base, 512, 100, 2}}, 1024, 0, "segment table entry 0: stride below its unit"},
      {"segments not adding up to the data", {{base, 512, 1024, 2}}, 1000, 0,
       "write segments do not add up to the data length"},
      {"more entries than the cap", {{base, 512, 0, 1}}, 512, detail::tcp::kMaxSegments + 1,
       "batch frame with bad segment count or length"},
  };
  std::uint64_t session = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto s = open_stream(*peer, session++);
    // The table only: the peer refuses it before any data (none left unread at its close).
    std::vector<std::uint8_t> f = write_frame(5, c.table, c.data, 0, c.aux);
    if (c.aux) f.resize(sizeof(WireHeader));  // refused on its header
    s->put(f);
    auto [h, why] = tcp_reply(*s);
    EXPECT_EQ(h.type, static_cast<std::uint8_t>(FrameType::kReqError));
    EXPECT_EQ(h.req, 5u);
    EXPECT_EQ(text(why), "protocol error from peer: " + c.error);
    EXPECT_EQ(tcp_reply(*s).first.magic, 0) << "the session should have ended";
  }
  EXPECT_TRUE(peer->alive());
  EXPECT_TRUE(read_back(*peer) == original()) << "a refused table changed the peer's memory";
}

// Pieces into two registered regions at one fixed distance travel as one strided entry
// whose extent spans both regions and the gap between them: the target checks it unit
// by unit and lands both; reading them back goes the same way.
TEST(TcpSegmentTable, PiecesOfTwoRegionsAtOneStrideLand) {
  // The memory outlives the agents: the target's loop may still be inside the sendmsg of
  // the read's reply (as TSan sees it) when the initiator already has the bytes.
  Buffer local(3 * 4096), back(3 * 4096, 0xEE), r1(4096, 0x11), r2(4096, 0x22), r3(4096, 0x33);
  auto a = make_agent("initiator", "tcp");
  auto b = make_agent("target", "tcp");
  ASSERT_TRUE(a && b);
  local.randomize(5);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  KVF_ASSERT_OK(a->register_memory(back.whole()));
  std::vector<Buffer*> regions = {&r1, &r2, &r3};
  std::sort(regions.begin(), regions.end(), [](Buffer* x, Buffer* y) { return x->addr() < y->addr(); });
  for (Buffer* r : regions) KVF_ASSERT_OK(b->register_memory(r->whole()));
  introduce(*a, *b);
  // Units 0 and 2 of an arithmetic progression: the lowest region and one at twice the
  // distance to the middle one would be needed for three; two always form one.
  DescriptorList remote(MemoryKind::kDram, {Descriptor{regions[0]->addr(), 4096, 0}, Descriptor{regions[2]->addr(), 4096, 0}});
  DescriptorList src(MemoryKind::kDram, {Descriptor{local.addr(0), 4096, 0}, Descriptor{local.addr(8192), 4096, 0}});
  auto w = a->create_transfer(TransferOp::kWrite, src, "target", remote);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  KVF_ASSERT_OK(w->post());
  KVF_ASSERT_OK(w->wait(10s));
  EXPECT_EQ(std::memcmp(regions[0]->data(), local.data(), 4096), 0);
  EXPECT_EQ(std::memcmp(regions[2]->data(), local.data() + 8192, 4096), 0);
  EXPECT_EQ(regions[1]->data()[0], regions[1] == &r1 ? 0x11 : regions[1] == &r2 ? 0x22 : 0x33);
  DescriptorList dst(MemoryKind::kDram, {Descriptor{back.addr(0), 4096, 0}, Descriptor{back.addr(8192), 4096, 0}});
  auto r = a->create_transfer(TransferOp::kRead, dst, "target", remote);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(r->post());
  KVF_ASSERT_OK(r->wait(10s));
  EXPECT_EQ(std::memcmp(back.data(), local.data(), 4096), 0);
  EXPECT_EQ(std::memcmp(back.data() + 8192, local.data() + 8192, 4096), 0);
  EXPECT_EQ(back.data()[4096], 0xEE);
}

}  // namespace
}  // namespace kvferry::testing
