// kv_messages.h — the few notifications `kvferry serve` and `kvferry pull` exchange.
// Everything else travels in the agents' metadata (the "kv.pool" entry).
//
//   client -> server  "kv.hello"                 after fetching the server's metadata
//                                                 (the client's own pool came with it)
//   server -> client  "kv.welcome"               the pools are compatible
//                     "kv.refused <reason>"      they are not; the reason names fields
//   client -> server  "kv.pulled step=S part=P/N bytes=B last=0|1"
//                     attached to each transfer of a step: delivered only after that
//                     transfer's bytes left the server, so it is also the "done" of
//                     that transfer (no second message). last=1 marks the final step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvferry::cli {

inline constexpr std::string_view kKvHello = "kv.hello";
inline constexpr std::string_view kKvWelcome = "kv.welcome";
inline constexpr std::string_view kKvRefusedPrefix = "kv.refused ";

struct KvPulledMessage {
  std::uint64_t step = 0;
  std::uint32_t part = 0;   // 1-based
  std::uint32_t parts = 0;  // transfers of the step
  std::uint64_t bytes = 0;  // of this part
  bool last = false;
};

std::string format_pulled(const KvPulledMessage& message);
// nullopt unless `text` is a well-formed pulled message.
std::optional<KvPulledMessage> parse_pulled(std::string_view text);

}  // namespace kvferry::cli
