// The tcp backend: any two hosts, dram memory, several streams per peer.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <charconv>
#include <random>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_session.h"
#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/byte_io.h"
#include "core/session_connection.h"

namespace kvferry::detail::tcp {
namespace {

struct Settings {
  std::string bind = "127.0.0.1";
  std::string advertise;  // defaults to bind
  std::uint16_t port = 0;
  std::uint32_t streams = 4;
  std::uint64_t chunk_bytes = 1u << 20;
  std::uint32_t spin_us = 0;
};

Result<Settings> parse_settings(const BackendContext& ctx) {
  Settings s;
  if (auto it = ctx.params.find("bind"); it != ctx.params.end()) s.bind = it->second;
  s.advertise = s.bind;
  if (auto it = ctx.params.find("advertise"); it != ctx.params.end()) s.advertise = it->second;
  if (s.advertise == "0.0.0.0" || s.advertise == "::")
    return InvalidArgument("tcp.bind is a wildcard address: set tcp.advertise to an address peers can reach");
  KVF_ASSIGN_OR_RETURN(auto port, integer_setting(ctx.params, "tcp", "port", 0, 65535, 0));
  KVF_ASSIGN_OR_RETURN(auto streams, integer_setting(ctx.params, "tcp", "streams", 1, 64, 4));
  KVF_ASSIGN_OR_RETURN(auto chunk_kib, integer_setting(ctx.params, "tcp", "chunk_kib", 4, kMaxChunkBytes >> 10, 1024));
  s.port = static_cast<std::uint16_t>(port);
  s.streams = static_cast<std::uint32_t>(streams);
  s.chunk_bytes = chunk_kib << 10;
  KVF_ASSIGN_OR_RETURN(auto spin, integer_setting(ctx.params, "tcp", "spin_us", 0, 10000, 0));
  s.spin_us = static_cast<std::uint32_t>(spin);
  return s;
}

// An initiator's session as its SessionConnection sees it: the engine moves the bytes;
// health is the session's PeerSession, readable from any thread.
class TcpLink {
 public:
  TcpLink(std::shared_ptr<TcpEngine> engine, std::uint64_t session, std::shared_ptr<PeerSession> peer)
      : engine_(std::move(engine)), session_(session), peer_(std::move(peer)) {}

  Status post(const std::shared_ptr<TransferJob>& job) {
    KVF_RETURN_IF_ERROR(health());
    return engine_->post(session_, job);
  }
  void cancel(const std::shared_ptr<TransferJob>& job) { engine_->cancel(session_, job); }
  Status notify(std::string_view message) {
    KVF_RETURN_IF_ERROR(health());
    return engine_->notify(session_, std::string(message));
  }
  Status health() const { return peer_->health(); }
  // Under the engine's lock, which guards the streams (the PeerSession's loss closes them).
  void fail(const Status& why) { engine_->close_session(session_, why); }

 private:
  std::shared_ptr<TcpEngine> engine_;
  const std::uint64_t session_;
  std::shared_ptr<PeerSession> peer_;
};

class TcpBackend final : public Backend {
 public:
  TcpBackend(BackendContext ctx, Settings settings, std::uint16_t port, std::shared_ptr<TcpEngine> engine)
      : ctx_(std::move(ctx)), settings_(std::move(settings)), port_(port), engine_(std::move(engine)) {}

  std::string_view name() const override { return "tcp"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.local_kinds = {MemoryKind::kDram};  // local vram: the core stages it (core/staged_connection.h)
    // Peers' vram and our own vram served to peers go through pinned memory (tcp_vram.cc).
    c.remote_kinds = {MemoryKind::kDram, MemoryKind::kVram};
    c.served_kinds = {MemoryKind::kDram, MemoryKind::kVram};
    c.notifications = true;
    c.authenticates = true;  // every stream's hello (tcp_engine_io.cc, open_stream)
    return c;
  }
  // Loopback TCP on the VMs we measured: ~60 us round trip, ~4-6 GB/s.
  CostModel cost_model() const override { return CostModel{60.0, 0.05, 4.0}; }
  Status register_region(const RegionInfo& r) override { return engine_->register_region(r); }
  Status deregister_region(std::uint64_t id) override { return engine_->deregister_region(id); }
  std::vector<std::uint8_t> connection_info() const override {
    ByteWriter w;
    w.u16(port_);
    w.str(settings_.advertise);
    return w.take();
  }
  Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) override;

