#include "core/side_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>

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
    frame = make_side_frame(SideFrame::kAuthHello, auth->offer());
    KVF_RETURN_IF_ERROR(send_all(fd->get(), frame.data(), frame.size(), deadline).with_context(where));
    KVF_ASSIGN_OR_RETURN(auto challenge, recv_side_frame(fd->get(), deadline, where));
    if (challenge.first != SideFrame::kChallenge) return Corrupt(where + ": no authentication challenge");
    KVF_RETURN_IF_ERROR(auth->respond(auth->offer(), challenge.second, where).status());
    const AuthTag tag = auth->frame_tag("request", 0, side_frame_tagged_bytes(static_cast<std::uint16_t>(type), payload));
    std::vector<std::uint8_t> signed_payload(payload.begin(), payload.end());
    signed_payload.insert(signed_payload.end(), tag.begin(), tag.end());
    frame = make_side_frame(type, signed_payload);
  } else {
    frame = make_side_frame(type, payload);
  }
  KVF_RETURN_IF_ERROR(send_all(fd->get(), frame.data(), frame.size(), deadline).with_context(where));
  KVF_ASSIGN_OR_RETURN(auto reply, recv_side_frame(fd->get(), deadline, where));
  auto& [got, body] = reply;
  if (auth) {
    const std::span<const std::uint8_t> all(body);
    if (all.size() < kAuthTagBytes ||
        !SharedSecret::same_tag(
            auth->frame_tag("reply", 0, side_frame_tagged_bytes(static_cast<std::uint16_t>(got), all.first(all.size() - kAuthTagBytes))),
            all.last(kAuthTagBytes)))
      return FailedPrecondition(where + ": authentication failed: the reply's tag does not match this agent's "
                                "shared secret");
    body.resize(body.size() - kAuthTagBytes);
  }
  if (got != expect) return Corrupt(where + ": unexpected reply type");
  return std::move(body);
}

}  // namespace kvferry::detail
