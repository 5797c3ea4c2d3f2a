// The initiator: reach or spawn the target, run the cases, report, clean up.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/agent_factory.h"
#include "bench/bench_cases.h"
#include "bench/bench_roles.h"
#include "common/child_process.h"
#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

constexpr std::chrono::seconds kTargetStartLimit{30};  // allocating its pool included
constexpr std::chrono::seconds kTargetExitLimit{10};
constexpr std::chrono::seconds kConnectLimit{5};

Result<HostPort> spawn_local_target(const BenchOptions& o, std::optional<ChildProcess>& child) {
  std::vector<std::string> args = {"bench", "--serve", "--listen", "127.0.0.1:0"};
  for (const std::string& param : o.params) {
    args.push_back("--param");
    args.push_back(param);
  }
  KVF_ASSIGN_OR_RETURN(ChildProcess spawned, ChildProcess::spawn_self(std::move(args)));
  child.emplace(std::move(spawned));
  KVF_ASSIGN_OR_RETURN(ControlMessage report, child->read_report(kTargetStartLimit));
  KVF_ASSIGN_OR_RETURN(std::uint16_t port, listening_port(report));
  return HostPort{"127.0.0.1", port};
}

class ResultPrinter {
 public:
  explicit ResultPrinter(const BenchOptions& o) : options_(o) {}
  void print(const CaseResult& result) {
    if (result.verified == VerifyState::kFailed) verification_failed_ = true;
    if (!options_.json) {
      print_table_row(result);
      return;
    }
    nlohmann::json line = to_json(result);
    line["seed"] = options_.seed;
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  bool verification_failed() const { return verification_failed_; }

 private:
  const BenchOptions& options_;
  bool verification_failed_ = false;
};

Status run_cases(const BenchOptions& o, ControlChannel& channel, ResultPrinter& printer) {
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<InitiatorSession> session, InitiatorSession::start(o, channel));
  if (!o.json) {
    const PoolShape shape = o.pool_shape();
    std::printf("kvferry bench: backend %s, pools of %u layers x %u blocks x %s, %d iterations "
                "(+%d warm-up), %s requests%s, seed %llu\n",
                o.backend.c_str(), shape.layers, shape.blocks_per_layer,
                format_bytes(shape.block_size).c_str(), o.iterations, o.warmup,
                o.repost ? "re-posted" : "fresh", o.index_form ? " (index form)" : "",
                static_cast<unsigned long long>(o.seed));
    print_table_header();
  }
  for (TransferOp op : o.ops) {
    KVF_ASSIGN_OR_RETURN(CaseResult result,
                         o.batch > 0 ? run_batch_case(*session, op) : run_block_transfer_case(*session, op));
    printer.print(result);
  }
  if (o.small_round_trips > 0) {
    KVF_ASSIGN_OR_RETURN(CaseResult result, run_write_notify_latency_case(*session));
    printer.print(result);
  }
  session->finish();
  return Status::Ok();
}

}  // namespace

int run_bench_initiator(const BenchOptions& o) {
  if (Status usable = check_backend_for_two_processes(o.backend); !usable.ok()) {
    std::fprintf(stderr, "kvferry bench: %s\n", usable.to_string().c_str());
    return 1;
  }
  std::optional<ChildProcess> target;  // killed and reaped on every path out
  Result<HostPort> where = Unavailable("no target");
  if (o.peer.empty()) {
    where = spawn_local_target(o, target);
  } else if (const auto peer = parse_host_port(o.peer)) {
    where = *peer;
  } else {
    where = InvalidArgument("--peer '" + o.peer + "': expected HOST:PORT");
  }
  Status status = where.status();
  ResultPrinter printer(o);
  if (status.ok()) {
    Result<FileDescriptor> socket = connect_tcp(where->host, where->port, kConnectLimit);
    status = socket.status();
    if (status.ok()) {
      ControlChannel channel(std::move(socket).value());
      status = run_cases(o, channel, printer);
      if (!status.ok()) channel.send_error(status);
    }  // closing the control connection ends a spawned target's session
  }
  if (!status.ok()) std::fprintf(stderr, "kvferry bench: %s\n", status.to_string().c_str());
  if (target) {
    Result<int> exit_code = target->wait_for_exit(kTargetExitLimit);
    if (!exit_code.ok()) {
      std::fprintf(stderr, "kvferry bench: target did not exit; terminating it\n");
      target->terminate();
    } else if (*exit_code != 0 && status.ok()) {
      std::fprintf(stderr, "kvferry bench: target exited with code %d\n", *exit_code);
      return 1;
    }
  }
  if (!status.ok()) return 1;
  return printer.verification_failed() ? 3 : 0;
}

}  // namespace kvferry::cli
