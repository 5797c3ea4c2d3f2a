// bench_protocol.h — the bodies of the bench's control messages, to and from JSON.
//
// Sequence: kSetup -> kSetupReply (or kError); then, per case, any of
//   kVerifyBegin -> kVerifyReady [transfer] (write: kVerifyCheck ->) kVerifyResult
//   kStreamBegin [-> kStreamReady, extra connections] -> raw bytes (see bench_ceiling.h)
//   kPingPongBegin -> raw 8-byte ping-pongs
// and finally kBye. The target derives which of its blocks to fill or check from the
// seeds it is sent, so block lists never travel.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/block_choice.h"
#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

// Attached to the verified write so the target knows all its bytes have landed.
inline constexpr const char* kVerifyNotification = "kvferry-bench-verify";

struct SessionSetup {
  std::string backend;
  std::map<std::string, std::string> backend_params;
  PoolShape shape;
  std::vector<std::uint8_t> metadata;  // the initiator agent's (empty with a metadata service)
  std::string metadata_service;        // etcd://...: find the initiator there, by name
  std::string agent;                   // the initiator agent's name
};

struct SetupReply {
  std::vector<std::uint8_t> metadata;  // the target agent's (empty with a metadata service)
  std::uint64_t pool_address = 0;      // where the target's pool starts, for descriptors
  std::string agent;                   // the target agent's name
};

// One verified request: the target fills (read) or poisons and later checks (write)
// the blocks chosen by `remote_seed`; slot i of every layer holds pattern
// (data_seed, layer, i).
struct VerifyPlan {
  TransferOp op = TransferOp::kWrite;
  BlockPattern pattern = BlockPattern::kScattered;
  std::uint32_t blocks = 0;
  std::uint64_t remote_seed = 0;
  std::uint64_t data_seed = 0;
};

struct VerifyOutcome {
  bool ok = false;
  std::uint64_t checked_bytes = 0;
  std::string message;  // the first mismatch, when !ok
};

// A raw-stream ceiling: `reps` times `bytes`, in the direction of `op`, over `streams`
// TCP connections at once (the control socket and streams - 1 more, bench_ceiling.h).
struct StreamPlan {
  TransferOp op = TransferOp::kWrite;
  std::uint64_t bytes = 0;
  std::uint32_t reps = 0;
  std::uint32_t streams = 1;
};
// Most streams a target opens for a ceiling (the tcp backend's own limit).
inline constexpr std::uint32_t kMaxCeilingStreams = 64;

nlohmann::json to_json(const SessionSetup& setup);
nlohmann::json to_json(const SetupReply& reply);
nlohmann::json to_json(const VerifyPlan& plan);
nlohmann::json to_json(const VerifyOutcome& outcome);
nlohmann::json to_json(const StreamPlan& plan);

// Parsers of untrusted bodies: a missing or mistyped field is Corrupt, never a throw.
Result<SessionSetup> parse_session_setup(const nlohmann::json& body);
Result<SetupReply> parse_setup_reply(const nlohmann::json& body);
Result<VerifyPlan> parse_verify_plan(const nlohmann::json& body);
Result<VerifyOutcome> parse_verify_outcome(const nlohmann::json& body);
Result<StreamPlan> parse_stream_plan(const nlohmann::json& body);

}  // namespace kvferry::cli
