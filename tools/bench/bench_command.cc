// `kvferry bench`: options and dispatch to the initiator or target role.
#include <cstdio>

#include "bench/bench_file.h"
#include "bench/bench_roles.h"
#include "commands.h"

namespace kvferry::cli {

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  CLI::App* command = app.add_subcommand(
      "bench", "Bandwidth and latency of KV block transfers between two processes (nixlbench role)");
  command->add_option("--backend", o.backend, "Backend to measure, forced on both sides")->capture_default_str();
  command->add_option("--op", o.op, "read, write or both (file backend: offload = write, onboard = read)")
      ->check(CLI::IsMember({"read", "write", "both", "offload", "onboard"}))
      ->capture_default_str();
  command->add_option("--block-size", o.block_size_text, "Bytes per KV block: 64KiB, 64K, 1MiB, 65536")
      ->capture_default_str();
  command->add_option("--blocks", o.blocks, "Blocks per layer per request")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--layers", o.layers, "Layers (one KV tensor each)")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--pattern", o.pattern, "scattered (random block ids, as a paged KV cache) or contiguous")
      ->check(CLI::IsMember({"scattered", "contiguous"}))
      ->capture_default_str();
  command->add_option("--iterations", o.iterations, "Measured requests per case")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--warmup", o.warmup, "Unmeasured requests before them")->check(CLI::NonNegativeNumber)->capture_default_str();
  command->add_flag("--verify", o.verify, "After timing, one request with fresh random data into a poisoned destination, compared byte for byte");
  command->add_flag("--json", o.json, "One JSON object per case on stdout");
  command->add_option("--streams", o.streams, "TCP streams per peer (backend param tcp.streams)")->check(CLI::PositiveNumber);
  command->add_option("--small-round-trips", o.small_round_trips,
                      "8-byte write+notify round trips of the latency case; 0 skips it")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command->add_option("--ceiling-reps", o.ceiling_reps, "Repetitions of the ceiling measurement")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--seed", o.seed, "Seed of block choice and data (default: fresh)");
  command->add_option("--param", o.params, "KEY=VALUE backend parameter of this process's agent (repeatable)");
  CLI::Option* serve = command->add_flag("--serve", o.serve, "Be the target: serve initiators until Ctrl-C");
  command->add_option("--listen", o.listen, "Target's control address (with --serve)")->capture_default_str();
  command->add_option("--metadata", o.metadata,
                      "Initiator: exchange agent metadata through this etcd://HOST:PORT/NAMESPACE (the target "
                      "joins it too), not through the control connection");
  command->add_option("--peer", o.peer, "Initiator: a target started with --serve, HOST:PORT")->excludes(serve);
  command->add_option("--file", o.file, "With --backend file: offload to / onboard from this file (one process)");
  command->add_option("--mem", o.mem, "Memory of this process's pool: dram, or vram (a GPU pool: cuda_ipc, or tcp/shm staged)")
      ->check(CLI::IsMember({"dram", "vram"}))
      ->capture_default_str();
  command->add_option("--peer-mem", o.peer_mem,
                      "With --mem vram: the target's pool: vram, or dram (host memory; tcp and shm stage the GPU side "
                      "through pinned memory)")
      ->check(CLI::IsMember({"dram", "vram"}))
      ->capture_default_str();
  command->add_flag("--fresh-requests", o.fresh_requests,
                    "Create every timed request anew, over new block ids, as an engine does (the default)");
  command->add_flag("--repost", o.repost, "Create one request per case and post it again and again");
  command->add_flag("--index-form", o.index_form,
                    "Describe requests as index transfers of (layer, block) pairs instead of lanes x block ids");
  command->add_option("--inflight", o.inflight,
                      "Requests in flight at once: the next is created and posted while earlier ones copy, "
                      "as an engine moving several prompts does (1: one at a time)")
      ->capture_default_str();
  command->add_option("--batch", o.batch,
                      "Batch case: this many requests of --blocks blocks each, posted with one post_batch and "
                      "drained from a completion queue, against one request of the same bytes")
      ->check(CLI::PositiveNumber);
  command->add_option("--device", o.device, "With --mem vram: this process's GPU")->capture_default_str();
  command->add_option("--peer-device", o.peer_device, "With --mem vram: the target process's GPU (default: the next one)");
  command->add_flag("--layer-tensors", o.layer_tensors,
                    "With --mem vram: one GPU allocation per layer on each side, as an engine's per-layer KV "
                    "tensors (default: one allocation per pool)");
  command->add_option("--pause-ms", o.pause_ms,
                      "With --mem vram: idle milliseconds before each request, outside the timed part (as a "
                      "client that checks every step leaves the GPUs idle between requests)")
      ->check(CLI::Range(0, 10000));
  command->add_flag("--vram-target", o.vram_target, "Internal: the target process of a vram bench")->group("");
  command->add_option("--report-fd", o.report_fd, "Internal: spawned target reports its port here")->group("");
  add_tp_bench_options(command, o.tp);
  return command;
}

int run_bench_command(BenchOptions& o) {
  if (!o.tp.groups.empty()) return run_tp_bench(o);  // prefill TP P -> decode TP D (tp_bench.h)
  if (Status status = o.finalize(); !status.ok()) {
    std::fprintf(stderr, "kvferry bench: %s\n", status.to_string().c_str());
    return 2;
  }
  if (o.backend == "file") return run_file_bench(o);  // storage: one process, no target
  if (o.mem == "vram") return run_vram_bench(o);      // GPU pools (bench_vram.cc)
  return o.serve ? run_bench_target(o) : run_bench_initiator(o);
}

}  // namespace kvferry::cli
