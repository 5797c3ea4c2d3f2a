// kvferry — the command-line tool of the kvferry library.
//
// Subcommands: info, bench, demo (see commands.h); serve, pull, estimate (kv_commands.h);
// stats, swarm (cluster_commands.h); tp-demo (tp_commands.h).
// Exceptions stop here: CLI11 reports usage errors by throwing, and nlohmann_json or the
// standard library may throw on exhaustion; none of them leaves main.
#include <signal.h>

#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cluster/cluster_commands.h"
#include "commands.h"
#include "soak/soak_command.h"
#include "kvferry/kvferry.h"

namespace {

int run(int argc, char** argv) {
  using namespace kvferry::cli;
  CLI::App app{"kvferry — move LLM KV-cache blocks between processes, GPUs, hosts and storage"};
  app.set_version_flag("--version", std::string(kvferry::version_string()));
  app.require_subcommand(1);

  InfoOptions info_options;
  BenchOptions bench_options;
  DemoOptions demo_options;
  DemoPrefillOptions prefill_options;
  ServeOptions serve_options;
  PullOptions pull_options;
  EstimateOptions estimate_options;
  OffloadOptions offload_options;
  OnboardOptions onboard_options;
  SoakOptions soak_options;
  SoakPeerOptions soak_peer_options;
  StatsOptions stats_options;
  SwarmOptions swarm_options;
  TpDemoOptions tp_demo_options;
  TpRankOptions tp_rank_options;
  CLI::App* info = add_info_command(app, info_options);
  CLI::App* bench = add_bench_command(app, bench_options);
  CLI::App* demo = add_demo_command(app, demo_options);
  CLI::App* prefill = add_demo_prefill_command(app, prefill_options);
  CLI::App* serve = add_serve_command(app, serve_options);
  CLI::App* pull = add_pull_command(app, pull_options);
  CLI::App* estimate = add_estimate_command(app, estimate_options);
  CLI::App* offload = add_offload_command(app, offload_options);
  CLI::App* onboard = add_onboard_command(app, onboard_options);
  CLI::App* soak = add_soak_command(app, soak_options);
  CLI::App* soak_peer = add_soak_peer_command(app, soak_peer_options);
  CLI::App* stats = add_stats_command(app, stats_options);
  CLI::App* swarm = add_swarm_command(app, swarm_options);
  CLI::App* tp_demo = add_tp_demo_command(app, tp_demo_options);
  CLI::App* tp_rank = add_tp_rank_command(app, tp_rank_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version or the usage error
    return code == 0 ? 0 : 2;
  }
  if (info->parsed()) return run_info_command(info_options);
  if (bench->parsed()) return run_bench_command(bench_options);
  if (demo->parsed()) return run_demo_command(demo_options);
  if (prefill->parsed()) return run_demo_prefill_command(prefill_options);
  if (serve->parsed()) return run_serve_command(serve_options);
  if (pull->parsed()) return run_pull_command(pull_options);
  if (estimate->parsed()) return run_estimate_command(estimate_options);
  if (offload->parsed()) return run_offload_command(offload_options);
  if (onboard->parsed()) return run_onboard_command(onboard_options);
  if (soak->parsed()) return run_soak_command(soak_options);
  if (soak_peer->parsed()) return run_soak_peer_command(soak_peer_options);
  if (stats->parsed()) return run_stats_command(stats_options);
  if (swarm->parsed()) return run_swarm_command(swarm_options);
  if (tp_demo->parsed()) return run_tp_demo_command(tp_demo_options);
  if (tp_rank->parsed()) return run_tp_rank_command(tp_rank_options);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that vanishes mid-send must be an error return, not a silent death.
  signal(SIGPIPE, SIG_IGN);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvferry: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "kvferry: internal error: unknown exception\n");
  }
  return 1;
}
