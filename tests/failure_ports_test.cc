// Failure suite, hostile or absent endpoints: garbage on the listening ports leaves the
// agent healthy; requests outside registered memory are refused by the target, move no
// byte and deliver no notification; a closed side-channel port fails fast. Over backends
// linking agents of one process, the target is an agent (or a file) of ours.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <random>
#include <thread>

#include "failure_util.h"
#include "file_test_util.h"

namespace kvferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Garbage of every kind on a side channel; connections that must stay open (silent
// ones) go to `idle`.
void side_channel_garbage(std::uint16_t port, std::mt19937_64& rng, std::vector<Fd>& idle) {
  // --- side channel --------------------------------------------------------------------
  {
    Fd s = raw_connect(port);  // (a) random bytes
    ASSERT_GE(s.fd, 0);
    auto g = random_bytes(rng, 64u << 10);
    send_bytes(s, g.data(), g.size());
    EXPECT_TRUE(server_closes(s, 3s)) << "side channel kept a connection that sent garbage";
  }
  {
    Fd s = raw_connect(port);  // (b) a valid header claiming a 4 GiB payload
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 0xFFFFFFFFu);
    send_bytes(s, h.data(), h.size());
    auto g = random_bytes(rng, 4096);
    send_bytes(s, g.data(), g.size());
    EXPECT_TRUE(server_closes(s, 3s)) << "side channel kept a connection announcing 4 GiB";
  }
  {
    Fd s = raw_connect(port);  // (b') at the cap, then only part of it, then close
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 16u << 20);
    send_bytes(s, h.data(), h.size());
    auto g = random_bytes(rng, 1u << 20);
    send_bytes(s, g.data(), g.size());
  }
  // The side channel answers a malformed request with one 12-byte error frame (type 5).
  auto expect_error_frame = [](const Fd& s) {
    std::uint8_t reply[12] = {};
    ssize_t n = ::recv(s.fd, reply, sizeof reply, MSG_WAITALL);
    EXPECT_EQ(n, 12);
    if (n == 12) {
      EXPECT_EQ(reply[4], 5) << "expected an error frame";
    }
  };
  {
    Fd s = raw_connect(port);  // unknown frame type
    ASSERT_GE(s.fd, 0);
    auto h = side_header(77, 0);
    send_bytes(s, h.data(), h.size());
    EXPECT_TRUE(server_closes(s, 3s));
  }
  {
    Fd s = raw_connect(port);  // a truncated notify: answered with an error frame
    ASSERT_GE(s.fd, 0);
    auto h = side_header(3, 1);
    h.push_back(0x7f);
    send_bytes(s, h.data(), h.size());
    expect_error_frame(s);
  }
  {
    Fd s = raw_connect(port);  // a fetch whose pushed "metadata" is garbage
    ASSERT_GE(s.fd, 0);
    auto g = random_bytes(rng, 300);
    auto h = side_header(1, static_cast<std::uint32_t>(g.size()));
    h.insert(h.end(), g.begin(), g.end());
    send_bytes(s, h.data(), h.size());
    expect_error_frame(s);
  }
  for (int i = 0; i < 3; ++i) {  // (c) nothing, kept open
    idle.push_back(raw_connect(port));
    ASSERT_GE(idle.back().fd, 0);
  }
  {
    Fd s = raw_connect(port);  // (d) a partial header, then close
    ASSERT_GE(s.fd, 0);
    auto h = side_header(1, 0);
    send_bytes(s, h.data(), 6);
  }

}

