#include "common/control_codec.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <new>

namespace kvferry::cli {
namespace {

constexpr std::array<std::uint8_t, 4> kMagic = {'K', 'V', 'F', 'C'};

void put_u32(std::uint8_t* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

std::uint32_t get_u32(const std::uint8_t* in) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= static_cast<std::uint32_t>(in[i]) << (8 * i);
  return value;
}

const char* known_name(std::uint32_t type) {
  switch (static_cast<ControlType>(type)) {
    case ControlType::kSetup: return "setup";
    case ControlType::kSetupReply: return "setup reply";
    case ControlType::kError: return "error";
    case ControlType::kVerifyBegin: return "verify begin";
    case ControlType::kVerifyReady: return "verify ready";
    case ControlType::kVerifyCheck: return "verify check";
    case ControlType::kVerifyResult: return "verify result";
    case ControlType::kStreamBegin: return "stream begin";
    case ControlType::kPingPongBegin: return "ping-pong begin";
    case ControlType::kBye: return "bye";
    case ControlType::kStreamReady: return "stream ready";
    case ControlType::kListening: return "listening";
    case ControlType::kReady: return "ready";
    case ControlType::kResult: return "result";
    case ControlType::kKvHello: return "kv.hello";
    case ControlType::kKvWelcome: return "kv.welcome";
    case ControlType::kKvRefused: return "kv.refused";
    case ControlType::kKvPulled: return "kv.pulled";
  }
  return nullptr;
}

}  // namespace

std::string control_type_name(std::uint32_t type) {
  const char* name = known_name(type);
  return name != nullptr ? std::string(name) : "type " + std::to_string(type);
}

std::vector<std::uint8_t> encode_control(ControlType type, const nlohmann::json& body) {
  std::vector<std::uint8_t> frame(kControlHeaderBytes);
  nlohmann::json::to_cbor(body.is_null() ? nlohmann::json::object() : body, frame);  // appends
  std::memcpy(frame.data(), kMagic.data(), kMagic.size());
  put_u32(frame.data() + 4, static_cast<std::uint32_t>(type));
  put_u32(frame.data() + 8, static_cast<std::uint32_t>(frame.size() - kControlHeaderBytes));
  return frame;
}

std::string encode_control_string(ControlType type, const nlohmann::json& body) {
  const std::vector<std::uint8_t> frame = encode_control(type, body);
  return std::string(frame.begin(), frame.end());
}

Result<ControlHeader> decode_control_header(std::span<const std::uint8_t> bytes, std::uint32_t max_body) {
  if (bytes.size() < kControlHeaderBytes) {
    return Corrupt("control frame: " + std::to_string(bytes.size()) + " bytes, shorter than its " +
                   std::to_string(kControlHeaderBytes) + "-byte header");
  }
  if (std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    return Corrupt("control frame: bad magic (not a kvferry tool peer, or a different version)");
  }
  const std::uint32_t type = get_u32(bytes.data() + 4);
  if (known_name(type) == nullptr) return Corrupt("control frame: unknown message type " + std::to_string(type));
  const std::uint32_t length = get_u32(bytes.data() + 8);
  const std::uint32_t cap = std::min(max_body, kMaxControlBodyBytes);
  if (length > cap) {
    return Corrupt("control frame: " + control_type_name(type) + " body of " + std::to_string(length) +
                   " bytes is over the limit of " + std::to_string(cap));
  }
  return ControlHeader{static_cast<ControlType>(type), length};
}

Result<nlohmann::json> decode_control_body(std::span<const std::uint8_t> bytes) {
  // allow_exceptions=false is not enough: nlohmann still throws on some hostile sizes
  // (e.g. out_of_range 408, "excessive object size", for a map that claims 2^62 entries).
  try {
    nlohmann::json body = nlohmann::json::from_cbor(bytes.begin(), bytes.end(), /*strict=*/true,
                                                    /*allow_exceptions=*/false);
    if (body.is_discarded() || !body.is_object()) return Corrupt("control frame: body is not one CBOR object");
    return body;
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("control frame: body is not valid CBOR (") + e.what() + ")");
  } catch (const std::bad_alloc&) {
    return Corrupt("control frame: body claims more memory than it can hold");
  }
}

Result<std::optional<ControlTaken>> take_control(std::span<const std::uint8_t> bytes, std::uint32_t max_body) {
  if (bytes.size() < kControlHeaderBytes) return std::optional<ControlTaken>();
  KVF_ASSIGN_OR_RETURN(ControlHeader header, decode_control_header(bytes, max_body));
  const std::size_t end = kControlHeaderBytes + header.body_bytes;
  if (bytes.size() < end) return std::optional<ControlTaken>();
  Result<nlohmann::json> body = decode_control_body(bytes.subspan(kControlHeaderBytes, header.body_bytes));
  if (!body.ok()) return body.status().with_context(control_type_name(static_cast<std::uint32_t>(header.type)));
  return std::optional<ControlTaken>(ControlTaken{ControlMessage{header.type, std::move(body).value()}, end});
}

Result<ControlMessage> decode_control(std::span<const std::uint8_t> bytes, std::uint32_t max_body) {
  KVF_ASSIGN_OR_RETURN(std::optional<ControlTaken> taken, take_control(bytes, max_body));
  if (!taken) return Corrupt("control frame: cut short at " + std::to_string(bytes.size()) + " bytes");
  if (taken->consumed != bytes.size()) {
    return Corrupt("control frame: " + std::to_string(bytes.size() - taken->consumed) +
                   " bytes after the end of the frame");
  }
  return std::move(taken->message);
}

Result<ControlMessage> decode_control(std::string_view bytes, std::uint32_t max_body) {
  return decode_control(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                        max_body);
}

Result<std::uint64_t> control_uint(const nlohmann::json& body, const char* key, std::uint64_t max) {
  const auto it = body.find(key);
  // CBOR decodes every non-negative integer as unsigned; a body built here may hold signed ones.
  const bool non_negative = it != body.end() && (it->is_number_unsigned() ||
                                                 (it->is_number_integer() && it->get<std::int64_t>() >= 0));
  if (!non_negative) {
    return Corrupt(std::string("control message: field '") + key + "' missing or not an unsigned number");
  }
  const auto value = it->get<std::uint64_t>();
  if (value > max) {
    return Corrupt(std::string("control message: field '") + key + "' is " + std::to_string(value) +
                   ", above " + std::to_string(max));
  }
  return value;
}

Result<std::string> control_string(const nlohmann::json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || !it->is_string()) {
    return Corrupt(std::string("control message: field '") + key + "' missing or not a string");
  }
  return it->get<std::string>();
}

Result<bool> control_bool(const nlohmann::json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || !it->is_boolean()) {
    return Corrupt(std::string("control message: field '") + key + "' missing or not a boolean");
  }
  return it->get<bool>();
}

Result<std::uint16_t> listening_port(const ControlMessage& report) {
  if (report.type != ControlType::kListening) {
    return Corrupt("expected a listening report, got " + control_type_name(static_cast<std::uint32_t>(report.type)));
  }
  KVF_ASSIGN_OR_RETURN(std::uint64_t port, control_uint(report.body, "port", 65535));
  if (port == 0) return Corrupt("a listening report with port 0");
  return static_cast<std::uint16_t>(port);
}

std::string control_error_text(const nlohmann::json& body) {
  const auto text = body.find("message");
  return text != body.end() && text->is_string() ? text->get<std::string>() : std::string("peer reported an error");
}

}  // namespace kvferry::cli
