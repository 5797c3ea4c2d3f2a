#include "core/host_link.h"

#include <sys/socket.h>
#include <unistd.h>

#include "core/byte_io.h"
#include "core/fd_passing.h"
#include "core/unix_socket.h"

namespace kvferry::detail {
namespace {

HostMessage type_of(std::span<const std::uint8_t> msg) {
  ByteReader r(msg);
  const std::uint16_t t = r.u16();
  return static_cast<HostMessage>(r.ok() ? t : 0);
}

}  // namespace

Result<std::vector<UniqueFd>> initiate_host_link(int sock, const HostLinkConfig& cfg, const std::string& target,
                                                 std::span<const int> fds, std::size_t answer_fds,
                                                 const std::function<Status(AnnouncedRegion&)>& on_region,
                                                 Deadline deadline) {
  const std::string& who = cfg.backend;
  ByteWriter hello;
  hello.u16(static_cast<std::uint16_t>(HostMessage::kHello));
  hello.u32(cfg.version);
  hello.u16(static_cast<std::uint16_t>(target.size()));
  hello.str(target);
  hello.u16(static_cast<std::uint16_t>(cfg.agent_name.size()));
  hello.str(cfg.agent_name);
  std::unique_ptr<InitiatorAuth> auth;
  if (cfg.secret) {
    auth = std::make_unique<InitiatorAuth>(cfg.secret, cfg.backend);
    hello.bytes(auth->offer());
  }
  KVF_RETURN_IF_ERROR(send_message(sock, hello.buffer(), fds, deadline, who));
  std::vector<std::uint8_t> msg;
  std::vector<UniqueFd> got;
  KVF_RETURN_IF_ERROR(recv_message(sock, &msg, &got, deadline, who));
  if (type_of(msg) == HostMessage::kChallenge) {
    if (!auth) return Corrupt(who + ": unexpected authentication challenge from the peer");
    auto proof = auth->respond(hello.buffer(), std::span<const std::uint8_t>(msg).subspan(2), who);
    if (!proof.ok()) return proof.status();
    ByteWriter w;
    w.u16(static_cast<std::uint16_t>(HostMessage::kAuth));
    w.bytes(*proof);
    KVF_RETURN_IF_ERROR(send_message(sock, w.buffer(), {}, deadline, who));
    KVF_RETURN_IF_ERROR(recv_message(sock, &msg, &got, deadline, who));
    auth.reset();  // done
  }
  ByteReader ack(msg);
  if (static_cast<HostMessage>(ack.u16()) != HostMessage::kHelloAck || !ack.ok())
    return Corrupt(who + ": bad hello answer");
  if (ack.u8() != 1) return RemoteError(who + ": peer refused: " + ack.str(ack.remaining()));
  if (auth) return Corrupt(who + ": the peer accepted the connection without authenticating itself");
  if (got.size() != answer_fds) return Corrupt(who + ": the hello answer carries the wrong descriptors");
  std::vector<UniqueFd> answer = std::move(got);
  for (;;) {
    KVF_RETURN_IF_ERROR(recv_message(sock, &msg, &got, deadline, who));
    ByteReader r(msg);
    const auto type = static_cast<HostMessage>(r.u16());
    if (type == HostMessage::kRegionsEnd && r.ok() && r.remaining() == 0 && got.empty()) break;
    AnnouncedRegion region;
    region.id = r.u64();
    region.address = r.u64();
    region.length = r.u64();
    if (type != HostMessage::kRegion || !r.ok() || got.size() > 1) return Corrupt(who + ": bad region message");
    region.payload = r.take(r.remaining());
    if (!got.empty()) region.fd = std::move(got[0]);
    KVF_RETURN_IF_ERROR(on_region(region));
  }
  return answer;
}

HostLinkAcceptor::HostLinkAcceptor(std::shared_ptr<const HostLinkConfig> cfg, std::size_t hello_fds)
    : cfg_(std::move(cfg)), expected_fds_(hello_fds) {}

Result<bool> HostLinkAcceptor::on_message(int sock, std::vector<std::uint8_t> msg, std::vector<UniqueFd> fds) {
  const std::string where = "agent '" + cfg_->agent_name + "', " + cfg_->backend;
  if (auth_) {  // the initiator's proof: then the hello it answers
    const bool is_auth = type_of(msg) == HostMessage::kAuth && fds.empty();
    Status ok = is_auth ? auth_->verify(std::span<const std::uint8_t>(msg).subspan(2), where)
                        : Corrupt(where + ": expected the authentication response");
    auth_.reset();
    if (!ok.ok()) return refuse(sock, ok.message());
    return true;
  }
  if (!hello_.empty()) return refuse(sock, "unexpected message before the hello answer");
  hello_ = std::move(msg);
  hello_fds_ = std::move(fds);
  ByteReader r(hello_);
  const auto type = static_cast<HostMessage>(r.u16());
  const std::uint32_t version = r.u32();
  const std::string target = r.str(r.u16());
  peer_ = r.str(r.u16());
  const bool offered = r.remaining() == kAuthNonceBytes;  // the initiator authenticates
  if (!r.ok() || type != HostMessage::kHello || hello_fds_.size() != expected_fds_ || peer_.empty() ||
      (r.remaining() != 0 && !offered))
    return refuse(sock, "malformed hello");
  if (version != cfg_->version)
    return refuse(sock, where + " speaks protocol version " + std::to_string(cfg_->version) + ", not " +
                            std::to_string(version));
  if (target != cfg_->agent_name) return refuse(sock, "this is agent '" + cfg_->agent_name + "', not '" + target + "'");
  if (Status agree = auth_agreement(cfg_->secret != nullptr, offered, where); !agree.ok())
    return refuse(sock, agree.message());
  if (!cfg_->secret) return true;
  // Challenge; the hello is accepted after the proof.
  auth_ = std::make_unique<TargetAuth>(cfg_->secret, cfg_->backend);
  std::vector<std::uint8_t> challenge = auth_->challenge(hello_, std::span<const std::uint8_t>(hello_).last(kAuthNonceBytes));
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(HostMessage::kChallenge));
  w.bytes(challenge);
  KVF_RETURN_IF_ERROR(send_message(sock, w.buffer(), {}, deadline_after(cfg_->peer_timeout), cfg_->backend));
  return false;
}

