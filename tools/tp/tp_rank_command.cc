// The hidden `kvferry tp-rank`: one prefill or decode rank of a `tp-demo` / `bench --tp`
// run, spawned by the parent with the run's spec as JSON. It reports on its report fd:
// prefill "port N"; decode "ready", then (after SIGUSR1, the parent's start signal, so
// every decode rank starts at once) "ready" again after each prompt but the last, waiting
// for the next signal (so every prompt starts on all decode ranks at once), then
// "result {json}".
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "common/child_process.h"
#include "common/cli_util.h"
#include "common/stop_signal.h"
#include "tp/tp_commands.h"
#include "tp/tp_rank_pool.h"
#include "tp/tp_spec.h"

namespace kvferry::cli {
namespace {

constexpr std::uint8_t kPoison = 0xAB;
constexpr std::uint64_t kSlotBytes = 16ull << 20;

Result<std::unique_ptr<Agent>> make_rank_agent(const TpRunSpec& spec, const std::string& role, std::uint32_t rank) {
  AgentOptions options;
  options.name = unique_agent_name(role, static_cast<int>(rank));
  options.backends = spec.agent_backends();
  options.peer_timeout = std::chrono::milliseconds(spec.peer_timeout_ms);
  options.backend_params = spec.backend_params;
  return Agent::create(options);
}

// The parent's start signal (SIGUSR1, blocked since main, so only this wait takes it).
// sigtimedwait also returns early with EINTR, without the signal: when a handled signal
// arrives, and on Linux after the process was stopped and continued (signal(7)), which a
// loaded machine's scheduler or a debugger may do. Those waits are resumed with the time
// left, never taken for the end of the wait.
Status wait_for_start_signal(std::chrono::seconds limit) {
  sigset_t start;
  sigemptyset(&start);
  sigaddset(&start, SIGUSR1);
  const auto until = Clock::now() + limit;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - Clock::now());
    if (left.count() <= 0) break;
    const timespec wait{static_cast<time_t>(left.count() / 1000000000), static_cast<long>(left.count() % 1000000000)};
    const int signal = sigtimedwait(&start, nullptr, &wait);
    if (signal == SIGUSR1) return Status::Ok();
    if (signal < 0 && errno == EINTR) continue;
    if (signal < 0 && errno != EAGAIN) return IoErrorFromErrno("sigtimedwait (the start signal)", errno);
  }
  return Timeout("no start signal from the parent within " + std::to_string(limit.count()) + " s");
}

std::string request_id(int r) { return "request-" + std::to_string(r); }

Status run_prefill(const TpRankOptions& o, const TpRunSpec& spec) {
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent, make_rank_agent(spec, "tp-prefill", o.rank));
  KVF_ASSIGN_OR_RETURN(KvLayout layout, spec.prefill_layout(o.rank));
  KVF_ASSIGN_OR_RETURN(HeadRange heads, tp_rank_heads(spec.model_geometry.kv_heads, spec.prefill_tp, o.rank));
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<TpRankPool> pool,
                       TpRankPool::allocate(layout, spec.kind, o.device, 0,
                                            wants_shared_pool(spec.host_backend()) ? agent.get() : nullptr));
  const std::vector<std::uint32_t> blocks = spec.block_table(layout, true, o.rank);
  KVF_RETURN_IF_ERROR(pool->fill(blocks, spec.tokens, heads, spec.seed));
  KVF_RETURN_IF_ERROR(agent->register_memory(pool->pool().tensor_regions()).with_context("registering the pool"));
  TpSenderOptions options;
  options.groups = spec.groups();
  options.rank = o.rank;
  options.staging.slot_bytes = kSlotBytes;
  options.naive_direct_plan = spec.naive;
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<TpSender> sender, TpSender::create(*agent, pool->pool(), options));
  KVF_ASSIGN_OR_RETURN(std::uint16_t port, agent->listen("127.0.0.1", 0));
  KVF_RETURN_IF_ERROR(write_report(o.report_fd, ControlType::kListening, {{"port", port}}));
  const auto limit = std::chrono::seconds(spec.timeout_s);
  const bool doomed = spec.kill_rank == static_cast<int>(o.rank);
  for (int r = 0; r < spec.requests; ++r) {
    for (std::uint64_t first = 0; first < spec.tokens; first += spec.chunk_tokens) {
      const std::uint64_t n = std::min(spec.chunk_tokens, spec.tokens - first);
      KVF_RETURN_IF_ERROR(sender->send(request_id(r), blocks, first, n, first + n == spec.tokens));
      if (doomed) break;  // fault injection: the rest of the prompt never comes; the parent kills us
    }
  }
  if (doomed) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      (void)sender->progress();
      agent->wait_for_notifications(std::chrono::milliseconds(5));
    }
    return Timeout("fault injection: the parent never killed this rank");
  }
  for (int r = 0; r < spec.requests; ++r) {
    KVF_RETURN_IF_ERROR(sender->wait(request_id(r), limit));
  }
  // Stay, as an engine does, until the parent has every decode rank's result.
  const auto until = Clock::now() + limit;
  while (!stop_requested() && Clock::now() < until) agent->wait_for_notifications(std::chrono::milliseconds(50));
  return Status::Ok();
}

