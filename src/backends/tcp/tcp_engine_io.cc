// TcpEngine: the event loop and the byte-level receive/send paths.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_frame_check.h"
#include "backends/tcp/tcp_session.h"
#include "core/accept_guard.h"
#include "core/byte_io.h"

namespace kvferry::detail::tcp {
namespace {

constexpr int kMaxIov = 64;
constexpr std::size_t kMaxTargetRequests = 1u << 16;
constexpr std::size_t kMaxSendBytes = 8u << 20;
constexpr int kReadBudget = 64;  // receive calls per stream per wake-up, for fairness
constexpr std::size_t kMaxPendingPerAddress = 64;  // accepted streams before their hello
constexpr std::size_t kMaxPending = 256;



}  // namespace

void TcpEngine::loop() {
  epoll_event events[64];
  bool busy = false;  // requests outstanding as of the last iteration
  while (running_) {
    const bool paused = accept_paused_until_ != Clock::time_point{};
    int timeout_ms = busy ? 50 : (paused ? 100 : (pending_.empty() ? 1000 : 200));
    // While requests are outstanding, poll without sleeping for a short window: a reply
    // is usually microseconds away, and a sleeping thread costs a wake-up to reach.
    int n = 0;
    if (busy && cfg_.spin_us > 0) {
      const auto spin_until = Clock::now() + std::chrono::microseconds(cfg_.spin_us);
      while ((n = ::epoll_wait(epoll_.get(), events, 64, 0)) == 0 && Clock::now() < spin_until) {
      }
    }
    if (n == 0) n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    std::lock_guard engine(engine_mu_);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t rc = ::read(wake_.get(), &v, sizeof v);
        run_commands();
        continue;
      }
      if (fd == listener_.get()) {
        on_accept();
        continue;
      }
      auto it = by_fd_.find(fd);
      if (it == by_fd_.end()) continue;
      Stream* s = it->second;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(*s);
      it = by_fd_.find(fd);
      if (it == by_fd_.end() || it->second != s) continue;
      if (events[i].events & EPOLLOUT) on_writable(*s);
    }
    check_timeouts();
    for (std::uint64_t key : dead_sessions_) sessions_.erase(key);
    dead_sessions_.clear();
    busy = false;
    for (auto& [key, ss] : sessions_) busy = busy || !ss->requests.empty();
  }
  std::lock_guard engine(engine_mu_);
  std::lock_guard lock(cmd_mu_);
  stopping_ = true;
  for (auto& c : commands_) c();  // posts fail (sessions gone); syncs are answered
  commands_.clear();
}

void TcpEngine::run_commands() {
  std::vector<Command> cmds;
  {
    std::lock_guard lock(cmd_mu_);
    cmds.swap(commands_);
  }
  for (auto& c : cmds) c();
}

void TcpEngine::on_accept() {
  // Streams before their hello are untrusted: capped per remote address and in total,
  // the oldest making room (a real initiator sends its hello at once).
  auto evict_pending = [&](std::vector<std::unique_ptr<Stream>>::iterator it) {
    close_stream(**it);
    pending_.erase(it);
  };
  for (int k = 0; k < 64; ++k) {  // bounded: then serve the streams we have
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (!out_of_descriptors(errno)) return;
      // Out of descriptors: a silent stream gives one back; with none, stop watching the
      // listener a while (it stays readable: watching it would be a busy loop).
      std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
      if (!pending_.empty()) {
        evict_pending(pending_.begin());
        continue;
      }
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
      accept_paused_until_ = Clock::now() + kAcceptBackoff;
      return;
    }
    set_nodelay(fd).ok();  // latency only
    std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
    std::string address = peer_address(fd);
    static const std::size_t max_pending = descriptor_share(kMaxPending, 4);
    auto evict = slot_to_free(pending_, address, kMaxPendingPerAddress, max_pending,
                              [](const std::unique_ptr<Stream>& p) -> const std::string& { return p->address; });
    if (evict != pending_.end()) evict_pending(evict);
    auto st = std::make_unique<Stream>();
    st->address = std::move(address);
    st->fd = UniqueFd(fd);
    epoll_event ev{};
    ev.events = st->events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
    by_fd_[fd] = st.get();
    pending_.push_back(std::move(st));
  }
}