Status HostLinkAcceptor::refuse(int sock, const std::string& why) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(HostMessage::kHelloAck));
  w.u8(0);
  w.str(why);
  (void)send_message(sock, w.buffer(), {}, deadline_after(std::chrono::milliseconds(100)), cfg_->backend);
  return FailedPrecondition(cfg_->backend + ": refused '" + peer_ + "': " + why);
}

Status HostLinkAcceptor::answer(int sock, std::span<const int> fds, Deadline deadline) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(HostMessage::kHelloAck));
  w.u8(1);
  return send_message(sock, w.buffer(), fds, deadline, cfg_->backend);
}

Status send_host_region(int sock, const AnnouncedRegion& region, int fd, Deadline deadline, std::string_view who) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(HostMessage::kRegion));
  w.u64(region.id);
  w.u64(region.address);
  w.u64(region.length);
  w.bytes(region.payload);
  return send_message(sock, w.buffer(), {&fd, fd >= 0 ? 1u : 0u}, deadline, who);
}

Status send_host_regions_end(int sock, Deadline deadline, std::string_view who) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(HostMessage::kRegionsEnd));
  return send_message(sock, w.buffer(), {}, deadline, who);
}

std::vector<std::uint8_t> host_revoke_message(HostMessage type, std::uint64_t region) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(type));
  w.u64(region);
  return w.take();
}

std::optional<std::uint64_t> parse_host_revoke(std::span<const std::uint8_t> msg, HostMessage type) {
  ByteReader r(msg);
  const auto t = static_cast<HostMessage>(r.u16());
  const std::uint64_t region = r.u64();
  if (!r.ok() || t != type || r.remaining() != 0) return std::nullopt;
  return region;
}

std::vector<UniqueFd> accept_host_links(int listener) {
  std::vector<UniqueFd> out;
  for (;;) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return out;
    UniqueFd sock(fd);
    if (peer_is_ours(fd)) out.push_back(std::move(sock));  // only our user may map our memory
  }
}

}  // namespace kvferry::detail
