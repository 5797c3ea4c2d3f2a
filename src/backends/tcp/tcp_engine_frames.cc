// TcpEngine: what a received frame means: headers checked against caps and the region
// table, write and read tables, payload completion, notifications and the hello.
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_frame_check.h"
#include "backends/tcp/tcp_session.h"
#include "core/byte_io.h"

namespace kvferry::detail::tcp {
namespace {

constexpr std::size_t kMaxTargetRequests = 1u << 16;

}  // namespace

bool TcpEngine::begin_body(Stream& s, Sink sink, std::uint64_t bytes, bool last) {
  s.sink = sink;
  s.remaining = bytes;
  s.body_is_last = last;
  s.at = SegmentCursor{};
  if (sink == Sink::kBuffer) {
    s.buf.assign(bytes, '\0');
    s.buf_have = 0;
  }
  s.in_body = bytes > 0;
  if (!s.in_body) handle_payload_done(s);
  return true;
}

bool TcpEngine::handle_header(Stream& s) {
  std::memcpy(&s.cur, s.hdr_buf, sizeof(WireHeader));
  const WireHeader& h = s.cur;
  Session* ss = s.session;
  auto protocol_error = [&](const std::string& what) {
    if (ss) return refuse_frame(s, what);
    close_stream(s);  // the pending entry is reaped by check_timeouts
    return false;
  };
  auto message_body = [&](std::uint64_t cap) {
    if (h.len > cap) return protocol_error("payload of " + std::to_string(h.len) + " bytes exceeds its cap");
    return begin_body(s, Sink::kBuffer, h.len, true);
  };
  auto table_body = [&](bool data_follows) {
    if (std::string why = batch_header_error(h, data_follows); !why.empty()) return protocol_error(why);
    return begin_body(s, Sink::kBuffer, std::uint64_t{h.aux} * kSegmentEntryBytes, !data_follows);
  };
  if (h.magic != kMagic) return protocol_error("bad magic");
  const auto type = static_cast<FrameType>(h.type);
  if (!ss) {
    if (s.auth && !s.authenticated) {
      if (type != FrameType::kAuth) return protocol_error("expected the authentication response");
      return message_body(kAuthTagBytes);
    }
    if (type != FrameType::kHello) return protocol_error("expected a hello");
    return message_body(kMaxHelloBytes);
  }
  if (!ss->initiator) {
    switch (type) {
      case FrameType::kWrite: return table_body(true);
      case FrameType::kReadReq: return table_body(false);
      case FrameType::kNotify: return message_body(cfg_.max_notification_bytes);
      case FrameType::kPing: queue_frame(s, make_frame(FrameType::kPong, 0)); return true;
      default: return protocol_error("unexpected frame type " + std::to_string(h.type) + " at target");
    }
  }
  switch (type) {
    case FrameType::kWriteAck:
      if (h.flags & kFlagError) return message_body(kMaxMessageBytes);
      handle_payload_done(s);
      return true;
    case FrameType::kReadData: {
      if (s.reads.empty() || s.reads.front().req != h.req) return protocol_error("read data nobody asked for");
      if (h.flags & kFlagError) return message_body(kMaxMessageBytes);
      PendingRead& pr = s.reads.front();
      if (h.len != pr.bytes) return protocol_error("read data of the wrong length");
      s.segs = std::move(pr.dest);
      return begin_body(s, pr.discard ? Sink::kDiscard : Sink::kDest, h.len, true);
    }
    case FrameType::kNotifyAck:
      if (h.flags & kFlagError) return message_body(kMaxMessageBytes);  // why it was refused
      handle_payload_done(s);
      return true;
    case FrameType::kReqError: return message_body(kMaxMessageBytes);
    case FrameType::kPong: return true;
    default: return protocol_error("unexpected frame type " + std::to_string(h.type) + " at initiator");
  }
}


bool TcpEngine::on_write_table(Stream& s) {
  Session& ss = *s.session;
  const WireHeader& h = s.cur;
  std::uint64_t total = 0;
  std::string outside;
  const std::string malformed = parse_segments(s.buf, inside_fn(), s.segs, total, outside);
  if (!malformed.empty()) return refuse_frame(s, malformed);
  const std::uint64_t data = h.len - s.buf.size();
  if (total != data) return refuse_frame(s, "write segments do not add up to the data length");
  bool ok = outside.empty();
  if (!ok) ss.write_errors.try_emplace(h.req, "write to " + outside + " refused: not inside memory this agent registered");
  if (ok) {
    std::string err = stage_write_to_vram(s);
    if (!err.empty()) {
      ok = false;
      ss.write_errors.try_emplace(h.req, std::move(err));
    }
  }
  if (!ok) s.to_vram.clear();
  return begin_body(s, ok ? Sink::kDest : Sink::kDiscard, data, true);
}

bool TcpEngine::on_read_table(Stream& s) {
  const WireHeader& h = s.cur;
  std::uint64_t total = 0;
  std::string outside;
  OutFrame f = make_frame(FrameType::kReadData, h.req);
  const std::string malformed = parse_segments(s.buf, inside_fn(), f.segments, total, outside);
  if (!malformed.empty()) return refuse_frame(s, malformed);
  if (!outside.empty()) {
    queue_frame(s, make_message_frame(FrameType::kReadData, h.req,
                                      "read of " + outside + " refused: not inside memory this agent registered",
                                      kFlagError));
    return true;
  }
  f.h.len = total;
  queue_read_reply(s, std::move(f));
  return true;
}

InsideFn TcpEngine::inside_fn() const {
  return [this](std::uint64_t a, std::uint64_t l) { return find_region(a, l) != nullptr; };
}

bool TcpEngine::refuse_frame(Stream& s, const std::string& what) {
  // The peer is broken or hostile: it hears why (a kReqError for the frame's request, if
  // no frame of ours is half sent on this stream), then the session ends.
  const std::string why = "protocol error from peer: " + what;
  if (!s.session->initiator && (s.out.empty() || s.out.front().sent == 0)) {
    const OutFrame f = make_message_frame(FrameType::kReqError, s.cur.req, why);
    iovec iov[2] = {{const_cast<WireHeader*>(&f.h), sizeof f.h}, {const_cast<char*>(f.prefix.data()), f.prefix.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    (void)::sendmsg(s.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  fail_session(*s.session, Corrupt(why));
  return false;
}

void TcpEngine::handle_payload_done(Stream& s) {
  const WireHeader& h = s.cur;
  Session* ss = s.session;
  const auto type = static_cast<FrameType>(h.type);
  if (!ss) return process_hello(s);
  switch (type) {
    case FrameType::kWrite: {
      if (!s.body_is_last) {  // the table arrived; now its data
        on_write_table(s);
        return;
      }
      bool landed = s.sink == Sink::kDest;
      if (!s.to_vram.empty()) {
        std::string err = land_staged_write(s);
        if (!err.empty()) {
          landed = false;
          ss->write_errors.try_emplace(h.req, std::move(err));
        }
      }
      if (h.flags & kFlagNotify) {
        auto& tr = ss->target_requests[h.req];
        tr.received += h.len - std::uint64_t{h.aux} * kSegmentEntryBytes;
        if (!landed) tr.failed = true;
      }
      if (h.flags & kFlagLast) {
        auto err = ss->write_errors.find(h.req);
        if (err == ss->write_errors.end()) {
          queue_frame(s, make_frame(FrameType::kWriteAck, h.req));
        } else {
          queue_frame(s, make_message_frame(FrameType::kWriteAck, h.req, err->second, kFlagError));
          ss->write_errors.erase(err);
        }
      }
      if (h.flags & kFlagNotify) deliver_pending_notify(*ss, h.req);
      return;
    }
    case FrameType::kReadReq: on_read_table(s); return;
    case FrameType::kNotify: {
      if (h.req == 0) {  // standalone: nobody waits for it; a refusal is counted by the inbox
        (void)cfg_.deliver(ss->peer_session->peer(), std::move(s.buf));
        return;
      }
      if (ss->target_requests.size() >= kMaxTargetRequests && !ss->target_requests.count(h.req))
        ss->target_requests.erase(ss->target_requests.begin());  // bound what a peer can make us keep
      auto& tr = ss->target_requests[h.req];
      tr.expected = h.addr;
      tr.has_message = true;
      tr.message = std::move(s.buf);
      deliver_pending_notify(*ss, h.req);
      return;
    }
    case FrameType::kWriteAck: {
      auto it = ss->requests.find(h.req);
      if (it == ss->requests.end()) return;  // cancelled meanwhile
      if (h.flags & kFlagError) it->second.error = RemoteError(s.buf);
      if (it->second.acks_pending > 0) it->second.acks_pending--;
      return maybe_finish(*ss, h.req);
    }
    case FrameType::kReadData: {
      s.reads.pop_front();
      auto it = ss->requests.find(h.req);
      if (it == ss->requests.end()) return;
      if (h.flags & kFlagError) it->second.error = RemoteError(s.buf);
      it->second.reads_pending--;
      return maybe_finish(*ss, h.req);
    }
    case FrameType::kNotifyAck: {  // with kFlagError, the payload says why the inbox refused it
      std::string_view refusal = h.aux != 0 ? "the transfer failed there" : "";
      if (h.flags & kFlagError) refusal = s.buf.empty() ? std::string_view("no reason given") : s.buf;
      return ss->peer_session->on_answer(h.req, refusal);
    }
    case FrameType::kReqError: return abort_request(*ss, h.req, RemoteError(s.buf));
    default: return;
  }
}

void TcpEngine::deliver_pending_notify(Session& ss, std::uint64_t req) {
  auto it = ss.target_requests.find(req);
  if (it == ss.target_requests.end()) return;
  TargetRequest& tr = it->second;
  if (!tr.has_message || tr.received < tr.expected) return;
  // Every byte of the transfer has landed (all streams): now the message may be seen.
  Status kept = tr.failed ? Status::Ok() : cfg_.deliver(ss.peer_session->peer(), std::move(tr.message));
  Stream& s0 = *ss.streams.front();
  if (!kept.ok())  // the inbox refused it: the initiator's request fails with the reason
    queue_frame(s0, make_message_frame(FrameType::kNotifyAck, req, kept.message(), kFlagError));
  else
    queue_frame(s0, make_frame(FrameType::kNotifyAck, req, 0, tr.failed ? 1 : 0));
  ss.target_requests.erase(it);
}

void TcpEngine::process_hello(Stream& s) {
  const std::string where = "agent '" + cfg_.agent_name + "', tcp";
  auto send_now = [&](const OutFrame& f) {  // a pending stream has no send queue; the socket buffer is empty
    ::send(s.fd.get(), &f.h, sizeof f.h, MSG_NOSIGNAL | MSG_DONTWAIT);
    ::send(s.fd.get(), f.prefix.data(), f.prefix.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  };
  if (s.auth && !s.authenticated) {  // the initiator's proof: then the hello it answers
    Status ok = s.auth->verify({reinterpret_cast<const std::uint8_t*>(s.buf.data()), s.buf.size()}, where);
    if (!ok.ok()) {
      send_now(make_message_frame(FrameType::kHelloAck, 0, ok.message(), kFlagError));
      close_stream(s);  // the pending entry is reaped by check_timeouts
      return;
    }
    s.authenticated = true;
    s.buf = std::move(s.hello);
  }
  ByteReader r({reinterpret_cast<const std::uint8_t*>(s.buf.data()), s.buf.size()});
  std::uint32_t version = r.u32();
  std::uint64_t session_id = r.u64();
  std::uint32_t index = r.u32();
  std::uint32_t count = r.u32();
  std::string target = r.str(r.u16());
  std::string from = r.str(r.u16());
  auto owned = std::find_if(pending_.begin(), pending_.end(), [&](const auto& p) { return p.get() == &s; });
  auto refuse = [&](const std::string& why) {
    send_now(make_message_frame(FrameType::kHelloAck, 0, why, kFlagError));
    close_stream(s);  // the pending entry is reaped by check_timeouts
  };
  const bool offered = r.remaining() == kAuthNonceBytes;  // the initiator authenticates
  if (!r.ok() || version != kProtocolVersion || count == 0 || count > 64 || index >= count || from.empty() ||
      (r.remaining() != 0 && !offered))
    return refuse("malformed hello");
  if (target != cfg_.agent_name)
    return refuse("this is agent '" + cfg_.agent_name + "', not '" + target + "'");
  if (Status agree = auth_agreement(cfg_.secret != nullptr, offered, where); !agree.ok())
    return refuse(agree.message());
  if (cfg_.secret && !s.authenticated) {  // challenge; the hello is processed after the proof
    const std::span<const std::uint8_t> hello(reinterpret_cast<const std::uint8_t*>(s.buf.data()), s.buf.size());
    s.auth = std::make_unique<TargetAuth>(cfg_.secret, "tcp");
    std::vector<std::uint8_t> challenge = s.auth->challenge(hello, hello.last(kAuthNonceBytes));
    send_now(make_message_frame(FrameType::kChallenge, 0, std::string(challenge.begin(), challenge.end())));
    s.hello = std::move(s.buf);
    s.buf.clear();
    return;
  }
  if (owned == pending_.end()) return;
  Session* ss;
  auto known = accepted_by_remote_.find(session_id);
  if (known != accepted_by_remote_.end()) {
    ss = sessions_.at(known->second).get();
    if (ss->peer_session->peer() != from || ss->streams.size() >= count) return refuse("inconsistent hello");
  } else {
    auto fresh = std::make_unique<Session>();
    fresh->key = next_local_key_++;
    fresh->initiator = false;
    fresh->peer_session = new_peer_session(*fresh, from);
    fresh->remote_id = session_id;
    ss = fresh.get();
    accepted_by_remote_[session_id] = fresh->key;
    sessions_[fresh->key] = std::move(fresh);
  }
  std::unique_ptr<Stream> st = std::move(*owned);
  pending_.erase(owned);
  st->session = ss;
  queue_frame(*st, make_frame(FrameType::kHelloAck, 0));
  ss->streams.push_back(std::move(st));
}

}  // namespace kvferry::detail::tcp
