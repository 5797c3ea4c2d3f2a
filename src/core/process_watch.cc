#include "core/process_watch.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace kvferry::detail {
namespace {

constexpr unsigned long kPfExiting = 0x4;  // include/linux/sched.h

struct StatFields {
  char state = '?';
  unsigned long flags = 0;
  std::uint64_t start_time = 0;
  unsigned long pending = 0;
};

// Fields of /proc/<pid>/stat after "(comm)" (which may hold spaces and parentheses).
bool read_stat(int fd, StatFields* out) {
  char buf[1024];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  p += 2;  // ") "
  out->state = *p;
  // Field 3 is the state; count to field 9 (flags), 22 (starttime), 31 (signal).
  int field = 3;
  while (*p && field < 31) {
    p = std::strchr(p, ' ');
    if (!p) return false;
    ++p;
    ++field;
    if (field == 9) out->flags = std::strtoul(p, nullptr, 10);
    else if (field == 22) out->start_time = std::strtoull(p, nullptr, 10);
    else if (field == 31) out->pending = std::strtoul(p, nullptr, 10);
  }
  return field == 31;
}

}  // namespace

ProcessWatch::ProcessWatch(pid_t pid) {
  if (pid <= 0 || pid == ::getpid()) return;  // ourselves: alive while we ask
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  stat_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  StatFields f;
  if (!stat_.valid() || !read_stat(stat_.get(), &f)) {
    stat_.reset();
    return;
  }
  start_time_ = f.start_time;
}

bool ProcessWatch::gone() const {
  if (!stat_.valid()) return false;
  StatFields f;
  if (!read_stat(stat_.get(), &f)) return true;  // reaped
  if (f.start_time != start_time_) return true;
  if (f.state == 'Z' || f.state == 'X' || f.state == 'x') return true;
  if (f.flags & kPfExiting) return true;
  return (f.pending & (1ul << (SIGKILL - 1))) != 0;
}

}  // namespace kvferry::detail
