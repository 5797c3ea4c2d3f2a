// control_channel.h — the bench's own length-prefixed message connection.
//
// Frame: "KVFB" | type (u32 LE) | payload length (u64 LE) | payload (CBOR of a JSON
// object). Binary fields (agent metadata) travel as CBOR byte strings. The same socket
// also carries the raw byte streams of the TCP ceiling, outside framing, when both sides
// have agreed to it by a message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include <nlohmann/json.hpp>

#include "kvferry/kvferry.h"
#include "common/socket_util.h"

namespace kvferry::cli {

enum class MessageType : std::uint32_t {
  kSetup = 1,      // initiator -> target: case geometry, backend, initiator metadata
  kSetupReply,     // target -> initiator: target metadata and pool base address
  kError,          // either way: {"message": ...}; the sender gives up the session
  kVerifyBegin,    // initiator -> target: poison (write) or fill (read) for one request
  kVerifyReady,    // target -> initiator
  kVerifyCheck,    // initiator -> target: the verified write finished, compare now
  kVerifyResult,   // target -> initiator: {"ok", "checked_bytes", "message"}
  kStreamBegin,    // initiator -> target: raw stream ceiling {"op", "bytes", "reps"}
  kPingPongBegin,  // initiator -> target: 8-byte ping-pong ceiling {"count"}
  kBye,            // initiator -> target: session over
};

struct Message {
  MessageType type = MessageType::kError;
  nlohmann::json body;
};

class ControlChannel {
 public:
  explicit ControlChannel(FileDescriptor socket) : socket_(std::move(socket)) {}

  int fd() const { return socket_.get(); }

  Status send(MessageType type, const nlohmann::json& body);
  // Reads one message; the first byte must arrive within the socket's I/O timeout.
  // A connection closed cleanly before a frame starts is PeerLost.
  Result<Message> receive();
  // Like receive(), but first waits up to `idle_limit` for the next frame to start,
  // calling `on_idle` every `slice`; `on_idle` returning false abandons (Cancelled).
  Result<Message> receive_when_ready(std::chrono::milliseconds idle_limit,
                                     std::chrono::milliseconds slice,
                                     const std::function<bool()>& on_idle);
  // receive() that insists on `type`; a kError reply becomes RemoteError(message).
  Result<nlohmann::json> expect(MessageType type);

  // Sends kError with a message; failures to send are ignored (we are giving up anyway).
  void send_error(const Status& status);

 private:
  FileDescriptor socket_;
};

}  // namespace kvferry::cli
