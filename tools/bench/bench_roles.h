// bench_roles.h — the two processes of `kvferry bench`.
#pragma once

#include "bench/bench_options.h"

namespace kvferry::cli {

// Target: listens on --listen and serves one initiator after another until SIGINT or
// SIGTERM. When spawned by an initiator (--report-fd), reports its port on that fd and
// serves exactly one session, ending when the control connection closes.
int run_bench_target(const BenchOptions& options);

// Initiator: reaches the target (--peer, or a target it spawns on this host), runs
// every case, prints the results. Exit code 0, 1 on error, 3 if verification failed.
int run_bench_initiator(const BenchOptions& options);

// --mem vram: GPU pools, cuda_ipc (bench_vram.cc). Spawns its own target process
// (this binary with --vram-target) unless it is that target.
int run_vram_bench(const BenchOptions& options);

}  // namespace kvferry::cli