void TcpEngine::on_readable(Stream& s) {
  auto lost = [&](const Status& why) {
    if (s.session) fail_session(*s.session, why);
    else close_stream(s);  // the pending entry is reaped by check_timeouts
  };
  for (int budget = 0; budget < kReadBudget; ++budget) {
    iovec iov[kMaxIov + 1];
    int cnt = 0;
    std::uint64_t body_want = 0;
    if (s.in_body) {
      if (s.sink == Sink::kDest) {
        std::uint64_t off = s.seg_off;
        for (std::size_t i = s.seg_idx; i < s.segs.size() && cnt < kMaxIov; ++i, off = 0) {
          iov[cnt++] = {s.segs[i].ptr + off, s.segs[i].len - off};
          body_want += s.segs[i].len - off;
        }
      } else if (s.sink == Sink::kBuffer) {
        body_want = s.remaining;
        iov[cnt++] = {s.buf.data() + s.buf_have, body_want};
      } else {
        body_want = std::min<std::uint64_t>(s.remaining, scratch_.size());
        iov[cnt++] = {scratch_.data(), body_want};
      }
    }
    // The next header rides along in the same call once the frame can complete.
    if (!s.in_body || (s.body_is_last && body_want == s.remaining))
      iov[cnt++] = {s.hdr_buf + s.hdr_have, sizeof(WireHeader) - s.hdr_have};
    ssize_t n = ::readv(s.fd.get(), iov, cnt);
    if (n == 0) return lost(PeerLost("connection closed by peer"));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      return lost(PeerLost(std::string("receive failed: ") + std::strerror(errno)));
    }
    if (s.session) s.session->last_progress = Clock::now();
    std::uint64_t got = static_cast<std::uint64_t>(n);
    if (s.in_body) {
      const std::uint64_t c = std::min(got, body_want);
      got -= c;
      s.remaining -= c;
      if (s.sink == Sink::kDest) {
        for (std::uint64_t left = c; left > 0;) {
          std::uint64_t step = std::min(left, s.segs[s.seg_idx].len - s.seg_off);
          left -= step;
          s.seg_off += step;
          if (s.seg_off == s.segs[s.seg_idx].len) s.seg_idx++, s.seg_off = 0;
        }
      } else if (s.sink == Sink::kBuffer) {
        s.buf_have += c;
      }
      if (s.remaining == 0) {
        s.in_body = false;
        Session* ss = s.session;
        handle_payload_done(s);
        if ((ss && ss->dead) || !s.fd.valid()) return;
        if (s.in_body) continue;  // a table was read; its data follows
      }
    }
    s.hdr_have += got;
    if (s.hdr_have == sizeof(WireHeader)) {
      s.hdr_have = 0;
      Session* ss = s.session;
      if (!handle_header(s)) return;
      if ((ss && ss->dead) || !s.fd.valid()) return;
    }
  }
}

