// bench_report.h — one measured case, printed as a table row or as one JSON object.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace kvferry::cli {

enum class VerifyState { kNotRequested, kPassed, kFailed };

struct CaseResult {
  std::string backend;
  std::string op;       // "write", "read", "write+notify"
  std::string pattern;  // "scattered", "contiguous", "single"
  std::uint64_t block_size = 0;
  std::uint32_t blocks = 0;
  std::uint32_t layers = 0;
  std::uint64_t bytes = 0;  // per request
  std::uint64_t descriptors = 0;
  std::uint64_t descriptors_merged = 0;
  int iterations = 0;
  std::optional<int> streams;

  double gbps = 0;
  double p50_us = 0;
  double p99_us = 0;
  std::string requests = "fresh";  // "fresh" (created per request), "repost", ...
  double prep_us = 0;  // create_transfer (incl. merging) + post(), median CPU of the caller
  std::optional<double> create_us;  // create_transfer alone, median (where timed per request)
  double post_us = 0;    // post() alone, median

  std::string ceiling_name;
  double ceiling_gbps = 0;
  std::optional<double> ceiling_p50_us;  // latency cases: the ceiling is a round trip
  double ratio = 0;  // throughput: gbps / ceiling; latency: ceiling p50 / our p50

  VerifyState verified = VerifyState::kNotRequested;
  std::string verify_message;
};

nlohmann::json to_json(const CaseResult& result);

void print_table_header();
void print_table_row(const CaseResult& result);

}  // namespace kvferry::cli
