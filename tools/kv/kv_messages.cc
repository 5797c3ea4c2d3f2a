#include "kv/kv_messages.h"

#include <limits>

namespace kvferry::cli {

std::string format_kv_hello() { return encode_control_string(ControlType::kKvHello); }

std::string format_kv_welcome() { return encode_control_string(ControlType::kKvWelcome); }

std::string format_kv_refused(const std::string& reason) {
  // The reason is ours (a geometry mismatch); cut it so the frame stays under the cap.
  return encode_control_string(ControlType::kKvRefused, {{"reason", reason.substr(0, kMaxKvMessageBodyBytes / 2)}});
}

std::string format_pulled(const KvPulledMessage& m) {
  return encode_control_string(ControlType::kKvPulled, {{"step", m.step},
                                                        {"part", m.part},
                                                        {"parts", m.parts},
                                                        {"bytes", m.bytes},
                                                        {"last", m.last}});
}

Result<ControlMessage> parse_kv_message(std::string_view text) {
  KVF_ASSIGN_OR_RETURN(ControlMessage message, decode_control(text, kMaxKvMessageBodyBytes));
  switch (message.type) {
    case ControlType::kKvHello:
    case ControlType::kKvWelcome:
    case ControlType::kKvRefused:
    case ControlType::kKvPulled:
      return message;
    default:
      return Corrupt("a " + control_type_name(static_cast<std::uint32_t>(message.type)) +
                     " message is not a serve/pull notification");
  }
}

Result<std::string> refused_reason(const nlohmann::json& body) { return control_string(body, "reason"); }

Result<KvPulledMessage> parse_pulled(const nlohmann::json& body) {
  constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();
  KvPulledMessage m;
  KVF_ASSIGN_OR_RETURN(m.step, control_uint(body, "step"));
  KVF_ASSIGN_OR_RETURN(const std::uint64_t part, control_uint(body, "part", kU32));
  KVF_ASSIGN_OR_RETURN(const std::uint64_t parts, control_uint(body, "parts", kU32));
  KVF_ASSIGN_OR_RETURN(m.bytes, control_uint(body, "bytes"));
  KVF_ASSIGN_OR_RETURN(m.last, control_bool(body, "last"));
  if (part == 0 || part > parts) {
    return Corrupt("kv.pulled: part " + std::to_string(part) + " of " + std::to_string(parts));
  }
  m.part = static_cast<std::uint32_t>(part);
  m.parts = static_cast<std::uint32_t>(parts);
  return m;
}

}  // namespace kvferry::cli
