// TcpEngine: the byte-level receive and send paths of a stream (readv straight into the
// destination, writev of queued frames).
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_session.h"

namespace kvferry::detail::tcp {
namespace {

// Iovecs per readv/sendmsg: IOV_MAX, so that a frame of small strided units (512 B KV
// rows) lands with few calls; the receive side keeps one for the next header.
constexpr int kMaxIov = IOV_MAX;
// Bytes offered per call: about what a loopback or LAN socket takes or holds at once.
// The kernel imports every iovec offered, used or not: 1,024 of 8 KiB units would be
// 8 MiB, most of it offered again by the next call.
constexpr std::size_t kMaxSendBytes = 4u << 20;
constexpr std::uint64_t kMaxReceiveBytes = 2u << 20;
constexpr int kReadBudget = 64;  // receive calls per stream per wake-up, for fairness

}  // namespace

void TcpEngine::on_readable(Stream& s) {
  auto lost = [&](const Status& why) {
    if (s.session) fail_session(*s.session, why);
    else close_stream(s);  // the pending entry is reaped by check_timeouts
  };
  for (int budget = 0; budget < kReadBudget; ++budget) {
    iovec iov[kMaxIov];
    int cnt = 0;
    std::uint64_t body_want = 0;
    if (s.in_body) {
      if (s.sink == Sink::kDest) {
        body_want = s.at.fill(s.segs, iov, cnt, kMaxIov - 1, std::min(s.remaining, kMaxReceiveBytes));
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
    if (s.session) s.session->peer_session->note_progress();
    std::uint64_t got = static_cast<std::uint64_t>(n);
    if (s.in_body) {
      const std::uint64_t c = std::min(got, body_want);
      got -= c;
      s.remaining -= c;
      if (s.sink == Sink::kDest) {
        s.at.advance(s.segs, c);
      } else if (s.sink == Sink::kBuffer) {
        s.buf_have += c;
      }
      if (s.remaining == 0) {
        s.in_body = false;
        Session* ss = s.session;
        handle_payload_done(s);
        if ((ss && ss->peer_session->dead()) || !s.fd.valid()) return;
        if (s.in_body) continue;  // a table was read; its data follows
      }
    }
    s.hdr_have += got;
    if (s.hdr_have == sizeof(WireHeader)) {
      s.hdr_have = 0;
      Session* ss = s.session;
      if (!handle_header(s)) return;
      if ((ss && ss->peer_session->dead()) || !s.fd.valid()) return;
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
      if (it->sent < sizeof(WireHeader) + it->prefix.size()) {
        std::uint64_t skip = it->sent;
        add(&it->h, sizeof(WireHeader), skip);
        if (!it->prefix.empty()) add(it->prefix.data(), it->prefix.size(), skip);
        if (cnt == kMaxIov) break;
      }
      // The data from where its cursor stands (past what was sent of it already).
      bytes += it->at.fill(it->segments, iov, cnt, kMaxIov, bytes < kMaxSendBytes ? kMaxSendBytes - bytes : 0);
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
    if (s.session && !s.session->initiator) s.session->peer_session->note_progress();
    std::uint64_t left = static_cast<std::uint64_t>(n);
    while (left > 0 && !s.out.empty()) {
      OutFrame& f = s.out.front();
      std::uint64_t take = std::min(left, f.total() - f.sent);
      const std::uint64_t head = sizeof(WireHeader) + f.prefix.size();
      const std::uint64_t data_before = f.sent > head ? f.sent - head : 0;
      f.sent += take;
      left -= take;
      if (f.sent > head) f.at.advance(f.segments, f.sent - head - data_before);
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

}  // namespace kvferry::detail::tcp
