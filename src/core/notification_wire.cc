#include "core/notification_wire.h"

#include <cstring>

namespace kvferry::detail {

std::string encode_notification(std::uint64_t tag, std::string_view message) {
  std::string out(kNotificationEnvelopeBytes + message.size(), '\0');
  out[0] = static_cast<char>(kNotificationWireVersion);
  for (int i = 0; i < 8; ++i) out[1 + static_cast<std::size_t>(i)] = static_cast<char>((tag >> (8 * i)) & 0xff);
  if (!message.empty()) std::memcpy(out.data() + kNotificationEnvelopeBytes, message.data(), message.size());
  return out;
}

Result<DecodedNotification> decode_notification(std::string_view bytes) {
  if (bytes.size() < kNotificationEnvelopeBytes)
    return Corrupt("notification of " + std::to_string(bytes.size()) + " bytes is shorter than its " +
                   std::to_string(kNotificationEnvelopeBytes) + "-byte envelope");
  const auto version = static_cast<std::uint8_t>(bytes[0]);
  if (version != kNotificationWireVersion)
    return Corrupt("notification envelope version " + std::to_string(version) + " is not known here (this build reads " +
                   std::to_string(kNotificationWireVersion) + ")");
  DecodedNotification out;
  for (int i = 0; i < 8; ++i)
    out.tag |= std::uint64_t{static_cast<std::uint8_t>(bytes[1 + static_cast<std::size_t>(i)])} << (8 * i);
  out.message.assign(bytes.substr(kNotificationEnvelopeBytes));
  return out;
}

}  // namespace kvferry::detail