void TcpEngine::on_writable(Stream& s) {
  while (!s.out.empty() && s.fd.valid()) {
    iovec iov[kMaxIov];
    int cnt = 0;
    std::size_t bytes = 0;
    auto add = [&](const void* p, std::uint64_t len, std::uint64_t& skip) {
      if (skip >= len) {
        skip -= len;
        return;
      }
      if (cnt == kMaxIov) return;
      iov[cnt++] = {const_cast<std::uint8_t*>(static_cast<const std::uint8_t*>(p)) + skip, len - skip};
      bytes += len - skip;
      skip = 0;
    };
    for (auto it = s.out.begin(); it != s.out.end() && cnt < kMaxIov && bytes < kMaxSendBytes; ++it) {
      std::uint64_t skip = it->sent;
      add(&it->h, sizeof(WireHeader), skip);
      if (!it->prefix.empty()) add(it->prefix.data(), it->prefix.size(), skip);
      for (const Segment& g : it->segments) add(g.ptr, g.len, skip);
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(cnt);
    ssize_t n = ::sendmsg(s.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      if (s.session) fail_session(*s.session, PeerLost(std::string("send failed: ") + std::strerror(errno)));
      return;
    }
    // Liveness: an initiator trusts only bytes it receives (a stopped peer's kernel still
    // accepts our pings); a target, which never pings, also counts what it sends.
    if (s.session && !s.session->initiator) s.session->last_progress = Clock::now();
    std::uint64_t left = static_cast<std::uint64_t>(n);
    while (left > 0 && !s.out.empty()) {
      OutFrame& f = s.out.front();
      std::uint64_t take = std::min(left, f.total() - f.sent);
      f.sent += take;
      left -= take;
      if (f.sent == f.total()) {
        s.staged_queued -= f.staged_bytes;
        s.out.pop_front();
      }
    }
    if (static_cast<std::size_t>(n) < bytes) break;  // socket buffer full
  }
  if (!s.deferred_reads.empty()) release_deferred_reads(s);
  update_interest(s);
}

bool TcpEngine::begin_body(Stream& s, Sink sink, std::uint64_t bytes, bool last) {
  s.sink = sink;
  s.remaining = bytes;
  s.body_is_last = last;
  s.seg_idx = 0;
  s.seg_off = 0;
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
    Status why = Corrupt("protocol error from peer: " + what);
    if (ss) fail_session(*ss, why);
    else close_stream(s);  // the pending entry is reaped by check_timeouts
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
      s.segs = pr.dest;
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
  std::string bad;
  bool ok = parse_segments(s.buf, [&](std::uint64_t a, std::uint64_t l) { return find_region(a, l) != nullptr; },
                           s.segs, total, bad);
  const std::uint64_t data = h.len - s.buf.size();
  if (total != data) {
    fail_session(ss, Corrupt("protocol error from peer: write segments do not add up to the data length"));
    return false;
  }
  if (!ok) ss.write_errors.try_emplace(h.req, "write to " + bad + " refused: not inside memory this agent registered");
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
  std::string bad;
  OutFrame f = make_frame(FrameType::kReadData, h.req);
  bool ok = parse_segments(s.buf, [&](std::uint64_t a, std::uint64_t l) { return find_region(a, l) != nullptr; },
                           f.segments, total, bad);
  if (total > kMaxChunkBytes) {
    fail_session(*s.session, Corrupt("protocol error from peer: read batch larger than the cap"));
    return false;
  }
  if (!ok) {
    queue_frame(s, make_message_frame(FrameType::kReadData, h.req,
                                      "read of " + bad + " refused: not inside memory this agent registered",
                                      kFlagError));
    return true;
  }
  f.h.len = total;
  queue_read_reply(s, std::move(f));
  return true;
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
        (void)cfg_.deliver(ss->peer, std::move(s.buf));
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
    case FrameType::kNotifyAck: {
      auto it = ss->requests.find(h.req);
      if (it == ss->requests.end()) return;
      it->second.notify_pending = false;
      if ((h.flags & kFlagError) && it->second.error.ok())
        it->second.error = RemoteError("peer did not keep the notification: " + s.buf);
      else if (h.aux != 0 && it->second.error.ok())
        it->second.error = RemoteError("peer did not deliver the notification: the transfer failed there");
      return maybe_finish(*ss, h.req);
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
  Status kept = tr.failed ? Status::Ok() : cfg_.deliver(ss.peer, std::move(tr.message));
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
    if (ss->peer != from || ss->streams.size() >= count) return refuse("inconsistent hello");
  } else {
    auto fresh = std::make_unique<Session>();
    fresh->key = next_local_key_++;
    fresh->initiator = false;
    fresh->peer = from;
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
