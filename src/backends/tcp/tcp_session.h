// Per-session and per-stream state of the tcp engine (under the engine's lock).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_frame_check.h"
#include "backends/tcp/tcp_segments.h"
#include "backends/tcp/tcp_wire.h"
#include "core/device_stager.h"
#include "core/peer_auth.h"
#include "core/peer_session.h"
#include "core/socket_util.h"
#include "core/transfer_job.h"

namespace kvferry::detail::tcp {


struct OutFrame {
  WireHeader h;
  std::string prefix;             // follows the header: a message or a segment table
  std::vector<Segment> segments;  // then these bytes (user or registered memory)
  SegmentCursor at;               // how far into `segments` the sent bytes reach
  std::shared_ptr<std::uint8_t> staged;  // pinned copy of vram that `segments` point into
  std::uint64_t staged_bytes = 0;          // its size (counted against the stream's cap)
  std::uint64_t sent = 0;         // bytes of the whole frame already sent
  std::uint64_t total() const { return sizeof(WireHeader) + h.len; }
};

inline OutFrame make_frame(FrameType type, std::uint64_t req, std::uint64_t addr = 0, std::uint32_t aux = 0) {
  OutFrame f;
  f.h.type = static_cast<std::uint8_t>(type);
  f.h.req = req;
  f.h.addr = addr;
  f.h.aux = aux;
  return f;
}

// A frame whose payload is an owned message (notification text, error text).
inline OutFrame make_message_frame(FrameType type, std::uint64_t req, std::string message, std::uint8_t flags = 0) {
  OutFrame f = make_frame(type, req);
  f.h.flags = flags;
  f.prefix = std::move(message);
  f.h.len = f.prefix.size();
  return f;
}

enum class Sink { kDest, kDiscard, kBuffer };

// Bytes received into a stream's bounce buffer that belong in vram.
struct VramLanding {
  int device;
  StageItem copy;  // bounce -> vram
};

struct PendingRead {
  std::uint64_t req;
  std::vector<Segment> dest;
  std::uint64_t bytes;
  bool discard = false;
};

struct Stream {
  UniqueFd fd;
  Reactor::Id watch = 0;       // the reactor's watch of fd (0: none)
  Session* session = nullptr;  // null until its hello (accepted side)
  std::uint32_t events = 0;    // epoll interest currently set
  std::deque<OutFrame> out;
  // Receive: a header, then zero or more bodies (a segment table, then data).
  std::uint8_t hdr_buf[sizeof(WireHeader)];
  std::size_t hdr_have = 0;
  WireHeader cur;
  bool in_body = false;
  bool body_is_last = true;  // false while reading a table that data will follow
  Sink sink = Sink::kDiscard;
  std::vector<Segment> segs;  // kDest: where the data lands
  SegmentCursor at;           // kDest: how far into `segs` the received bytes reach
  // Data for vram lands in `bounce` first; these copies finish it (tcp_vram.cc).
  PinnedBuffer bounce;
  std::vector<VramLanding> to_vram;
  // Read replies wait here, in order, while the staged ones queued in `out` hold more
  // than the cap: vram is copied out only as fast as the socket drains (tcp_vram.cc).
  std::deque<OutFrame> deferred_reads;
  std::uint64_t staged_queued = 0;
  std::uint64_t remaining = 0;
  std::string buf;  // kBuffer
  std::uint64_t buf_have = 0;
  std::deque<PendingRead> reads;  // initiator: read replies expected, in order
  Clock::time_point created = Clock::now();
  std::string address;  // remote IP of an accepted stream (connection slots)
  // Accepted side with a shared secret: the handshake after the hello's challenge, and
  // the hello itself, processed once the initiator's proof checks out.
  std::unique_ptr<TargetAuth> auth;
  std::string hello;
  bool authenticated = false;
};

// A job whose bytes are still moving. Once they are all acknowledged it goes to the
// PeerSession (settle), which finishes it or keeps it until its notification's answer.
struct InitiatorRequest {
  std::shared_ptr<TransferJob> job;
  std::uint32_t acks_pending = 0;
  std::uint64_t reads_pending = 0;
  Status error;
};

struct TargetRequest {
  std::uint64_t received = 0;
  std::uint64_t expected = 0;
  bool failed = false;
  bool has_message = false;
  std::string message;
};

struct Session {
  std::uint64_t key = 0;
  bool initiator = false;
  // Health, request ids, answers awaited, activity: the core's part (an initiator's
  // connection holds it too, for health). Every fail() of it runs under the engine's lock
  // (fail_session), so its on_lost releases this session's sockets and jobs there.
  std::shared_ptr<PeerSession> peer_session;
  std::uint64_t remote_id = 0;
  std::vector<std::unique_ptr<Stream>> streams;
  std::uint32_t next_stream = 0;
  std::unordered_map<std::uint64_t, InitiatorRequest> requests;
  std::unordered_map<const TransferJob*, std::uint64_t> req_of_job;
  std::unordered_map<std::uint64_t, TargetRequest> target_requests;
  std::unordered_map<std::uint64_t, std::string> write_errors;
};

}  // namespace kvferry::detail::tcp
