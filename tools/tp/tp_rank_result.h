// tp_rank_result.h — what a decode rank of a heterogeneous-TP run reports to its parent
// (one JSON object on the control framing). The parent reads it from another process:
// from_json checks every field's presence and type and never throws.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct TpRankResult {
  std::uint32_t decode_rank = 0;
  std::vector<std::string> sources;
  std::uint64_t bytes = 0;  // per request
  std::vector<double> ms;   // per request, expect() to complete
  std::vector<std::int64_t> start_ns, end_ns;  // steady clock (CLOCK_MONOTONIC), per request
  std::string path;
  std::uint64_t pieces = 0;
  double scatter_ms = 0;
  bool verified = false;
  std::string message;  // the verification failure or the error
  bool failed = false;  // an error, not a verification failure

  nlohmann::json to_json() const;
  // Every field of to_json() is required with its type; Corrupt names the first field
  // that is missing or of the wrong type (or the body that is not an object).
  static Result<TpRankResult> from_json(const nlohmann::json& j);
};

}  // namespace kvferry::cli
