#include "bench/bench_file_ceiling.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/cli_util.h"

namespace kvferry::cli {

Result<FileCeiling> measure_file_ceiling(const std::string& path, std::uint8_t* memory, std::uint64_t bytes,
                                         bool write, std::uint64_t chunk, int reps) {
  FileCeiling out;
  int fd = ::open(path.c_str(), (write ? O_WRONLY : O_RDONLY) | O_CLOEXEC | O_DIRECT);
  const bool direct = fd >= 0;
  if (!direct) fd = ::open(path.c_str(), (write ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return IoErrorFromErrno("ceiling: opening '" + path + "'", errno);
  out.name = std::string(direct ? "O_DIRECT " : "buffered ") + (write ? "pwrite" : "pread");
  Status status;
  for (int rep = 0; rep < reps && status.ok(); ++rep) {
    const auto start = Clock::now();
    for (std::uint64_t off = 0; off < bytes && status.ok();) {
      const std::uint64_t n = std::min(chunk, bytes - off);
      const ssize_t r = write ? ::pwrite(fd, memory + off, n, static_cast<off_t>(off))
                              : ::pread(fd, memory + off, n, static_cast<off_t>(off));
      if (r > 0)
        off += static_cast<std::uint64_t>(r);
      else if (r < 0 && errno == EINTR)
        continue;
      else
        status = r < 0 ? IoErrorFromErrno("ceiling: " + out.name + " '" + path + "'", errno)
                       : IoError("ceiling: '" + path + "' ends before " + std::to_string(bytes) + " bytes");
    }
    if (status.ok()) out.gbps.push_back(gigabytes_per_second(bytes, to_seconds(Clock::now() - start)));
  }
  ::close(fd);
  if (!status.ok()) return status;
  return out;
}

}  // namespace kvferry::cli
