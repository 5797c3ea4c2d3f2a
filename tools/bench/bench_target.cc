// The target's accept loop.
#include <cstdio>
#include <string>

#include "bench/bench_roles.h"
#include "bench/bench_target_session.h"
#include "common/child_process.h"
#include "common/cli_util.h"
#include "common/socket_util.h"
#include "common/stop_signal.h"

namespace kvferry::cli {
namespace {

// A spawned target whose parent never connects gives up after this.
constexpr std::chrono::seconds kSpawnedAcceptLimit{30};
constexpr std::chrono::milliseconds kAcceptSlice{200};

}  // namespace

int run_bench_target(const BenchOptions& options) {
  install_stop_signal_handlers();
  const auto where = parse_host_port(options.listen);
  if (!where) {
    std::fprintf(stderr, "kvferry bench: --listen '%s': expected ADDRESS:PORT\n", options.listen.c_str());
    return 1;
  }
  Result<Listener> listener = listen_tcp(where->host, where->port);
  if (!listener.ok()) {
    std::fprintf(stderr, "kvferry bench target: %s\n", listener.status().to_string().c_str());
    return 1;
  }
  const bool spawned = options.report_fd >= 0;
  if (spawned) {
    if (Status status = write_report(options.report_fd, ControlType::kListening, {{"port", listener->port}}); !status.ok()) {
      std::fprintf(stderr, "kvferry bench target: %s\n", status.to_string().c_str());
      return 1;
    }
  } else {
    std::fprintf(stderr, "kvferry bench target: listening on %s:%u (Ctrl-C to stop)\n",
                 where->host.c_str(), static_cast<unsigned>(listener->port));
  }

  const auto accept_deadline = Clock::now() + kSpawnedAcceptLimit;
  int serial = 0;
  while (!stop_requested()) {
    Result<FileDescriptor> connection = accept_connection(listener->socket.get(), kAcceptSlice, [&] {
      return !stop_requested() && (!spawned || Clock::now() < accept_deadline);
    });
    if (!connection.ok()) {
      if (stop_requested()) break;
      std::fprintf(stderr, "kvferry bench target: %s\n", connection.status().to_string().c_str());
      if (spawned) return 1;
      continue;
    }
    ControlChannel channel(std::move(connection).value());
    TargetSession session(channel, options.local_params, serial++);
    const Status status = session.run();
    if (!status.ok()) {
      std::fprintf(stderr, "kvferry bench target: session ended: %s\n", status.to_string().c_str());
    } else if (!spawned) {
      std::fprintf(stderr, "kvferry bench target: session %d done\n", serial);
    }
    if (spawned) return status.ok() ? 0 : 1;
  }
  return 0;
}

}  // namespace kvferry::cli
