#include "bench/bench_report.h"

#include <cstdio>

#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

const char* verify_word(VerifyState state) {
  switch (state) {
    case VerifyState::kPassed: return "yes";
    case VerifyState::kFailed: return "FAILED";
    case VerifyState::kNotRequested: break;
  }
  return "-";
}

std::string ceiling_text(const CaseResult& r) {
  char text[96];
  if (r.ceiling_p50_us) {
    std::snprintf(text, sizeof(text), "%.1f us %s", *r.ceiling_p50_us, r.ceiling_name.c_str());
  } else {
    std::snprintf(text, sizeof(text), "%.2f GB/s %s", r.ceiling_gbps, r.ceiling_name.c_str());
  }
  return text;
}

}  // namespace

nlohmann::json to_json(const CaseResult& r) {
  nlohmann::json j{{"backend", r.backend},
                   {"op", r.op},
                   {"block_size", r.block_size},
                   {"blocks", r.blocks},
                   {"layers", r.layers},
                   {"pattern", r.pattern},
                   {"bytes", r.bytes},
                   {"descriptors", r.descriptors},
                   {"descriptors_merged", r.descriptors_merged},
                   {"iterations", r.iterations},
                   {"gbps", r.gbps},
                   {"p50_us", r.p50_us},
                   {"p99_us", r.p99_us},
                   {"prep_us", r.prep_us},
                   {"create_post_cpu_us", r.prep_us},
                   {"requests", r.requests},
                   {"post_us", r.post_us},
                   {"ceiling_gbps", r.ceiling_gbps},
                   {"ceiling_name", r.ceiling_name},
                   {"ratio", r.ratio},
                   {"verified", r.verified == VerifyState::kPassed}};
  if (r.streams) j["streams"] = *r.streams;
  if (r.create_us) j["create_us"] = *r.create_us;
  if (r.ceiling_p50_us) j["ceiling_p50_us"] = *r.ceiling_p50_us;
  if (r.verified == VerifyState::kFailed) j["verify_error"] = r.verify_message;
  return j;
}

void print_table_header() {
  std::printf("%-8s %-12s %-8s %-10s %-15s %7s %9s %9s %8s  %-22s %6s %s\n", "backend", "op",
              "block", "bytes/req", "desc->merged", "GB/s", "p50 us", "p99 us", "cpu us",
              "ceiling", "ratio", "verified");
  std::printf("(cpu us: CPU time of the calling thread for create_transfer + post, median)\n");
  std::fflush(stdout);
}

void print_table_row(const CaseResult& r) {
  const std::string descriptors = std::to_string(r.descriptors) + "->" + std::to_string(r.descriptors_merged);
  std::printf("%-8s %-12s %-8s %-10s %-15s %7.2f %9.1f %9.1f %8.1f  %-22s %6.2f %s\n",
              r.backend.c_str(), r.op.c_str(), format_bytes(r.block_size).c_str(),
              format_bytes(r.bytes).c_str(), descriptors.c_str(), r.gbps, r.p50_us, r.p99_us,
              r.prep_us, ceiling_text(r).c_str(), r.ratio, verify_word(r.verified));
  if (r.verified == VerifyState::kFailed) std::printf("  verification: %s\n", r.verify_message.c_str());
  std::fflush(stdout);
}

}  // namespace kvferry::cli