 private:
  BackendContext ctx_;
  Settings settings_;
  std::uint16_t port_;
  std::shared_ptr<TcpEngine> engine_;
};

// Opens one stream and performs the hello exchange, blocking up to the deadline.
// With `auth`, the hello ends with its offer and the target's challenge is answered.
Result<UniqueFd> open_stream(const std::string& host, std::uint16_t port, const std::vector<std::uint8_t>& hello,
                             Deadline deadline, std::chrono::milliseconds peer_timeout, InitiatorAuth* auth) {
  KVF_ASSIGN_OR_RETURN(UniqueFd fd, tcp_connect(host, port, deadline));
  // Unacknowledged data this long means the peer is gone, whatever TCP would retry.
  unsigned int user_timeout = static_cast<unsigned int>(peer_timeout.count());
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
  OutFrame f = make_frame(FrameType::kHello, 0);
  f.h.len = hello.size();
  KVF_RETURN_IF_ERROR(send_all(fd.get(), &f.h, sizeof f.h, deadline));
  KVF_RETURN_IF_ERROR(send_all(fd.get(), hello.data(), hello.size(), deadline));
  WireHeader ack;
  KVF_RETURN_IF_ERROR(recv_all(fd.get(), &ack, sizeof ack, deadline));
  if (ack.magic == kMagic && ack.type == static_cast<std::uint8_t>(FrameType::kChallenge)) {
    if (!auth || ack.len != kAuthChallengeBytes) return Corrupt("unexpected authentication challenge from the peer");
    std::vector<std::uint8_t> challenge(kAuthChallengeBytes);
    KVF_RETURN_IF_ERROR(recv_all(fd.get(), challenge.data(), challenge.size(), deadline));
    KVF_ASSIGN_OR_RETURN(AuthTag proof, auth->respond(hello, challenge, "tcp"));
    OutFrame f2 = make_frame(FrameType::kAuth, 0);
    f2.h.len = proof.size();
    KVF_RETURN_IF_ERROR(send_all(fd.get(), &f2.h, sizeof f2.h, deadline));
    KVF_RETURN_IF_ERROR(send_all(fd.get(), proof.data(), proof.size(), deadline));
    KVF_RETURN_IF_ERROR(recv_all(fd.get(), &ack, sizeof ack, deadline));
    auth = nullptr;  // done
  }
  if (ack.magic != kMagic || ack.type != static_cast<std::uint8_t>(FrameType::kHelloAck))
    return Corrupt("the peer's tcp port did not answer with a kvferry hello");
  if (ack.flags & kFlagError) {
    if (ack.len > kMaxMessageBytes) return Corrupt("oversized hello refusal");
    std::string why(ack.len, '\0');
    KVF_RETURN_IF_ERROR(recv_all(fd.get(), why.data(), why.size(), deadline));
    return RemoteError("peer refused the connection: " + why);
  }
  if (auth) return Corrupt("the peer accepted the connection without authenticating itself");
  KVF_RETURN_IF_ERROR(set_nonblocking(fd.get(), true));
  return fd;
}

Result<std::unique_ptr<BackendConnection>> TcpBackend::connect(const PeerEndpoint& peer) {
  ByteReader r(peer.connection_info);
  std::uint16_t port = r.u16();
  std::string host = r.str(r.remaining());
  if (!r.ok() || host.empty() || port == 0) return Corrupt("tcp: bad connection info from '" + peer.agent_name + "'");
  std::random_device rd;
  const std::uint64_t session_id = ((static_cast<std::uint64_t>(rd()) << 32) ^ rd()) & ((1ull << 62) - 1);
  const Deadline deadline = deadline_after(ctx_.connect_timeout);
  std::vector<UniqueFd> fds;
  for (std::uint32_t i = 0; i < settings_.streams; ++i) {
    ByteWriter hello;
    hello.u32(kProtocolVersion);
    hello.u64(session_id);
    hello.u32(i);
    hello.u32(settings_.streams);
    hello.u16(static_cast<std::uint16_t>(peer.agent_name.size()));
    hello.str(peer.agent_name);
    hello.u16(static_cast<std::uint16_t>(ctx_.agent_name.size()));
    hello.str(ctx_.agent_name);
    std::unique_ptr<InitiatorAuth> auth;
    if (ctx_.secret) {
      auth = std::make_unique<InitiatorAuth>(ctx_.secret, "tcp");
      hello.bytes(auth->offer());
    }
    auto fd = open_stream(host, port, hello.buffer(), deadline, ctx_.peer_timeout, auth.get());
    if (!fd.ok()) return fd.status().with_context("tcp: connecting to '" + peer.agent_name + "' at " + host + ":" +
                                                  std::to_string(port));
    fds.push_back(std::move(fd).value());
  }
  KVF_ASSIGN_OR_RETURN(auto peer_session, engine_->add_session(session_id, peer.agent_name, std::move(fds)));
  return std::unique_ptr<BackendConnection>(std::make_unique<SessionConnection<TcpLink>>(
      std::make_shared<TcpLink>(engine_, session_id, std::move(peer_session))));
}

Result<std::unique_ptr<Backend>> create_tcp_backend(const BackendContext& ctx) {
  KVF_ASSIGN_OR_RETURN(Settings settings, parse_settings(ctx));
  KVF_ASSIGN_OR_RETURN(UniqueFd listener, tcp_listen(settings.bind, settings.port));
  KVF_ASSIGN_OR_RETURN(std::uint16_t port, local_port(listener.get()));
  EngineConfig cfg;
  cfg.agent_name = ctx.agent_name;
  cfg.peer_timeout = ctx.peer_timeout;
  cfg.chunk_bytes = settings.chunk_bytes;
  cfg.spin_us = settings.spin_us;
  cfg.batch_bytes = std::max<std::uint64_t>(settings.chunk_bytes, 4u << 20);
  cfg.max_notification_bytes = ctx.max_notification_bytes;
  cfg.deliver = ctx.deliver_notification;
  cfg.secret = ctx.secret;
  KVF_ASSIGN_OR_RETURN(auto engine, TcpEngine::start(std::move(cfg), std::move(listener), ctx.reactor));
  return std::unique_ptr<Backend>(new TcpBackend(ctx, std::move(settings), port, std::move(engine)));
}

}  // namespace
}  // namespace kvferry::detail::tcp

namespace kvferry::detail {

void register_tcp_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "tcp";
  f.description = "dram <-> dram, any two hosts; served on the agent's reactor, several streams per peer";
  f.param_keys = {"bind", "advertise", "port", "streams", "chunk_kib", "spin_us"};
  f.probe = [] {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    return fd.valid() ? Status::Ok() : IoErrorFromErrno("cannot open a TCP socket", errno);
  };
  f.create = tcp::create_tcp_backend;
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
