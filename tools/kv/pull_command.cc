// `kvferry pull`: the client of `kvferry serve`. Pulls the blocks a --tokens prompt
// needs into blocks of its own allocator, every transfer of a step posted at once,
// each carrying the notification that tells the server it is done; verifies every
// byte; repeats --steps times; optionally runs `kvferry bench` on the same shape. Our
// pool is in host memory or, with --mem vram, on a GPU (kv_pool_memory.h).
#include <cstdio>

#include "kv/kv_bench_baseline.h"
#include "kv/kv_commands.h"
#include "kv/pull_report.h"
#include "kv/pull_session.h"
#include "common/stop_signal.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

constexpr std::chrono::minutes kBenchLimit{10};

Status compare_with_bench(const PullOptions& o, const PullSession& session, PullSummary& summary) {
  const KvLayout& layout = session.layout();
  BenchBaselineRequest request;
  request.backend = o.backend;
  request.params = o.params;
  request.segment_bytes = layout.segment_bytes();
  request.lanes = layout.lane_count();
  request.blocks = session.blocks_moved_per_step();
  request.pattern = o.pattern;
  request.iterations = summary.measured_steps;
  request.warmup = o.warmup;
  if (!o.json) {
    std::printf("running kvferry bench on the same shape (%u lanes x %u blocks x %llu bytes)...\n",
                request.lanes, request.blocks, static_cast<unsigned long long>(request.segment_bytes));
    std::fflush(stdout);
  }
  KVF_ASSIGN_OR_RETURN(BenchBaseline baseline, run_bench_baseline(request, kBenchLimit));
  summary.bench = baseline;
  summary.ratio = baseline.gbps > 0 ? summary.gbps / baseline.gbps : 0;
  summary.median_ratio = summary.median_ms > 0 ? baseline.p50_ms / summary.median_ms : 0;
  return Status::Ok();
}

// Watches the server through the metadata service for --hold-s seconds.
int hold(const PullOptions& o, PullSession& session) {
  if (o.hold_s <= 0 || o.cluster.metadata.empty()) return 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(o.hold_s);
  while (std::chrono::steady_clock::now() < until && !stop_requested()) {
    session.agent().wait_for_peer_events(std::chrono::milliseconds(100));
    for (const PeerEvent& e : session.agent().take_peer_events()) {
      if (e.peer != session.server() || (e.kind != PeerEventKind::kLeft && e.kind != PeerEventKind::kRestarted))
        continue;
      if (o.json) {
        std::printf("{\"event\":\"server_%s\",\"server\":\"%s\"}\n", std::string(to_string(e.kind)).c_str(),
                    session.server().c_str());
        std::fflush(stdout);
      }
      std::fprintf(stderr, "kvferry pull: server '%s' %s the metadata service\n", session.server().c_str(),
                   e.kind == PeerEventKind::kLeft ? "left (shut down, or died and its lease ran out)"
                                                  : "restarted in");
      return 1;
    }
  }
  return 0;
}

int pull(const PullOptions& o) {
  Result<std::unique_ptr<PullSession>> session = PullSession::connect(o);
  if (!session.ok()) {
    std::fprintf(stderr, "kvferry pull: %s\n", session.status().to_string().c_str());
    return session.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (!o.json) print_pull_preamble(o, **session);
  std::vector<PullStep> steps, baseline_steps;
  const int total = o.warmup + o.steps;
  for (int i = 0; i < total; ++i) {
    if (stop_requested()) {
      std::fprintf(stderr, "kvferry pull: stopped by a signal after %d steps\n", i);
      return 1;
    }
    Result<PullStep> step = (*session)->run_step(i, i + 1 == total);
    if (!step.ok()) {
      std::fprintf(stderr, "kvferry pull: step %d of %d, from server '%s': %s\n", i + 1, total,
                   (*session)->server().c_str(), step.status().to_string().c_str());
      return 1;
    }
    if (!o.json) print_pull_step(*step);
    steps.push_back(*step);
    if (!o.baseline) continue;
    Result<PullStep> raw = (*session)->run_baseline_step(i);
    if (!raw.ok()) {
      std::fprintf(stderr, "kvferry pull: baseline step %d: %s\n", i + 1, raw.status().to_string().c_str());
      return 1;
    }
    baseline_steps.push_back(*raw);
  }
  PullSummary summary = summarize(steps);
  summary.client_pool_blocks = (*session)->layout().blocks();
  summary.server_pool_blocks = (*session)->server_pool_blocks();
  if (o.baseline) add_baseline(baseline_steps, summary);
  if (o.compare_bench) {
    if (Status status = compare_with_bench(o, **session, summary); !status.ok()) {
      std::fprintf(stderr, "kvferry pull: --compare-bench: %s\n", status.to_string().c_str());
      return 1;
    }
  }
  if (o.json) {
    std::printf("%s\n", pull_json(o, **session, steps, summary).dump().c_str());
  } else {
    print_pull_summary(summary);
  }
  std::fflush(stdout);
  if (!summary.all_verified) return 3;
  return hold(o, **session);
}

}  // namespace

