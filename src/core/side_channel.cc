#include "core/side_channel.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <list>

#include "core/accept_guard.h"
#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

// Connection slots: per remote address and in total. When full, the oldest connection
// makes room (a real client sends its one frame at once and is served within the same
// poll round, so a flood of idle sockets only evicts itself).
constexpr std::size_t kMaxConnectionsPerAddress = 16;
constexpr std::size_t kMaxConnections = 64;

std::vector<std::uint8_t> make_frame(SideFrame type, std::span<const std::uint8_t> payload) {
  ByteWriter w;
  w.u32(kSideMagic);
  w.u16(static_cast<std::uint16_t>(type));
  w.u16(0);
  w.u32(static_cast<std::uint32_t>(payload.size()));
  w.bytes(payload);
  return w.take();
}

std::vector<std::uint8_t> error_frame(const Status& s) {
  std::string msg = s.to_string();
  return make_frame(SideFrame::kError, {reinterpret_cast<const std::uint8_t*>(msg.data()), msg.size()});
}

struct Header {
  std::uint32_t magic;
  std::uint16_t type;
  std::uint32_t length;
};

Header parse_header(std::span<const std::uint8_t> bytes) {
  ByteReader r(bytes);
  Header h{};
  h.magic = r.u32();
  h.type = r.u16();
  r.u16();
  h.length = r.u32();
  return h;
}

// What a frame's tag covers: its type and payload.
std::vector<std::uint8_t> tagged_bytes(std::uint16_t type, std::span<const std::uint8_t> payload) {
  ByteWriter w;
  w.u16(type);
  w.bytes(payload);
  return w.take();
}

struct Connection {
  UniqueFd fd;
  std::string address;  // remote IP
  std::vector<std::uint8_t> in;
  // A frame must be complete by then: set at accept and after each served frame, never
  // moved by bytes alone (a byte at a time must not keep a connection alive).
  Clock::time_point frame_deadline;
  // With a secret: the handshake of this connection (after kAuthHello) and the sequence
  // number of its next request.
  std::unique_ptr<TargetAuth> auth;
  std::uint64_t seq = 0;
};

}  // namespace

Result<std::optional<SideFrameView>> next_side_frame(std::span<const std::uint8_t> in) {
  if (in.size() < kSideHeaderBytes) return std::optional<SideFrameView>();
  Header h = parse_header(in);
  if (h.magic != kSideMagic) return Corrupt("side channel: not a kvferry frame");
  if (h.length > kMaxSideFrameBytes) return Corrupt("side channel: frame larger than the cap");
  if (in.size() - kSideHeaderBytes < h.length) return std::optional<SideFrameView>();
  return std::optional<SideFrameView>(SideFrameView{h.type, in.subspan(kSideHeaderBytes, h.length),
                                                    kSideHeaderBytes + h.length});
}

Result<std::pair<std::string, std::string>> parse_notify_payload(std::span<const std::uint8_t> payload) {
  ByteReader r(payload);
  std::uint16_t name_len = r.u16();
  std::string from = r.str(name_len);
  std::string message = r.str(r.remaining());
  if (!r.ok()) return Corrupt("side channel: truncated notify frame");
  return std::make_pair(std::move(from), std::move(message));
}

Result<std::unique_ptr<SideChannelServer>> SideChannelServer::start(const std::string& address, std::uint16_t port,
                                                                    SideChannelHandlers handlers,
                                                                    std::chrono::milliseconds idle_timeout,
                                                                    std::shared_ptr<const SharedSecret> secret) {
  std::unique_ptr<SideChannelServer> s(new SideChannelServer());
  KVF_ASSIGN_OR_RETURN(s->listener_, tcp_listen(address, port));
  KVF_ASSIGN_OR_RETURN(s->port_, local_port(s->listener_.get()));
  s->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake_.valid()) return IoErrorFromErrno("eventfd", errno);
  s->handlers_ = std::move(handlers);
  s->idle_timeout_ = idle_timeout;
  s->secret_ = std::move(secret);
  s->thread_ = std::thread([raw = s.get()] { raw->run(); });
  return s;
}

SideChannelServer::~SideChannelServer() {
  ring_eventfd(wake_.get());
  if (thread_.joinable()) thread_.join();
}

