// latency_stats.h — medians and tail percentiles of measured samples.
#pragma once

#include <vector>

namespace kvferry::cli {

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
};

// Nearest-rank percentiles (p99 of 20 samples is the largest one). Empty -> zeros.
Percentiles percentiles(std::vector<double> samples);
double median(std::vector<double> samples);

}  // namespace kvferry::cli
