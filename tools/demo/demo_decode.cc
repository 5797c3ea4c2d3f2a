#include "demo/demo_decode.h"

#include <optional>
#include <sstream>
#include <vector>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "common/block_choice.h"
#include "common/block_pattern.h"
#include "common/child_process.h"
#include "common/cli_util.h"
#include "demo/demo_pool.h"

namespace kvferry::cli {
namespace {

constexpr std::uint8_t kPoisonByte = 0xAB;
constexpr std::chrono::seconds kPrefillStartLimit{60};  // it fills its pool first
constexpr std::chrono::seconds kPrefillExitLimit{10};
constexpr std::chrono::seconds kTransferLimit{60};

struct PrefillReport {
  std::uint16_t port = 0;
  std::uint64_t pool_address = 0;
  std::uint32_t blocks_per_layer = 0;
  MemoryKind kind = MemoryKind::kDram;
  std::uint32_t device = 0;
};

// "port address blocks_per_layer kind device" (demo_prefill.cc).
Result<PrefillReport> parse_prefill_report(const std::string& line) {
  std::istringstream in(line);
  PrefillReport report;
  unsigned port = 0;
  std::string kind;
  if (!(in >> port >> report.pool_address >> report.blocks_per_layer >> kind >> report.device) || port == 0 ||
      port > 65535 || !parse_memory_kind(kind, &report.kind)) {
    return Corrupt("prefill reported '" + line + "'");
  }
  report.port = static_cast<std::uint16_t>(port);
  return report;
}

// Destination slot i (our block dst_ids[i]) must hold prefill block src_ids[i] of the
// same layer; every other block must still hold the poison. Checked on the host, layer
// by layer (a GPU pool is downloaded one layer at a time).
Status verify_decode_pool(DemoPool& pool, const std::vector<std::uint32_t>& src_ids,
                          const std::vector<std::uint32_t>& dst_ids, DemoRow& row) {
  const PoolShape& shape = pool.shape();
  std::vector<std::int64_t> slot_of_block(shape.blocks_per_layer, -1);
  for (std::size_t slot = 0; slot < dst_ids.size(); ++slot) slot_of_block[dst_ids[slot]] = static_cast<std::int64_t>(slot);
  row.verified = true;
  return pool.visit_layers([&](std::uint32_t layer, const std::uint8_t* bytes) {
    for (std::uint32_t b = 0; b < shape.blocks_per_layer; ++b) {
      const std::uint8_t* block = bytes + std::uint64_t{b} * shape.block_size;
      const std::int64_t slot = slot_of_block[b];
      const auto bad = slot >= 0 ? find_pattern_mismatch(block, shape.block_size,
                                                         pattern_key(kDemoSeed, layer, src_ids[static_cast<std::size_t>(slot)]))
                                 : find_byte_mismatch(block, shape.block_size, kPoisonByte);
      if (bad) {
        row.verified = false;
        row.verify_message = "layer " + std::to_string(layer) + " block " + std::to_string(b) +
                             (slot >= 0 ? " (destination)" : " (not a destination)") +
                             " differs at byte " + std::to_string(*bad);
        return false;
      }
    }
    return true;
  });
}

}  // namespace

Result<DemoRow> run_demo_decode(const DemoOptions& o, const std::string& backend) {
  const ModelKvGeometry& model = kMistralSmall31;
  const auto blocks = static_cast<std::uint32_t>((o.tokens + model.block_tokens - 1) / model.block_tokens);
  if (blocks == 0 || blocks > o.blocks_per_layer) {
    return InvalidArgument(std::to_string(o.tokens) + " tokens need " + std::to_string(blocks) +
                           " blocks per layer; the pools hold " + std::to_string(o.blocks_per_layer) +
                           " (raise --blocks-per-layer)");
  }
  KVF_RETURN_IF_ERROR(check_backend_for_two_processes(backend));
  MemoryKind kind = MemoryKind::kDram;
  if (!parse_memory_kind(o.mem, &kind)) return InvalidArgument("--mem '" + o.mem + "': expected dram or vram");

  // Our own pool first: a backend that cannot take this memory is refused here
  // (NotSupported, from the Agent) before a prefill process is started for it.
  const PoolShape shape{model.layers, o.blocks_per_layer, model.block_bytes()};
  std::optional<DemoPool> pool_owner;  // declared before the agent, so the agent goes first
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent,
                       make_single_backend_agent(unique_agent_name("demo-decode"), backend, {}));
  KVF_ASSIGN_OR_RETURN(DemoPool allocated, DemoPool::allocate(shape, kind, o.peer_device, kPoisonByte,
                                                              wants_shared_pool(backend) ? agent.get() : nullptr));
  DemoPool& pool = pool_owner.emplace(std::move(allocated));
  KVF_RETURN_IF_ERROR(agent->register_memory(pool.region()).with_context("registering the decode pool"));

