#include "common/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>

namespace kvferry::cli {
namespace {

double nearest_rank(const std::vector<double>& sorted, double fraction) {
  const auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

Percentiles percentiles(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  return Percentiles{nearest_rank(samples, 0.50), nearest_rank(samples, 0.99)};
}

double median(std::vector<double> samples) { return percentiles(std::move(samples)).p50; }

}  // namespace kvferry::cli
