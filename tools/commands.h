// commands.h — the subcommands of the `kvferry` tool. Each adds its options to the
// CLI11 app (filling an options struct owned by main) and runs after parsing, returning
// the process exit code: 0 success, 1 error, 2 usage, 3 a verification failed.
#pragma once

#include <CLI/CLI.hpp>

#include "bench/bench_options.h"
#include "demo/demo_options.h"
#include "kv/kv_commands.h"
#include "store/offload_options.h"  // offload, onboard
#include "tp/tp_commands.h"      // tp-demo, tp-rank

namespace kvferry::cli {

struct InfoOptions {
  bool json = false;
};

CLI::App* add_info_command(CLI::App& app, InfoOptions& options);
int run_info_command(const InfoOptions& options);

CLI::App* add_bench_command(CLI::App& app, BenchOptions& options);
int run_bench_command(BenchOptions& options);

CLI::App* add_demo_command(CLI::App& app, DemoOptions& options);
int run_demo_command(const DemoOptions& options);

// Hidden: the prefill process of `kvferry demo`, spawned by the decode process.
CLI::App* add_demo_prefill_command(CLI::App& app, DemoPrefillOptions& options);
int run_demo_prefill_command(const DemoPrefillOptions& options);

}  // namespace kvferry::cli
