// The prefill process of `kvferry demo`: holds a filled KV pool (host memory, or a GPU
// with --mem vram), lets the decode process read it, and leaves once the decode's
// "done" notification is in its inbox.
#include <cstdio>
#include <optional>
#include <string>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "common/child_process.h"
#include "common/cli_util.h"
#include "commands.h"
#include "demo/demo_pool.h"
#include "common/stop_signal.h"

namespace kvferry::cli {
namespace {

bool done_notification_arrived(Agent& agent) {
  for (const Notification& notification : agent.take_notifications()) {
    if (notification.message == kDemoDoneMessage) return true;
  }
  return false;
}

Status serve_prefill(const DemoPrefillOptions& o) {
  KVF_ASSIGN_OR_RETURN(const KvLayout layout, kMistralSmall31.layout(o.blocks_per_layer));
  MemoryKind kind = MemoryKind::kDram;
  if (!parse_memory_kind(o.mem, &kind)) return InvalidArgument("--mem '" + o.mem + "': expected dram or vram");
  std::optional<DemoPool> pool_owner;  // declared before the agent, so the agent goes first
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent,
                       make_single_backend_agent(unique_agent_name("demo-prefill"), o.backend, {}));
  KVF_ASSIGN_OR_RETURN(DemoPool allocated,
                       DemoPool::allocate(layout, kind, o.device, 0, wants_shared_pool(o.backend) ? agent.get() : nullptr));
  DemoPool& pool = pool_owner.emplace(std::move(allocated));
  KVF_RETURN_IF_ERROR(pool.fill_prefill_pattern());
  KVF_RETURN_IF_ERROR(agent->register_memory(pool.region()).with_context("registering the prefill pool"));
  // The pool (layout, kind, device, tensor addresses) travels in our metadata, as an
  // engine publishes its own: the decode finds it there and checks it against its own.
  KVF_RETURN_IF_ERROR(publish_kv_pool(*agent, pool.pool()).with_context("publishing the prefill pool"));
  KVF_ASSIGN_OR_RETURN(std::uint16_t port, agent->listen("127.0.0.1", 0));
  KVF_RETURN_IF_ERROR(write_report(o.report_fd, ControlType::kListening, {{"port", port}}));
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  while (!stop_requested() && Clock::now() < deadline) {
    agent->wait_for_notifications(std::chrono::milliseconds(200));
    if (done_notification_arrived(*agent)) return Status::Ok();
  }
  return stop_requested() ? Cancelled("stopped by a signal")
                          : Timeout("no 'done' notification from the decode process");
}

}  // namespace

CLI::App* add_demo_prefill_command(CLI::App& app, DemoPrefillOptions& o) {
  CLI::App* command = app.add_subcommand("demo-prefill", "Internal: the prefill process of `kvferry demo`");
  command->group("");  // hidden from --help
  command->add_option("--backend", o.backend);
  command->add_option("--blocks-per-layer", o.blocks_per_layer)->check(CLI::PositiveNumber);
  command->add_option("--mem", o.mem)->check(CLI::IsMember({"dram", "vram"}));
  command->add_option("--device", o.device)->check(CLI::NonNegativeNumber);
  command->add_option("--report-fd", o.report_fd)->required();
  command->add_option("--timeout-s", o.timeout_s)->check(CLI::PositiveNumber);
  return command;
}

int run_demo_prefill_command(const DemoPrefillOptions& o) {
  install_stop_signal_handlers();
  const Status status = serve_prefill(o);
  if (!status.ok()) {
    std::fprintf(stderr, "kvferry demo (prefill): %s\n", status.to_string().c_str());
    return 1;
  }
  return 0;
}

}  // namespace kvferry::cli