void SideChannelServer::run() {
  std::list<Connection> conns;  // oldest first
  std::vector<pollfd> fds;
  std::vector<Connection*> order;
  std::uint8_t buf[64 * 1024];
  Clock::time_point accept_paused_until{};
  const std::size_t max_connections = descriptor_share(kMaxConnections, 8);
  for (;;) {
    fds.clear();
    order.clear();
    const bool accepting = Clock::now() >= accept_paused_until;
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({accepting ? listener_.get() : -1, POLLIN, 0});  // fd -1: ignored by poll
    for (auto& c : conns) {
      fds.push_back({c.fd.get(), POLLIN, 0});
      order.push_back(&c);
    }
    int rc = ::poll(fds.data(), fds.size(), accepting ? 200 : static_cast<int>(kAcceptBackoff.count()));
    if (rc < 0 && errno != EINTR) return;
    if (fds[0].revents) return;
    auto now = Clock::now();
    std::vector<Connection*> dead;
    for (std::size_t i = 0; i < order.size(); ++i) {
      Connection& c = *order[i];
      bool drop = false;
      if (fds[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) drop = true;
        if (n > 0) c.in.insert(c.in.end(), buf, buf + n);
        // Serve every complete frame in the buffer.
        while (!drop) {
          auto frame = next_side_frame(c.in);
          if (!frame.ok()) { drop = true; break; }
          if (!*frame) break;
          std::span<const std::uint8_t> payload = (*frame)->payload;
          const std::size_t frame_bytes = (*frame)->bytes;
          const auto type = static_cast<SideFrame>((*frame)->type);
          std::vector<std::uint8_t> reply;
          // Authentication first (core/peer_auth.h): the handshake, then every request
          // checked against its tag, which is stripped from the payload.
          bool refused = false;
          if (type == SideFrame::kAuthHello) {
            if (payload.size() != kAuthNonceBytes || c.auth) {
              drop = true;
              break;
            }
            if (!secret_) {
              reply = error_frame(auth_agreement(false, true, "side channel"));
              refused = true;
            } else {
              c.auth = std::make_unique<TargetAuth>(secret_, "side");
              reply = make_frame(SideFrame::kChallenge, c.auth->challenge(payload, payload));
            }
          } else if (secret_) {
            if (!c.auth) {
              reply = error_frame(auth_agreement(true, false, "side channel"));
              refused = true;
            } else if (payload.size() < kAuthTagBytes ||
                       !SharedSecret::same_tag(
                           c.auth->frame_tag("request", c.seq,
                                             tagged_bytes((*frame)->type, payload.first(payload.size() - kAuthTagBytes))),
                           payload.last(kAuthTagBytes))) {
              reply = error_frame(FailedPrecondition(
                  "side channel: authentication failed: the request's tag does not match this agent's shared secret "
                  "(a different secret, or a replayed frame)"));
              refused = true;
            } else {
              payload = payload.first(payload.size() - kAuthTagBytes);
            }
          }
          if (!reply.empty()) {
            // handshake answer or refusal: sent below; a refused connection is closed.
          } else switch (type) {
            case SideFrame::kFetch: {
              Status s = payload.empty() ? Status::Ok() : handlers_.load_remote(payload);
              auto md = handlers_.local_metadata();
              if (!s.ok()) reply = error_frame(s);
              else if (!md.ok()) reply = error_frame(md.status());
              else reply = make_frame(SideFrame::kMetadata, *md);
              break;
            }
            case SideFrame::kNotify: {
              auto note = parse_notify_payload(payload);
              Status s = note.ok() ? handlers_.notify(std::move(note->first), std::move(note->second)) : note.status();
              reply = s.ok() ? make_frame(SideFrame::kOk, {}) : error_frame(s);
              break;
            }
            default:
              drop = true;
              break;
          }
          if (drop) break;
          // An authenticated reply carries its tag, bound to the request's sequence number.
          if (secret_ && c.auth && !refused && type != SideFrame::kAuthHello) {
            auto view = next_side_frame(reply);
            const AuthTag tag = c.auth->frame_tag("reply", c.seq++, tagged_bytes((*view)->type, (*view)->payload));
            reply.insert(reply.end(), tag.begin(), tag.end());
            std::uint32_t len = static_cast<std::uint32_t>((*view)->payload.size() + kAuthTagBytes);
            std::memcpy(reply.data() + 8, &len, sizeof len);
          }
          c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(frame_bytes));
          if (!send_all(c.fd.get(), reply.data(), reply.size(), deadline_after(std::chrono::seconds(1))).ok())
            drop = true;
          c.frame_deadline = Clock::now() + idle_timeout_;
          if (refused) drop = true;
        }
      }
      if (!drop && now > c.frame_deadline) drop = true;
      if (drop) dead.push_back(&c);
    }
    for (Connection* d : dead) conns.remove_if([d](const Connection& c) { return &c == d; });
    // New connections last (polled from the next round on), each within the slots.
    if (!accepting || !(fds[1].revents & POLLIN)) continue;
    for (int k = 0; k < 64; ++k) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (!out_of_descriptors(errno)) break;
        // Out of descriptors: the oldest connection gives one back; with none to give,
        // pause (a listener that stays readable must not become a busy loop).
        if (conns.empty()) {
          accept_paused_until = now + kAcceptBackoff;
          break;
        }
        conns.pop_front();
        continue;
      }
      Connection c{UniqueFd(fd), peer_address(fd), {}, now + idle_timeout_, nullptr, 0};
      auto evict = slot_to_free(conns, c.address, kMaxConnectionsPerAddress, max_connections,
                                [](const Connection& held) -> const std::string& { return held.address; });
      if (evict != conns.end()) conns.erase(evict);
      set_nodelay(fd).ok();  // best effort; latency only
      conns.push_back(std::move(c));
    }
  }
}

