#include "common/progress_line.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

namespace kvferry::cli {

ProgressLine::ProgressLine(std::string label, int total)
    : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO) == 1) {}

ProgressLine::~ProgressLine() {
  if (enabled_) std::fprintf(stderr, "\r\033[K");
}

void ProgressLine::update(int done) {
  if (!enabled_) return;
  std::fprintf(stderr, "\r[%s] %d/%d", label_.c_str(), done, total_);
  std::fflush(stderr);
}

}  // namespace kvferry::cli
