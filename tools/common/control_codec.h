// control_codec.h — the one framing of every control message the kvferry tools send
// each other: bench's control connection (control_channel.h), the report a spawned
// helper writes to its parent (child_process.h: demo, bench, soak and tp processes), and
// the notifications of `kvferry serve` / `pull` (kv_messages.h).
//
// Frame: "KVFC" | type u32 LE | body length u32 LE | body (CBOR of a JSON object).
// Binary fields (agent metadata) travel as CBOR byte strings.
//
// Everything decoded here comes from another process or the network: the header is
// checked (magic, a known type, the body within the receiver's cap) before a byte of
// the body is awaited or allocated; a frame cut short, with bytes after it, or whose
// body is not one CBOR object is Corrupt, never a throw or a crash. A receiver then
// checks that the type is one it expects (ControlChannel::expect, the callers of
// ChildProcess::read_report). Pure functions: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

// Numbers travel on the wire: never renumber, only append.
enum class ControlType : std::uint32_t {
  // kvferry bench, initiator <-> target (bench_protocol.h has the bodies).
  kSetup = 1,      // initiator -> target: pool, backend, initiator metadata
  kSetupReply,     // target -> initiator: target metadata and pool
  kError,          // either way: {"message": ...}; the sender gives up the session
  kVerifyBegin,    // initiator -> target: poison (write) or fill (read) for one request
  kVerifyReady,    // target -> initiator
  kVerifyCheck,    // initiator -> target: the verified write finished, compare now
  kVerifyResult,   // target -> initiator: {"ok", "checked_bytes", "message"}
  kStreamBegin,    // initiator -> target: raw stream ceiling {"op", "bytes", "reps"}
  kPingPongBegin,  // initiator -> target: 8-byte ping-pong ceiling {"count"}
  kBye,            // initiator -> target: session over
  kStreamReady,    // target -> initiator: {"port"} where the extra streams of a ceiling connect
  // A spawned helper process to its parent, on the report pipe.
  kListening = 32,  // {"port", ...}: where to reach it (bench target, demo prefill, soak peer, tp prefill rank)
  kReady,           // a tp decode rank is set up and waits for the go signal
  kResult,          // a tp decode rank's result (tp_run.h: TpRankResult as JSON)
  // kvferry serve / pull, as notifications (kv_messages.h).
  kKvHello = 48,  // client -> server: my pool is in my metadata
  kKvWelcome,     // server -> client: the pools are compatible
  kKvRefused,     // server -> client: {"reason"}: they are not
  kKvPulled,      // client -> server: {"step", "part", "parts", "bytes", "last"}
};

// "setup", "kv.pulled", ...; "type N" for a number outside the enum.
std::string control_type_name(std::uint32_t type);

inline constexpr std::size_t kControlHeaderBytes = 12;
// The largest body any receiver accepts; each passes its own, smaller cap.
inline constexpr std::uint32_t kMaxControlBodyBytes = 64u << 20;

struct ControlMessage {
  ControlType type = ControlType::kError;
  nlohmann::json body = nlohmann::json::object();
};

// One frame. `body` must be a JSON object (an empty one when the type says it all).
std::vector<std::uint8_t> encode_control(ControlType type, const nlohmann::json& body = nlohmann::json::object());
// The same bytes in a string, for notifications.
std::string encode_control_string(ControlType type, const nlohmann::json& body = nlohmann::json::object());

struct ControlHeader {
  ControlType type = ControlType::kError;
  std::uint32_t body_bytes = 0;
};
// The first kControlHeaderBytes of `bytes`: Corrupt on a wrong magic, an unknown type or
// a body over `max_body` bytes. Requires bytes.size() >= kControlHeaderBytes.
Result<ControlHeader> decode_control_header(std::span<const std::uint8_t> bytes, std::uint32_t max_body);
// A body: Corrupt unless exactly one CBOR-encoded JSON object.
Result<nlohmann::json> decode_control_body(std::span<const std::uint8_t> bytes);

// The first frame of a stream's `bytes`: the message and the bytes it took, nullopt
// while the frame is still incomplete, Corrupt as soon as the header is bad (so a
// reader never waits on, or buffers, a body it would refuse).
struct ControlTaken {
  ControlMessage message;
  std::size_t consumed = 0;
};
Result<std::optional<ControlTaken>> take_control(std::span<const std::uint8_t> bytes, std::uint32_t max_body);

// Exactly one frame (a notification): Corrupt if cut short or followed by other bytes.
Result<ControlMessage> decode_control(std::span<const std::uint8_t> bytes, std::uint32_t max_body);
Result<ControlMessage> decode_control(std::string_view bytes, std::uint32_t max_body);

// Fields of an untrusted body: Corrupt, naming the field, when missing, of another
// type, or (numbers) above `max`.
Result<std::uint64_t> control_uint(const nlohmann::json& body, const char* key,
                                   std::uint64_t max = UINT64_MAX);
Result<std::string> control_string(const nlohmann::json& body, const char* key);
Result<bool> control_bool(const nlohmann::json& body, const char* key);

// The port of a kListening report (1..65535); Corrupt for any other message.
Result<std::uint16_t> listening_port(const ControlMessage& report);

// A kError body's message, or a generic one when it has none.
std::string control_error_text(const nlohmann::json& body);

}  // namespace kvferry::cli
