#include "common/control_channel.h"

#include <array>
#include <string>
#include <vector>

#include "common/cli_util.h"

namespace kvferry::cli {

Status ControlChannel::send(ControlType type, const nlohmann::json& body) {
  const std::vector<std::uint8_t> frame = encode_control(type, body);
  return send_all(fd(), frame.data(), frame.size()).with_context("control send");
}

Result<ControlMessage> ControlChannel::receive() {
  std::array<std::uint8_t, kControlHeaderBytes> header{};
  KVF_RETURN_IF_ERROR(recv_all(fd(), header.data(), header.size()));
  KVF_ASSIGN_OR_RETURN(ControlHeader parsed, decode_control_header(header, kMaxChannelBodyBytes));
  std::vector<std::uint8_t> body(parsed.body_bytes);
  KVF_RETURN_IF_ERROR(recv_all(fd(), body.data(), body.size()).with_context("control receive"));
  KVF_ASSIGN_OR_RETURN(nlohmann::json decoded, decode_control_body(body));
  return ControlMessage{parsed.type, std::move(decoded)};
}

Result<ControlMessage> ControlChannel::receive_when_ready(std::chrono::milliseconds idle_limit,
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

Result<nlohmann::json> ControlChannel::expect(ControlType type) {
  KVF_ASSIGN_OR_RETURN(ControlMessage message, receive());
  if (message.type == ControlType::kError) return RemoteError(control_error_text(message.body));
  if (message.type != type) {
    return Corrupt("control connection: expected " + control_type_name(static_cast<std::uint32_t>(type)) +
                   ", got " + control_type_name(static_cast<std::uint32_t>(message.type)));
  }
  return std::move(message.body);
}

void ControlChannel::send_error(const Status& status) {
  (void)send(ControlType::kError, nlohmann::json{{"message", status.to_string()}});
}

}  // namespace kvferry::cli
