// tp_wire.h — the bytes heterogeneous-TP endpoints exchange: the "kv.tp" metadata entry,
// a decode rank's ask for a share (TpAsk, by Agent::notify), the notification that rides
// on every data write (TpLanded) and a sender's refusal (TpRefusal). Little-endian,
// versioned by a 4-byte magic and a version byte; decoders take untrusted bytes and
// check every length and field (Corrupt otherwise, never a crash).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/kv/tp_mapping.h"
#include "kvferry/kv/tp_transfer.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry::tp {

inline constexpr std::size_t kMaxRequestIdBytes = 256;

enum class Role : std::uint8_t { kPrefill = 0, kDecode = 1 };

// The "kv.tp" entry.
struct EndpointInfo {
  Role role = Role::kPrefill;
  TpGroups groups;
  std::uint32_t rank = 0;
  std::uint64_t instance = 0;
  std::uint64_t heartbeat_address = 0;  // prefill: 8 registered host bytes to probe
};
std::vector<std::uint8_t> encode(const EndpointInfo& info);
Result<EndpointInfo> decode_endpoint(std::span<const std::uint8_t> bytes);

// Decode rank -> prefill rank: "send me this share of this request, there".
struct TpAsk {
  std::string request;
  TpPath path = TpPath::kHostStaging;  // never kAuto on the wire
  std::uint32_t decode_rank = 0;
  std::uint64_t receiver_instance = 0;
  TpGroups groups;
  std::uint64_t tokens = 0;             // the whole request
  TpShare share;                        // heads in model numbering, both offsets
  std::uint32_t decode_heads = 0;       // the decode rank's local heads (staging rows)
  // Staging paths: the decode rank's slot for the whole request.
  std::uint64_t slot_address = 0;
  std::uint64_t slot_bytes = 0;
  MemoryKind slot_kind = MemoryKind::kDram;
  std::uint32_t slot_device = 0;
  // Direct path: the decode rank's block table, as runs of consecutive ids.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> block_runs;  // (first, count)
};
std::vector<std::uint8_t> encode(const TpAsk& ask);

// Prefill rank -> decode rank, as the write's notification: these tokens of this share
// have landed.
struct TpLanded {
  std::string request;
  std::uint32_t prefill_rank = 0;
  std::uint64_t sender_instance = 0;
  std::uint64_t first_token = 0;
  std::uint64_t tokens = 0;
  HeadRange heads;  // model numbering
};
std::vector<std::uint8_t> encode(const TpLanded& landed);

// Prefill rank -> decode rank: the ask cannot be served, and why.
struct TpRefusal {
  std::string request;
  std::uint64_t sender_instance = 0;
  std::string reason;
};
std::vector<std::uint8_t> encode(const TpRefusal& refusal);

// One of ours, decoded; or nullopt for a notification that is not a TP message.
struct TpMessage {
  enum class Kind { kAsk, kLanded, kRefusal } kind = Kind::kAsk;
  TpAsk ask;
  TpLanded landed;
  TpRefusal refusal;
};
// nullopt: not ours (no TP magic). An error: ours but malformed.
std::optional<Result<TpMessage>> decode_message(std::string_view bytes);

std::string as_string(const std::vector<std::uint8_t>& bytes);

// Block table <-> runs of consecutive ids (asks carry runs: tables are mostly runs).
std::vector<std::pair<std::uint32_t, std::uint32_t>> to_runs(std::span<const std::uint32_t> blocks);
std::vector<std::uint32_t> from_runs(std::span<const std::pair<std::uint32_t, std::uint32_t>> runs);

}  // namespace kvferry::tp