// Over a backend linking agents of one process: the garbage goes to the side channel of
// an agent of ours, which then still serves fetches, notifications and transfers.
void garbage_in_process_case(const Failure& f) {
  constexpr std::size_t kSize = 16u << 20;
  Buffer local(kSize), target_memory(kSize);  // outlive the agents (declared first)
  target_memory.randomize(19);
  ScratchDir dir;
  // The target: another agent, or (own files) the initiator itself.
  const bool own = f.caps().own_files;
  auto a = f.make_agent(own ? "solo" : "initiator");
  auto other = f.make_agent(own ? "visitor" : "target");
  ASSERT_TRUE(a && other);
  Agent& target = own ? *a : *other;
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  DescriptorList remote = target_memory.whole();
  if (own) {
    FileOpenOptions fo;
    fo.create = fo.truncate = true;
    fo.capacity = kSize;
    auto file = a->register_file(dir.file("store"), fo);
    ASSERT_TRUE(file.ok()) << file.status().to_string();
    remote = file->region();
    KVF_ASSERT_OK(a->register_memory(target_memory.whole()));
    auto fill = a->create_transfer(TransferOp::kWrite, target_memory.whole(), "solo", remote);
    ASSERT_TRUE(fill.ok()) << fill.status().to_string();
    KVF_ASSERT_OK(f.run_until_done(*fill, 20s));
  } else {
    KVF_ASSERT_OK(target.register_memory(target_memory.whole()));
  }
  auto port = target.listen("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  std::mt19937_64 rng(19);
  std::vector<Fd> idle;
  ASSERT_NO_FATAL_FAILURE(side_channel_garbage(*port, rng, idle));

  // The side channel still answers: the other agent fetches the target's metadata, and a
  // notification through it arrives.
  Agent& fetcher = own ? *other : *a;
  auto name = fetcher.fetch_remote("127.0.0.1", *port);
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  EXPECT_EQ(*name, target.name());
  const std::string peer_name = own ? "solo" : "target";
  if (!own) {
    Inbox inbox(target);
    KVF_ASSERT_OK(a->notify(peer_name, "still here?"));
    auto got = inbox.next_from(a->name(), 5s);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, "still here?");
  }
  // And the backend still moves the right bytes.
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), peer_name, remote);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(f.run_until_done(*r, 20s));
  Buffer expected(kSize);
  expected.randomize(19);
  EXPECT_EQ(std::memcmp(local.data(), expected.data(), kSize), 0) << "the garbage changed the target's memory";
}

TEST_P(Failure, GarbageOnListeningPortsLeavesAgentHealthy) {
  if (!caps().peer_process) return garbage_in_process_case(*this);
  constexpr std::size_t kSize = 16u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 19});
  ASSERT_TRUE(peer);
  std::mt19937_64 rng(19);
  std::vector<Fd> idle;  // (c): connected, silent, held open through the health check
  ASSERT_NO_FATAL_FAILURE(side_channel_garbage(peer->port(), rng, idle));

  // --- the data port (found by the peer scanning its own listening sockets), where it
  // speaks tcp frames; other backends' ports (UCX's) belong to their libraries -------------
  const bool frames = GetParam().tcp_frames;
  const std::uint16_t dp = frames ? peer->data_port() : 0;
  EXPECT_TRUE(!frames || dp != 0) << "the peer could not find its data port; that part is not exercised";
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
  auto local = local_memory(kSize);
  ASSERT_TRUE(local);
  auto a = make_agent("initiator");
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local->whole()));
  auto name = a->fetch_remote("127.0.0.1", peer->port());
  ASSERT_TRUE(name.ok()) << name.status().to_string();
  auto r = a->create_transfer(TransferOp::kRead, local->whole(), "peer", remote(*peer, 0, kSize));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  KVF_ASSERT_OK(run_until_done(*r, 20s));
  Buffer expected(kSize);
  expected.randomize(19);
  EXPECT_TRUE(SameBytes(local->bytes(), std::vector<std::uint8_t>(expected.data(), expected.data() + kSize)))
      << "the garbage changed the peer's memory";
  Inbox inbox(*a);
  KVF_ASSERT_OK(a->notify("peer", "echo still here"));
  auto reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, "still here");
  EXPECT_TRUE(peer->alive());
}

