// bench_file.h — `kvferry bench --backend file --file PATH`: KV offload and onboard
// between a host pool and a file, in one process (the file backend talks to the agent
// itself), against a plain sequential O_DIRECT pwrite / pread of the same bytes by one
// thread in 1 MiB calls, measured in the same run: its reps (--ceiling-reps) are spread
// among the measured requests, and the bench's GB/s counts the requests' own time.
#pragma once

#include "bench/bench_options.h"

namespace kvferry::cli {

// Exit code: 0, 1 on error, 3 if verification failed.
int run_file_bench(const BenchOptions& options);

}  // namespace kvferry::cli