namespace {
// One frame from a connected client socket, within the deadline: (type, payload).
Result<std::pair<SideFrame, std::vector<std::uint8_t>>> recv_side_frame(int fd, Deadline deadline,
                                                                        const std::string& where) {
  std::uint8_t hdr[kSideHeaderBytes];
  KVF_RETURN_IF_ERROR(recv_all(fd, hdr, sizeof hdr, deadline).with_context(where));
  Header h = parse_header(hdr);
  if (h.magic != kSideMagic) return Corrupt(where + ": reply is not a kvferry frame");
  if (h.length > kMaxSideFrameBytes) return Corrupt(where + ": reply larger than the cap");
  std::vector<std::uint8_t> body(h.length);
  KVF_RETURN_IF_ERROR(recv_all(fd, body.data(), body.size(), deadline).with_context(where));
  if (static_cast<SideFrame>(h.type) == SideFrame::kError)
    return RemoteError(where + ": " + std::string(body.begin(), body.end()));
  return std::make_pair(static_cast<SideFrame>(h.type), std::move(body));
}
}  // namespace

Result<std::vector<std::uint8_t>> side_channel_call(const std::string& host, std::uint16_t port, SideFrame type,
                                                    std::span<const std::uint8_t> payload, SideFrame expect,
                                                    Deadline deadline,
                                                    const std::shared_ptr<const SharedSecret>& secret) {
  std::string where = "side channel " + host + ":" + std::to_string(port);
  auto fd = tcp_connect(host, port, deadline);
  if (!fd.ok()) return fd.status().with_context(where);
  std::unique_ptr<InitiatorAuth> auth;
  std::vector<std::uint8_t> frame;
  if (secret) {
    auth = std::make_unique<InitiatorAuth>(secret, "side");
    frame = make_frame(SideFrame::kAuthHello, auth->offer());
    KVF_RETURN_IF_ERROR(send_all(fd->get(), frame.data(), frame.size(), deadline).with_context(where));
    KVF_ASSIGN_OR_RETURN(auto challenge, recv_side_frame(fd->get(), deadline, where));
    if (challenge.first != SideFrame::kChallenge) return Corrupt(where + ": no authentication challenge");
    KVF_RETURN_IF_ERROR(auth->respond(auth->offer(), challenge.second, where).status());
    const AuthTag tag = auth->frame_tag("request", 0, tagged_bytes(static_cast<std::uint16_t>(type), payload));
    std::vector<std::uint8_t> signed_payload(payload.begin(), payload.end());
    signed_payload.insert(signed_payload.end(), tag.begin(), tag.end());
    frame = make_frame(type, signed_payload);
  } else {
    frame = make_frame(type, payload);
  }
  KVF_RETURN_IF_ERROR(send_all(fd->get(), frame.data(), frame.size(), deadline).with_context(where));
  KVF_ASSIGN_OR_RETURN(auto reply, recv_side_frame(fd->get(), deadline, where));
  auto& [got, body] = reply;
  if (auth) {
    const std::span<const std::uint8_t> all(body);
    if (all.size() < kAuthTagBytes ||
        !SharedSecret::same_tag(
            auth->frame_tag("reply", 0, tagged_bytes(static_cast<std::uint16_t>(got), all.first(all.size() - kAuthTagBytes))),
            all.last(kAuthTagBytes)))
      return FailedPrecondition(where + ": authentication failed: the reply's tag does not match this agent's "
                                "shared secret");
    body.resize(body.size() - kAuthTagBytes);
  }
  if (got != expect) return Corrupt(where + ": unexpected reply type");
  return std::move(body);
}

}  // namespace kvferry::detail