CLI::App* add_pull_command(CLI::App& app, PullOptions& o) {
  CLI::App* command = app.add_subcommand(
      "pull",
      "Pull a prompt's KV blocks from `kvferry serve`, verify every byte, report time and GB/s per step");
  add_kv_pool_options(command, o.pool);
  add_kv_memory_options(command, o.memory);
  command->add_option("--peer", o.peer, "The server's --listen address, HOST:PORT")->capture_default_str();
  add_cluster_options(command, o.cluster);
  command->add_option("--server", o.server, "With --metadata: the server's agent name, or a prefix of it")
      ->capture_default_str();
  command
      ->add_option("--hold-s", o.hold_s,
                   "With --metadata: after the steps, watch the server this long; if it leaves (or dies and "
                   "its lease runs out) say so and exit 1")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--backend", o.backend, "Backend to pull over (the server must offer it)")
      ->capture_default_str();
  command->add_option("--param", o.params, "KEY=VALUE backend parameter (repeatable)");
  command->add_option("--tokens", o.tokens, "Prompt length in tokens")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command
      ->add_option("--cached-tokens", o.cached_tokens,
                   "Prefix-cache hit: leading tokens already here, not pulled")
      ->capture_default_str();
  command->add_option("--steps", o.steps, "Measured steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--warmup", o.warmup, "Unmeasured steps before them")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command
      ->add_option("--transfers", o.transfers, "Transfers per step, each a range of layers, posted at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command
      ->add_option("--pattern", o.pattern, "scattered (arbitrary block ids, as a busy engine) or contiguous")
      ->check(CLI::IsMember({"scattered", "contiguous"}))
      ->capture_default_str();
  command->add_option("--seed", o.seed, "Seed of the block ids")->capture_default_str();
  command->add_flag("--json", o.json, "One JSON object with every step and the summary");
  command->add_option("--peer-timeout-ms", o.peer_timeout_ms, "A silent server is lost after this")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--timeout-s", o.timeout_s, "Bound on one step's transfers")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_flag(
      "--compare-bench", o.compare_bench,
      "Then run `kvferry bench` on the same backend, bytes, descriptors and pattern, and print the ratio");
  command->add_flag(
      "--baseline", o.baseline,
      "After each step, a bench-equivalent step on the same connection (raw index transfer, no KV "
      "layer, same bytes and pattern), interleaved so both meet the same interference; print the ratio");
  return command;
}

int run_pull_command(const PullOptions& o) {
  install_stop_signal_handlers();
  if (o.memory.mem == "vram") {
    if (const auto why = vram_unusable(o.memory.device)) {
      std::fprintf(stderr, "kvferry pull --mem vram: %s\n", why->c_str());
      return 2;
    }
    if (o.compare_bench) {  // it would compare against host pools: not like with like
      std::fprintf(stderr,
                   "kvferry pull --mem vram: --compare-bench measures host pools; use --baseline (same pools, "
                   "same connection)\n");
      return 2;
    }
  }
  return pull(o);
}

}  // namespace kvferry::cli
