// bench_file_ceiling.h — the storage ceiling: one thread moving `bytes` between memory
// and the start of a file with sequential pwrite (write) or pread (read) calls of
// `chunk` bytes, with O_DIRECT when the file system allows it (else through the page
// cache, said in the name). Each rep is timed; written reps end with nothing pending
// (O_DIRECT writes are complete when pwrite returns).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct FileCeiling {
  std::string name;  // "O_DIRECT pwrite", "O_DIRECT pread", "buffered pwrite"...
  std::vector<double> gbps;
};

Result<FileCeiling> measure_file_ceiling(const std::string& path, std::uint8_t* memory, std::uint64_t bytes,
                                         bool write, std::uint64_t chunk, int reps);

}  // namespace kvferry::cli
