// The bytes a notification travels as, on every backend and the side channel:
//
//   version u8 (= 1) | tag u64 (little-endian) | message bytes
//
// Backends carry these bytes opaquely; the core encodes them when a request or notify()
// is made and decodes them when a backend delivers them. Input from a peer is untrusted:
// a short envelope or an unknown version is refused (Corrupt), never guessed at.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry::detail {

inline constexpr std::uint8_t kNotificationWireVersion = 1;
inline constexpr std::size_t kNotificationEnvelopeBytes = 1 + 8;
// The largest envelope any backend is asked to carry; an agent's own cap
// (AgentOptions::max_notification_bytes) is checked by the core at both ends.
// (1 MiB less room for the backends' own headers: tcp and cuda_ipc frame up to 1 MiB.)
inline constexpr std::size_t kMaxNotificationMessageBytes = (1u << 20) - 4096;
inline constexpr std::size_t kMaxNotificationWireBytes = kMaxNotificationMessageBytes + kNotificationEnvelopeBytes;

struct DecodedNotification {
  std::uint64_t tag = 0;
  std::string message;
};

std::string encode_notification(std::uint64_t tag, std::string_view message);
Result<DecodedNotification> decode_notification(std::string_view bytes);

}  // namespace kvferry::detail