// A request refused: an error naming the refusal (at post or at wait: a backend may learn
// of the withdrawal before it sends), or, with faults on, an injected fault first.
void expect_refused(const Failure& f, TransferRequest& t) {
  Status s = t.post();
  if (s.ok()) s = t.wait(10s);
  if (f.injected(s)) return;
  EXPECT_EQ(s.code(), StatusCode::kRemoteError) << to_string(t.op()) << ": " << s.to_string();
  EXPECT_NE(s.message().find("refused"), std::string::npos) << to_string(t.op()) << ": " << s.to_string();
}

// Over a backend linking agents of one process: the target is an agent of ours.
void refused_in_process_case(const Failure& f) {
  constexpr std::size_t kSize = 16u << 20, kPiece = 1u << 20;
  Buffer local(kPiece);
  Buffer target_memory(kSize);  // outlives both agents (declared first)
  target_memory.randomize(10);
  auto a = f.make_agent("initiator");
  auto target = f.make_agent("target");
  ASSERT_TRUE(a && target);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  KVF_ASSERT_OK(target->register_memory(target_memory.whole()));
  ASSERT_NO_FATAL_FAILURE(introduce(*a, *target));
  auto range = [&](std::uint64_t offset) {
    return DescriptorList(MemoryKind::kDram, {Descriptor{target_memory.addr(offset), kPiece, 0}});
  };
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "target", range(4 * kPiece));
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "target", range(8 * kPiece));
  TransferOptions o;
  o.notification = "should-not-arrive";
  auto wn = a->create_transfer(TransferOp::kWrite, local.whole(), "target", range(0), o);
  ASSERT_TRUE(w.ok() && r.ok() && wn.ok());
  KVF_ASSERT_OK(target->deregister_memory(target_memory.whole()));

  local.randomize(5);
  for (TransferRequest* t : {&*w, &*r, &*wn}) expect_refused(f, *t);
  Buffer expected_local(kPiece), expected_target(kSize);
  expected_local.randomize(5);
  expected_target.randomize(10);
  EXPECT_EQ(std::memcmp(local.data(), expected_local.data(), kPiece), 0) << "a refused read changed our memory";
  EXPECT_EQ(std::memcmp(target_memory.data(), expected_target.data(), kSize), 0) << "a refused write landed";
  EXPECT_FALSE(target->wait_for_notifications(300ms)) << "the target received the notification of a refused write";

  // Fresh metadata makes the initiator refuse locally.
  ASSERT_NO_FATAL_FAILURE(introduce(*a, *target));
  auto stale = a->create_transfer(TransferOp::kWrite, local.whole(), "target", range(0));
  EXPECT_EQ(stale.status().code(), StatusCode::kOutOfRange) << stale.status().to_string();
}

// Over a backend whose targets are the agent's own files: a request made while the file
// was registered fails once the file is deregistered, without touching our memory.
void refused_own_file_case(const Failure& f) {
  constexpr std::size_t kPiece = 1u << 20;
  ScratchDir dir;
  Buffer local(kPiece);
  auto a = f.make_agent("solo");
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  FileOpenOptions fo;
  fo.create = fo.truncate = true;
  fo.capacity = 4 * kPiece;
  auto file = a->register_file(dir.file("store"), fo);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  auto piece = [&](std::uint64_t offset) {
    return DescriptorList(MemoryKind::kFile, {Descriptor{offset, kPiece, file->id}});
  };
  local.randomize(6);
  auto fill = a->create_transfer(TransferOp::kWrite, local.whole(), "solo", piece(0));
  ASSERT_TRUE(fill.ok()) << fill.status().to_string();
  KVF_ASSERT_OK(f.run_until_done(*fill, 10s));
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "solo", piece(kPiece));
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "solo", piece(0));
  ASSERT_TRUE(w.ok() && r.ok());
  KVF_ASSERT_OK(a->deregister_file(file->id));

  local.randomize(5);
  for (TransferRequest* t : {&*w, &*r}) {
    Status s = t->post();
    if (s.ok()) s = t->wait(10s);
    EXPECT_FALSE(s.ok()) << to_string(t->op()) << " of a deregistered file succeeded";
    if (!f.injected(s)) {
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << to_string(t->op()) << ": " << s.to_string();
    }
  }
  Buffer expected_local(kPiece);
  expected_local.randomize(5);
  EXPECT_EQ(std::memcmp(local.data(), expected_local.data(), kPiece), 0) << "a refused read changed our memory";
  const std::vector<std::uint8_t> on_disk = read_whole_file(dir.file("store"));
  ASSERT_GE(on_disk.size(), 2 * kPiece);
  Buffer first(kPiece);
  first.randomize(6);
  EXPECT_EQ(std::memcmp(on_disk.data(), first.data(), kPiece), 0) << "the file changed after it was deregistered";
  EXPECT_TRUE(std::all_of(on_disk.begin() + kPiece, on_disk.begin() + 2 * kPiece, [](std::uint8_t b) { return b == 0; }))
      << "a write of a deregistered file landed";
}