Result<TpRankResult> run_decode(const TpRankOptions& o, const TpRunSpec& spec) {
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent, make_rank_agent(spec, "tp-decode", o.rank));
  KVF_ASSIGN_OR_RETURN(KvLayout layout, spec.decode_layout(o.rank));
  KVF_ASSIGN_OR_RETURN(HeadRange heads, tp_rank_heads(spec.model_geometry.kv_heads, spec.decode_tp, o.rank));
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<TpRankPool> pool,
                       TpRankPool::allocate(layout, spec.kind, o.device, kPoison,
                                            wants_shared_pool(spec.host_backend()) ? agent.get() : nullptr));
  KVF_RETURN_IF_ERROR(agent->register_memory(pool->pool().tensor_regions()).with_context("registering the pool"));
  TpReceiverOptions options;
  options.groups = spec.groups();
  options.rank = o.rank;
  options.path = spec.tp_path;
  options.peer_timeout = std::chrono::milliseconds(spec.peer_timeout_ms);
  const std::uint64_t request_bytes = spec.decode_rank_bytes(o.rank);
  const std::uint64_t arena = spec.staging_mib != 0 ? spec.staging_mib << 20 : request_bytes;
  options.staging.slot_bytes = kSlotBytes;
  options.staging.host_slots = options.staging.device_slots =
      static_cast<std::uint32_t>(std::max<std::uint64_t>(1, (arena + kSlotBytes - 1) / kSlotBytes));
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<TpReceiver> receiver, TpReceiver::create(*agent, pool->pool(), options));
  std::vector<std::string> peers;
  for (std::uint16_t port : o.prefill_ports) {
    KVF_ASSIGN_OR_RETURN(std::string peer, agent->fetch_remote("127.0.0.1", port));
    peers.push_back(peer);
  }
  KVF_RETURN_IF_ERROR(receiver->connect(peers));
  KVF_RETURN_IF_ERROR(write_report(o.report_fd, ControlType::kReady));
  // The start signal (blocked since main, so only this wait takes it).
  KVF_RETURN_IF_ERROR(wait_for_start_signal(std::chrono::seconds(60)));

  TpRankResult result;
  result.decode_rank = o.rank;
  result.sources = receiver->describe_sources();
  result.bytes = request_bytes;
  const std::vector<std::uint32_t> blocks = spec.block_table(layout, false, o.rank);
  for (int r = 0; r < spec.requests; ++r) {
    if (r > 0) {
      // Every prompt starts at the parent's signal, on every decode rank at once: a
      // prompt's time is then the whole prompt's (all its decode ranks'), and the poison
      // before the verified one runs while no prompt moves.
      if (r + 1 == spec.requests) KVF_RETURN_IF_ERROR(pool->poison());  // the verified one lands on poison
      KVF_RETURN_IF_ERROR(write_report(o.report_fd, ControlType::kReady));
      KVF_RETURN_IF_ERROR(wait_for_start_signal(std::chrono::seconds(spec.timeout_s + 60)));
    }
    const auto t0 = Clock::now();
    Status status = receiver->expect(request_id(r), blocks, spec.tokens);
    if (status.ok()) status = receiver->wait(request_id(r), std::chrono::seconds(spec.timeout_s));
    const auto t1 = Clock::now();
    if (!status.ok()) {
      result.failed = true;
      result.message = status.to_string();
      return result;
    }
    const TpReceiveReport report = receiver->last_report();
    result.path = std::string(to_string(report.path));
    result.pieces = report.pieces;
    result.scatter_ms = static_cast<double>(report.scatter_ns) / 1e6;
    result.ms.push_back(to_seconds(t1 - t0) * 1e3);
    result.start_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count());
    result.end_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1.time_since_epoch()).count());
  }
  KVF_ASSIGN_OR_RETURN(std::optional<std::string> bad, pool->verify(blocks, spec.tokens, heads, spec.seed));
  result.verified = !bad.has_value();
  if (bad) result.message = *bad;
  return result;
}

}  // namespace

CLI::App* add_tp_rank_command(CLI::App& app, TpRankOptions& o) {
  CLI::App* command = app.add_subcommand("tp-rank", "Internal: one rank of `kvferry tp-demo`");
  command->group("");  // hidden from --help
  command->add_option("--role", o.role)->check(CLI::IsMember({"prefill", "decode"}))->required();
  command->add_option("--rank", o.rank)->required();
  command->add_option("--spec", o.spec)->required();
  command->add_option("--device", o.device);
  command->add_option("--prefill-ports", o.prefill_ports)->delimiter(',');
  command->add_option("--report-fd", o.report_fd)->required();
  return command;
}

int run_tp_rank_command(const TpRankOptions& o) {
  // Before any thread exists: the start signal stays pending until the decode rank waits.
  sigset_t start;
  sigemptyset(&start);
  sigaddset(&start, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &start, nullptr);
  Result<TpRunSpec> spec = TpRunSpec::from_json(o.spec);
  if (!spec.ok()) {
    std::fprintf(stderr, "kvferry tp-rank: %s\n", spec.status().to_string().c_str());
    return 2;
  }
  if (o.role == "prefill") {
    install_stop_signal_handlers();  // the parent ends us with SIGTERM once it has the results
    const Status status = run_prefill(o, *spec);
    if (status.ok()) return 0;
    std::fprintf(stderr, "kvferry tp-rank: prefill rank %u: %s\n", o.rank, status.to_string().c_str());
    return 1;
  }
  Result<TpRankResult> result = run_decode(o, *spec);
  if (!result.ok()) {
    TpRankResult failed;
    failed.decode_rank = o.rank;
    failed.failed = true;
    failed.message = result.status().to_string();
    result = failed;
  }
  (void)write_report(o.report_fd, ControlType::kResult, result->to_json());
  return result->failed ? 1 : 0;
}

}  // namespace kvferry::cli
