// `kvferry serve`: hold a KV pool filled with the (lane, block) pattern and let clients
// pull from it, one after another and at the same time, until SIGINT or SIGTERM. The
// pool is in host memory or, with --mem vram, on a GPU (kv_pool_memory.h).
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "common/cli_util.h"
#include "kv/kv_agent.h"
#include "kv/kv_commands.h"
#include "kv/kv_pool_memory.h"
#include "kv/serve_clients.h"
#include "common/stop_signal.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

constexpr std::chrono::milliseconds kInboxSlice{200};  // how quickly a signal is noticed

Status serve(const ServeOptions& o) {
  KVF_ASSIGN_OR_RETURN(KvLayout layout, o.pool.layout());
  // With a metadata service, clients find us there; a side channel only when asked for.
  const std::string listen = !o.listen.empty() ? o.listen : o.cluster.metadata.empty() ? "127.0.0.1:7000" : "";
  const auto where = listen.empty() ? std::optional<HostPort>() : parse_host_port(listen);
  if (!listen.empty() && !where) return InvalidArgument("--listen '" + listen + "': expected ADDRESS:PORT");
  const std::vector<std::string> backends = o.backends.empty() ? cross_process_backends() : o.backends;
  if (!o.json) {
    std::printf("kvferry serve: pool %s (%s per block, %s in all) in %s; filling it\n",
                layout.describe().c_str(), format_bytes(layout.block_bytes()).c_str(),
                format_bytes(layout.pool_bytes()).c_str(), describe_kv_memory(o.memory).c_str());
    std::fflush(stdout);
  }
  std::unique_ptr<KvPoolMemory> pool;  // declared first: it outlives the agent that serves it
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent,
                       make_kv_agent(unique_agent_name("kv-serve"), backends, o.params,
                                     std::chrono::milliseconds(o.peer_timeout_ms), o.cluster));
  const bool shared = std::any_of(backends.begin(), backends.end(), wants_shared_pool);
  KVF_ASSIGN_OR_RETURN(pool, allocate_kv_pool_memory(layout, o.memory, 0, shared ? agent.get() : nullptr));
  KVF_RETURN_IF_ERROR(pool->fill_pattern().with_context("filling the pool"));
  KVF_RETURN_IF_ERROR(
      agent->register_memory(pool->pool().tensor_regions()).with_context("registering the pool"));
  KVF_ASSIGN_OR_RETURN(LocalKvPool local, LocalKvPool::attach(*agent, pool->pool()));
  // Clients may look as soon as we say we listen: our pool must be in the service by then.
  KVF_RETURN_IF_ERROR(agent->sync_metadata(std::chrono::seconds(10)));
  std::uint16_t port = 0;
  if (where) {
    KVF_ASSIGN_OR_RETURN(port, agent->listen(where->host, where->port));
  }
  const std::string metrics = metrics_where(*agent, o.cluster);

  std::string backend_list;
  for (const std::string& b : agent->backends()) backend_list += (backend_list.empty() ? "" : ",") + b;
  if (o.json) {
    nlohmann::json event{{"event", "listening"},
                         {"agent", agent->name()},
                               {"backends", backend_list},
                               {"layout", layout.describe()},
                               {"pool_bytes", layout.pool_bytes()},
                               {"mem", o.memory.mem},
                               {"device", o.memory.mem == "vram" ? o.memory.device : -1},
                               {"blocks", layout.blocks()}};
    if (where) {
      event["host"] = where->host;
      event["port"] = port;
    }
    if (!o.cluster.metadata.empty()) event["metadata"] = o.cluster.metadata;
    if (!metrics.empty()) event["metrics"] = metrics;
    std::printf("%s\n", event.dump().c_str());
  } else {
    const std::string at = where ? "listening on " + where->host + ":" + std::to_string(port)
                                 : "published in " + o.cluster.metadata;
    std::printf("kvferry serve: %s as '%s' (backends: %s%s); Ctrl-C to stop\n", at.c_str(),
                agent->name().c_str(), backend_list.c_str(),
                metrics.empty() ? "" : ("; metrics at http://" + metrics + "/metrics").c_str());
  }
  std::fflush(stdout);

  ServeClients clients(*agent, layout, o.json, std::chrono::seconds(o.client_idle_s));
  while (!stop_requested()) {
    agent->wait_for_notifications(kInboxSlice);
    for (const Notification& n : agent->take_notifications()) clients.handle(n);
    for (const PeerEvent& e : agent->take_peer_events())
      if (e.kind == PeerEventKind::kLeft) clients.left(e.peer);
    clients.sweep();
  }
  if (o.json) {
    std::printf("{\"event\":\"stopped\",\"clients\":%llu,\"refused\":%llu,\"steps\":%llu,\"bytes\":%llu}\n",
                static_cast<unsigned long long>(clients.clients_welcomed()),
                static_cast<unsigned long long>(clients.clients_refused()),
                static_cast<unsigned long long>(clients.steps_served()),
                static_cast<unsigned long long>(clients.bytes_served()));
  } else {
    std::printf("kvferry serve: stopping: served %llu clients (%llu refused), %llu steps, %s\n",
                static_cast<unsigned long long>(clients.clients_welcomed()),
                static_cast<unsigned long long>(clients.clients_refused()),
                static_cast<unsigned long long>(clients.steps_served()),
                format_bytes(clients.bytes_served()).c_str());
  }
  std::fflush(stdout);
  return Status::Ok();  // destruction in reverse order: the agent stops before the pool goes
}

}  // namespace

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  CLI::App* command = app.add_subcommand(
      "serve",
      "Hold a KV pool (default Mistral-Small-3.1, 4 GiB) that `kvferry pull` clients read, until Ctrl-C");
  add_kv_pool_options(command, o.pool);
  add_kv_memory_options(command, o.memory);
  command->add_option("--listen", o.listen,
                      "Address of the side channel clients connect to, ADDRESS:PORT (default 127.0.0.1:7000; "
                      "none with --metadata unless given)");
  add_cluster_options(command, o.cluster);
  command->add_option("--backend", o.backends,
                      "Backend(s) to offer; default: every backend usable between two processes");
  command->add_option("--param", o.params, "KEY=VALUE backend parameter (repeatable), e.g. tcp.bind=0.0.0.0");
  command->add_flag("--json", o.json, "Events as JSON objects, one per line");
  command->add_option("--peer-timeout-ms", o.peer_timeout_ms, "A silent peer is lost after this")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--client-idle-s", o.client_idle_s, "Forget a client silent this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  return command;
}

int run_serve_command(const ServeOptions& o) {
  install_stop_signal_handlers();
  if (o.memory.mem == "vram") {
    if (const auto why = vram_unusable(o.memory.device)) {
      std::fprintf(stderr, "kvferry serve --mem vram: %s\n", why->c_str());
      return 2;
    }
  }
  const Status status = serve(o);
  if (!status.ok()) {
    std::fprintf(stderr, "kvferry serve: %s\n", status.to_string().c_str());
    return status.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace kvferry::cli
