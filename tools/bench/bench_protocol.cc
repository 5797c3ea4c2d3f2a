#include "bench/bench_protocol.h"

#include <functional>

namespace kvferry::cli {
namespace {

using nlohmann::json;

std::vector<std::uint8_t> binary_of(const json& value) {
  if (value.is_binary()) return value.get_binary();
  return value.get<std::vector<std::uint8_t>>();  // tolerate a plain byte array
}

// Runs `parse`, turning nlohmann's exceptions (missing key, wrong type) into Corrupt.
template <typename T>
Result<T> parse_guarded(const char* what, const std::function<T()>& parse) {
  try {
    return parse();
  } catch (const json::exception& e) {
    return Corrupt(std::string("control message '") + what + "': " + e.what());
  }
}

TransferOp op_of(const json& value) {
  return value.get<std::string>() == "read" ? TransferOp::kRead : TransferOp::kWrite;
}

BlockPattern pattern_of(const json& value) {
  return value.get<std::string>() == "contiguous" ? BlockPattern::kContiguous
                                                  : BlockPattern::kScattered;
}

}  // namespace

json to_json(const SessionSetup& setup) {
  return json{{"backend", setup.backend},
              {"backend_params", setup.backend_params},
              {"layers", setup.shape.layers},
              {"blocks_per_layer", setup.shape.blocks_per_layer},
              {"block_size", setup.shape.block_size},
              {"metadata", json::binary(setup.metadata)},
              {"metadata_service", setup.metadata_service},
              {"agent", setup.agent}};
}

json to_json(const SetupReply& reply) {
  return json{{"metadata", json::binary(reply.metadata)}, {"pool_address", reply.pool_address},
              {"agent", reply.agent}};
}

json to_json(const VerifyPlan& plan) {
  return json{{"op", std::string(to_string(plan.op))},
              {"pattern", to_string(plan.pattern)},
              {"blocks", plan.blocks},
              {"remote_seed", plan.remote_seed},
              {"data_seed", plan.data_seed}};
}

json to_json(const VerifyOutcome& outcome) {
  return json{{"ok", outcome.ok}, {"checked_bytes", outcome.checked_bytes}, {"message", outcome.message}};
}

json to_json(const StreamPlan& plan) {
  return json{{"op", std::string(to_string(plan.op))}, {"bytes", plan.bytes}, {"reps", plan.reps},
              {"streams", plan.streams}};
}

Result<SessionSetup> parse_session_setup(const json& body) {
  return parse_guarded<SessionSetup>("setup", [&] {
    SessionSetup setup;
    setup.backend = body.at("backend").get<std::string>();
    setup.backend_params = body.at("backend_params").get<std::map<std::string, std::string>>();
    setup.shape.layers = body.at("layers").get<std::uint32_t>();
    setup.shape.blocks_per_layer = body.at("blocks_per_layer").get<std::uint32_t>();
    setup.shape.block_size = body.at("block_size").get<std::uint64_t>();
    setup.metadata = binary_of(body.at("metadata"));
    setup.metadata_service = body.value("metadata_service", std::string());
    setup.agent = body.value("agent", std::string());
    return setup;
  });
}

Result<SetupReply> parse_setup_reply(const json& body) {
  return parse_guarded<SetupReply>("setup reply", [&] {
    SetupReply reply;
    reply.metadata = binary_of(body.at("metadata"));
    reply.pool_address = body.at("pool_address").get<std::uint64_t>();
    reply.agent = body.value("agent", std::string());
    return reply;
  });
}

Result<VerifyPlan> parse_verify_plan(const json& body) {
  return parse_guarded<VerifyPlan>("verify", [&] {
    VerifyPlan plan;
    plan.op = op_of(body.at("op"));
    plan.pattern = pattern_of(body.at("pattern"));
    plan.blocks = body.at("blocks").get<std::uint32_t>();
    plan.remote_seed = body.at("remote_seed").get<std::uint64_t>();
    plan.data_seed = body.at("data_seed").get<std::uint64_t>();
    return plan;
  });
}

Result<VerifyOutcome> parse_verify_outcome(const json& body) {
  return parse_guarded<VerifyOutcome>("verify result", [&] {
    VerifyOutcome outcome;
    outcome.ok = body.at("ok").get<bool>();
    outcome.checked_bytes = body.at("checked_bytes").get<std::uint64_t>();
    outcome.message = body.at("message").get<std::string>();
    return outcome;
  });
}

Result<StreamPlan> parse_stream_plan(const json& body) {
  KVF_ASSIGN_OR_RETURN(StreamPlan plan, parse_guarded<StreamPlan>("stream", [&] {
    StreamPlan parsed;
    parsed.op = op_of(body.at("op"));
    parsed.bytes = body.at("bytes").get<std::uint64_t>();
    parsed.reps = body.at("reps").get<std::uint32_t>();
    parsed.streams = body.value("streams", std::uint32_t{1});
    return parsed;
  }));
  if (plan.streams == 0 || plan.streams > kMaxCeilingStreams)
    return Corrupt("control message 'stream': " + std::to_string(plan.streams) + " streams, outside 1.." +
                   std::to_string(kMaxCeilingStreams));
  return plan;
}

}  // namespace kvferry::cli