  KVF_ASSIGN_OR_RETURN(ChildProcess prefill,
                       ChildProcess::spawn_self({"demo-prefill", "--backend", backend, "--blocks-per-layer",
                                                 std::to_string(o.blocks_per_layer), "--mem", o.mem, "--device",
                                                 std::to_string(o.device)}));
  KVF_ASSIGN_OR_RETURN(std::string line, prefill.read_report_line(kPrefillStartLimit));
  KVF_ASSIGN_OR_RETURN(PrefillReport report, parse_prefill_report(line));
  KVF_ASSIGN_OR_RETURN(std::string peer, agent->fetch_remote("127.0.0.1", report.port));

  const PoolShape remote_shape{model.layers, report.blocks_per_layer, model.block_bytes()};
  KVF_ASSIGN_OR_RETURN(PreparedList remote,
                       agent->prepare_remote(peer, demo_block_descriptors(remote_shape, report.pool_address,
                                                                          report.kind, report.device)));
  KVF_ASSIGN_OR_RETURN(PreparedList local, agent->prepare_local(pool.block_descriptors()));
  // An engine's block tables: arbitrary free blocks on each side, same ids every layer.
  const auto src_ids = choose_block_ids(BlockPattern::kScattered, mix64(1), report.blocks_per_layer, blocks);
  const auto dst_ids = choose_block_ids(BlockPattern::kScattered, mix64(2), o.blocks_per_layer, blocks);
  const auto remote_indices = indices_in_every_layer(src_ids, model.layers, report.blocks_per_layer);
  const auto local_indices = indices_in_every_layer(dst_ids, model.layers, o.blocks_per_layer);

  TransferOptions transfer_options;
  transfer_options.backend = backend;
  transfer_options.notification = kDemoDoneMessage;
  const auto start = Clock::now();
  KVF_ASSIGN_OR_RETURN(TransferRequest request,
                       agent->create_transfer(TransferOp::kRead, local, local_indices, remote,
                                              remote_indices, transfer_options));
  KVF_RETURN_IF_ERROR(request.post().with_context("posting the read"));
  KVF_RETURN_IF_ERROR(request.wait(kTransferLimit).with_context("waiting for the read"));
  const double seconds = to_seconds(Clock::now() - start);

  DemoRow row;
  row.backend = backend;
  row.blocks_per_layer_moved = blocks;
  row.bytes = std::uint64_t{blocks} * model.layers * model.block_bytes();
  row.descriptors = local_indices.size();
  row.descriptors_merged = request.telemetry().descriptors_merged;
  row.milliseconds = seconds * 1e3;
  row.gbps = gigabytes_per_second(row.bytes, seconds);
  KVF_RETURN_IF_ERROR(verify_decode_pool(pool, src_ids, dst_ids, row).with_context("verifying the decode pool"));

  Result<int> exit_code = prefill.wait_for_exit(kPrefillExitLimit);
  if (!exit_code.ok()) return exit_code.status().with_context("prefill never saw the 'done' notification");
  if (*exit_code != 0) return Unavailable("prefill exited with code " + std::to_string(*exit_code));
  return row;
}

}  // namespace kvferry::cli
