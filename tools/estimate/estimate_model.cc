#include "estimate/estimate_model.h"

#include <charconv>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

struct Candidate {
  bool read = false;
  std::uint64_t bytes = 0;
  double gbps = 0;
  std::string what;
};

bool better(const Candidate& a, const Candidate& than) {
  if (a.read != than.read) return a.read;
  return a.bytes >= than.bytes;  // ties: the later line wins
}

}  // namespace

Result<std::vector<PathBandwidth>> read_measured_bandwidths(const std::vector<std::string>& files) {
  std::map<std::string, Candidate> best;
  std::map<std::string, double> latency;
  std::vector<std::string> order;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) return NotFound("--bench '" + file + "': cannot open it");
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty() || line[0] != '{') continue;  // tables or logs mixed in
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("backend") || !j["backend"].is_string()) continue;
      const std::string backend = j["backend"].get<std::string>();
      const std::string op = j.value("op", j.contains("steps") ? "pull" : "");
      if (op == "write+notify") {
        latency[backend] = j.value("p50_us", 0.0);
        continue;
      }
      if (op != "read" && op != "write" && op != "pull") continue;
      const double gbps = j.value("gbps", 0.0);
      if (!(gbps > 0))
        return Corrupt(file + ":" + std::to_string(number) + ": a case without a positive gbps");
      Candidate c{op != "write", j.value("bytes", std::uint64_t{0}), gbps,
                  (op == "pull" ? "kvferry pull" : "bench " + op) + ", " +
                      format_bytes(j.value("bytes", std::uint64_t{0})) + " requests (" + file + ")"};
      auto it = best.find(backend);
      if (it == best.end()) {
        order.push_back(backend);
        best.emplace(backend, c);
      } else if (better(c, it->second)) {
        it->second = c;
      }
    }
  }
  if (best.empty())
    return NotFound("no throughput case in the --bench files (expected `kvferry bench --json` output)");
  std::vector<PathBandwidth> paths;
  for (const std::string& backend : order) {
    const Candidate& c = best[backend];
    const auto l = latency.find(backend);
    paths.push_back({backend, c.gbps, l == latency.end() ? 0.0 : l->second, c.what});
  }
  return paths;
}

Result<std::vector<PathBandwidth>> parse_assumed_bandwidths(const std::vector<std::string>& entries) {
  std::vector<PathBandwidth> paths;
  for (const std::string& entry : entries) {
    const auto eq = entry.find('=');
    double gbps = 0;
    if (eq == std::string::npos || eq == 0 ||
        std::from_chars(entry.data() + eq + 1, entry.data() + entry.size(), gbps).ec != std::errc() ||
        !(gbps > 0)) {
      return InvalidArgument("--assume '" + entry + "': expected NAME=GB/s, e.g. rdma-400g=45");
    }
    paths.push_back({entry.substr(0, eq), gbps, 0, "assumed, not measured"});
  }
  return paths;
}

std::vector<EstimateRow> estimate(const EstimateInputs& in, const std::vector<std::uint64_t>& tokens,
                                  const std::vector<PathBandwidth>& paths) {
  std::vector<EstimateRow> rows;
  for (std::uint64_t t : tokens) {
    EstimateRow row;
    row.tokens = t;
    row.kv_bytes = std::uint64_t{in.layout.blocks_for_tokens(t)} * in.layout.block_bytes_all_layers();
    row.prefill_ms = static_cast<double>(t) / in.prefill_tokens_per_s * 1e3;
    for (const PathBandwidth& p : paths) {
      PathCost cost;
      cost.transfer_ms = p.latency_us / 1e3 + static_cast<double>(row.kv_bytes) / (p.gbps * 1e9) * 1e3;
      cost.ttft_ms = row.prefill_ms + cost.transfer_ms + in.decode_step_ms;
      cost.share = cost.transfer_ms / cost.ttft_ms;
      row.paths.push_back(cost);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace kvferry::cli
