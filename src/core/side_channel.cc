#include "core/side_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <utility>

#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

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

}  // namespace

std::vector<std::uint8_t> make_side_frame(SideFrame type, std::span<const std::uint8_t> payload) {
  ByteWriter w;
  w.u32(kSideMagic);
  w.u16(static_cast<std::uint16_t>(type));
  w.u16(0);
  w.u32(static_cast<std::uint32_t>(payload.size()));
  w.bytes(payload);
  return w.take();
}

std::vector<std::uint8_t> side_frame_tagged_bytes(std::uint16_t type, std::span<const std::uint8_t> payload) {
  ByteWriter w;
  w.u16(type);
  w.bytes(payload);
  return w.take();
}

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

SideCallExchange::SideCallExchange(SideFrame type, std::span<const std::uint8_t> payload, SideFrame expect,
                                   std::shared_ptr<const SharedSecret> secret, std::string where)
    : type_(type), payload_(payload.begin(), payload.end()), expect_(expect), where_(std::move(where)) {
  if (secret) {
    auth_ = std::make_unique<InitiatorAuth>(std::move(secret), "side");
    out_ = make_side_frame(SideFrame::kAuthHello, auth_->offer());
  } else {
    out_ = make_side_frame(type_, payload_);
  }
}

SideCallExchange::~SideCallExchange() = default;

std::vector<std::uint8_t> SideCallExchange::take_output() { return std::exchange(out_, {}); }

std::optional<Result<std::vector<std::uint8_t>>> SideCallExchange::on_frame(std::uint16_t type,
                                                                           std::span<const std::uint8_t> body) {
  using Reply = std::optional<Result<std::vector<std::uint8_t>>>;
  if (static_cast<SideFrame>(type) == SideFrame::kError)
    return Reply(RemoteError(where_ + ": " + std::string(body.begin(), body.end())));
  if (auth_ && !challenged_) {
    if (static_cast<SideFrame>(type) != SideFrame::kChallenge) return Reply(Corrupt(where_ + ": no authentication challenge"));
    auto answered = auth_->respond(auth_->offer(), body, where_);
    if (!answered.ok()) return Reply(answered.status());
    challenged_ = true;
    const AuthTag tag = auth_->frame_tag("request", 0, side_frame_tagged_bytes(static_cast<std::uint16_t>(type_), payload_));
    payload_.insert(payload_.end(), tag.begin(), tag.end());
    out_ = make_side_frame(type_, payload_);
    return std::nullopt;
  }
  if (auth_) {
    if (body.size() < kAuthTagBytes ||
        !SharedSecret::same_tag(
            auth_->frame_tag("reply", 0, side_frame_tagged_bytes(type, body.first(body.size() - kAuthTagBytes))),
            body.last(kAuthTagBytes)))
      return Reply(FailedPrecondition(where_ + ": authentication failed: the reply's tag does not match this agent's "
                                      "shared secret"));
    body = body.first(body.size() - kAuthTagBytes);
  }
  if (static_cast<SideFrame>(type) != expect_) return Reply(Corrupt(where_ + ": unexpected reply type"));
  return Reply(std::vector<std::uint8_t>(body.begin(), body.end()));
}

Result<std::vector<std::uint8_t>> side_channel_call(const std::string& host, std::uint16_t port, SideFrame type,
                                                    std::span<const std::uint8_t> payload, SideFrame expect,
                                                    Deadline deadline,
                                                    const std::shared_ptr<const SharedSecret>& secret) {
  std::string where = "side channel " + host + ":" + std::to_string(port);
  auto fd = tcp_connect(host, port, deadline);
  if (!fd.ok()) return fd.status().with_context(where);
  SideCallExchange exchange(type, payload, expect, secret, where);
  for (;;) {
    std::vector<std::uint8_t> frame = exchange.take_output();
    KVF_RETURN_IF_ERROR(send_all(fd->get(), frame.data(), frame.size(), deadline).with_context(where));
    std::uint8_t hdr[kSideHeaderBytes];
    KVF_RETURN_IF_ERROR(recv_all(fd->get(), hdr, sizeof hdr, deadline).with_context(where));
    Header h = parse_header(hdr);
    if (h.magic != kSideMagic) return Corrupt(where + ": reply is not a kvferry frame");
    if (h.length > kMaxSideFrameBytes) return Corrupt(where + ": reply larger than the cap");
    std::vector<std::uint8_t> body(h.length);
    KVF_RETURN_IF_ERROR(recv_all(fd->get(), body.data(), body.size(), deadline).with_context(where));
    if (auto done = exchange.on_frame(h.type, body)) return std::move(*done);
  }
}

}  // namespace kvferry::detail