TEST_P(Failure, RequestOutsideRegisteredMemoryIsRefusedByTarget) {
  if (!caps().peer_process) return caps().own_files ? refused_own_file_case(*this) : refused_in_process_case(*this);
  constexpr std::size_t kSize = 16u << 20, kPiece = 1u << 20;
  auto peer = spawn_peer({.name = "peer", .size = kSize, .seed = 10});
  ASSERT_TRUE(peer);
  auto local_piece = local_memory(kPiece);
  ASSERT_TRUE(local_piece);
  TestMemory& local = *local_piece;
  auto a = make_agent("initiator");
  ASSERT_TRUE(a);
  KVF_ASSERT_OK(a->register_memory(local.whole()));
  ASSERT_TRUE(a->fetch_remote("127.0.0.1", peer->port()).ok());
  Inbox inbox(*a);

  // Valid against what the peer announced; then the peer withdraws the memory.
  auto w = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote(*peer, 4 * kPiece, kPiece));
  auto r = a->create_transfer(TransferOp::kRead, local.whole(), "peer", remote(*peer, 8 * kPiece, kPiece));
  TransferOptions o;
  o.notification = "should-not-arrive";
  auto wn = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote(*peer, 0, kPiece), o);
  ASSERT_TRUE(w.ok() && r.ok() && wn.ok());
  KVF_ASSERT_OK(a->notify("peer", "deregister"));
  auto reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  ASSERT_EQ(*reply, "deregistered");

  local.randomize(5);
  for (TransferRequest* t : {&*w, &*r, &*wn}) expect_refused(*this, *t);
  Buffer expected_local(kPiece);
  expected_local.randomize(5);
  EXPECT_TRUE(SameBytes(local.bytes(), std::vector<std::uint8_t>(expected_local.data(), expected_local.data() + kPiece)))
      << "a refused read changed our memory";
  // The failed write's notification must not reach the peer (it would answer "got ...").
  auto stray = inbox.next_from("peer", 500ms);
  EXPECT_FALSE(stray) << "the peer received the notification of a refused write: " << *stray;
  EXPECT_EQ(::kill(peer->pid(), 0), 0);
  EXPECT_TRUE(peer->alive());

  // The link still works, no refused write landed, and fresh metadata makes the
  // initiator refuse locally.
  KVF_ASSERT_OK(a->notify("peer", "echo ok"));
  reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, "ok");
  Buffer expected_peer(kSize);
  expected_peer.randomize(10);
  KVF_ASSERT_OK(a->notify("peer", "checksum"));
  reply = inbox.next_from("peer", 5s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, checksum_text(expected_peer.data(), kSize)) << "a refused write landed in the peer's memory";
  auto again = a->fetch_remote("127.0.0.1", peer->port());
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  auto stale = a->create_transfer(TransferOp::kWrite, local.whole(), "peer", remote(*peer, 0, kPiece));
  EXPECT_EQ(stale.status().code(), StatusCode::kOutOfRange) << stale.status().to_string();
}

TEST_P(Failure, FetchFromClosedPortFailsFast) {
  auto a = make_agent("initiator");
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
