// control_channel.h — the bench's control connection: control_codec.h frames on a TCP
// socket. The same socket also carries the raw byte streams of the TCP ceiling, outside
// framing, when both sides have agreed to it by a message. Not thread-safe: one owner.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include <nlohmann/json.hpp>

#include "kvferry/kvferry.h"
#include "common/control_codec.h"
#include "common/socket_util.h"

namespace kvferry::cli {

// The bench's bodies are small; a target's metadata with a large registration is a few
// KiB. A larger length is a foreign or corrupt peer, not a message worth allocating for.
inline constexpr std::uint32_t kMaxChannelBodyBytes = 16u << 20;

class ControlChannel {
 public:
  explicit ControlChannel(FileDescriptor socket) : socket_(std::move(socket)) {}

  int fd() const { return socket_.get(); }

  Status send(ControlType type, const nlohmann::json& body = nlohmann::json::object());
  // Reads one message; the first byte must arrive within the socket's I/O timeout.
  // A connection closed cleanly before a frame starts is PeerLost.
  Result<ControlMessage> receive();
  // Like receive(), but first waits up to `idle_limit` for the next frame to start,
  // calling `on_idle` every `slice`; `on_idle` returning false abandons (Cancelled).
  Result<ControlMessage> receive_when_ready(std::chrono::milliseconds idle_limit,
                                     std::chrono::milliseconds slice,
                                     const std::function<bool()>& on_idle);
  // receive() that insists on `type`; a kError reply becomes RemoteError(message).
  Result<nlohmann::json> expect(ControlType type);

  // Sends kError with a message; failures to send are ignored (we are giving up anyway).
  void send_error(const Status& status);

 private:
  FileDescriptor socket_;
};

}  // namespace kvferry::cli
