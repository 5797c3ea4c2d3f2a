// kv_messages.h — the few notifications `kvferry serve` and `kvferry pull` exchange, as
// control_codec.h frames. Everything else travels in the agents' metadata (the
// "kv.pool" entry).
//
//   client -> server  kKvHello                   after fetching the server's metadata
//                                                 (the client's own pool came with it)
//   server -> client  kKvWelcome                 the pools are compatible
//                     kKvRefused {"reason"}      they are not; the reason names fields
//   client -> server  kKvPulled {"step", "part", "parts", "bytes", "last"}
//                     attached to each transfer of a step: delivered only after that
//                     transfer's bytes left the server, so it is also the "done" of
//                     that transfer (no second message). last marks the final step.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/control_codec.h"

namespace kvferry::cli {

// Our notifications are a few dozen bytes; a refusal's reason a few hundred.
inline constexpr std::uint32_t kMaxKvMessageBodyBytes = 4096;

struct KvPulledMessage {
  std::uint64_t step = 0;
  std::uint32_t part = 0;   // 1-based
  std::uint32_t parts = 0;  // transfers of the step
  std::uint64_t bytes = 0;  // of this part
  bool last = false;
};

std::string format_kv_hello();
std::string format_kv_welcome();
std::string format_kv_refused(const std::string& reason);
std::string format_pulled(const KvPulledMessage& message);

// A notification's frame: Corrupt unless exactly one frame of a serve/pull type.
Result<ControlMessage> parse_kv_message(std::string_view text);
// A kKvRefused body's reason.
Result<std::string> refused_reason(const nlohmann::json& body);
// A kKvPulled body: Corrupt unless every field is there and 1 <= part <= parts.
Result<KvPulledMessage> parse_pulled(const nlohmann::json& body);

}  // namespace kvferry::cli
