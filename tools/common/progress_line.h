// progress_line.h — "\r[write] 12/20" on stderr, only when stderr is a terminal, so
// logs and pipes stay clean. The line is erased when the object goes away.
#pragma once

#include <string>

namespace kvferry::cli {

class ProgressLine {
 public:
  ProgressLine(std::string label, int total);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void update(int done);

 private:
  std::string label_;
  int total_;
  bool enabled_;
};

}  // namespace kvferry::cli
