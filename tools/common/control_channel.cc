#include "common/control_channel.h"

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

constexpr std::array<std::uint8_t, 4> kMagic = {'K', 'V', 'F', 'B'};
constexpr std::size_t kHeaderBytes = 16;
// Control messages are small; metadata of a large registration is a few KiB. A bigger
// length means a foreign or corrupt peer, not a message worth allocating for.
constexpr std::uint64_t kMaxPayloadBytes = 64u << 20;

void put_le(std::uint8_t* out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

std::uint64_t get_le(const std::uint8_t* in, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return value;
}

}  // namespace

Status ControlChannel::send(MessageType type, const nlohmann::json& body) {
  const std::vector<std::uint8_t> payload = nlohmann::json::to_cbor(body);
  std::array<std::uint8_t, kHeaderBytes> header{};
  std::memcpy(header.data(), kMagic.data(), kMagic.size());
  put_le(header.data() + 4, static_cast<std::uint32_t>(type), 4);
  put_le(header.data() + 8, payload.size(), 8);
  KVF_RETURN_IF_ERROR(send_all(fd(), header.data(), header.size()));
  return send_all(fd(), payload.data(), payload.size()).with_context("control send");
}

Result<Message> ControlChannel::receive() {
  std::array<std::uint8_t, kHeaderBytes> header{};
  KVF_RETURN_IF_ERROR(recv_all(fd(), header.data(), header.size()));
  if (std::memcmp(header.data(), kMagic.data(), kMagic.size()) != 0) {
    return Corrupt("control connection: bad frame magic (not a kvferry bench peer?)");
  }
  const auto type = static_cast<std::uint32_t>(get_le(header.data() + 4, 4));
  if (type < static_cast<std::uint32_t>(MessageType::kSetup) ||
      type > static_cast<std::uint32_t>(MessageType::kBye)) {
    return Corrupt("control connection: unknown message type " + std::to_string(type));
  }
  const std::uint64_t length = get_le(header.data() + 8, 8);
  if (length > kMaxPayloadBytes) {
    return Corrupt("control connection: message of " + std::to_string(length) + " bytes");
  }
  std::vector<std::uint8_t> payload(length);
  KVF_RETURN_IF_ERROR(recv_all(fd(), payload.data(), payload.size()).with_context("control receive"));
  Message message;
  message.type = static_cast<MessageType>(type);
  message.body = nlohmann::json::from_cbor(payload, /*strict=*/true, /*allow_exceptions=*/false);
  if (message.body.is_discarded() || !message.body.is_object()) {
    return Corrupt("control connection: message payload is not a CBOR object");
  }
  return message;
}

Result<Message> ControlChannel::receive_when_ready(std::chrono::milliseconds idle_limit,
                                                  std::chrono::milliseconds slice,
                                                  const std::function<bool()>& on_idle) {
  const auto deadline = Clock::now() + idle_limit;
  while (true) {
    KVF_ASSIGN_OR_RETURN(bool readable, wait_readable(fd(), slice));
    if (readable) return receive();
    if (!on_idle()) return Cancelled("stopped while waiting for the peer");
    if (Clock::now() >= deadline) {
      return Timeout("peer silent for " + std::to_string(idle_limit.count() / 1000) + " s");
    }
  }
}

Result<nlohmann::json> ControlChannel::expect(MessageType type) {
  KVF_ASSIGN_OR_RETURN(Message message, receive());
  if (message.type == MessageType::kError) {
    const auto text = message.body.find("message");
    return RemoteError(text != message.body.end() && text->is_string()
                           ? text->get<std::string>()
                           : std::string("peer reported an error"));
  }
  if (message.type != type) {
    return Corrupt("control connection: expected message " +
                   std::to_string(static_cast<std::uint32_t>(type)) + ", got " +
                   std::to_string(static_cast<std::uint32_t>(message.type)));
  }
  return std::move(message.body);
}

void ControlChannel::send_error(const Status& status) {
  (void)send(MessageType::kError, nlohmann::json{{"message", status.to_string()}});
}

}  // namespace kvferry::cli
