#include "demo/demo_decode.h"

#include <optional>
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

// Destination slot i (our block dst_ids[i]) must hold prefill block src_ids[i] of the
// same layer; every other block must still hold the poison. Checked on the host, layer
// by layer (a GPU pool is downloaded one layer at a time).
Status verify_decode_pool(DemoPool& pool, const std::vector<std::uint32_t>& src_ids,
                          const std::vector<std::uint32_t>& dst_ids, DemoRow& row) {
  const KvLayout& layout = pool.layout();
  const std::uint64_t block_bytes = layout.block_bytes();
  std::vector<std::int64_t> slot_of_block(layout.blocks(), -1);
  for (std::size_t slot = 0; slot < dst_ids.size(); ++slot) slot_of_block[dst_ids[slot]] = static_cast<std::int64_t>(slot);
  row.verified = true;
  return pool.visit_layers([&](std::uint32_t layer, const std::uint8_t* bytes) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
      const std::uint8_t* block = bytes + std::uint64_t{b} * block_bytes;
      const std::int64_t slot = slot_of_block[b];
      const auto bad = slot >= 0 ? find_pattern_mismatch(block, block_bytes,
                                                         pattern_key(kDemoSeed, layer, src_ids[static_cast<std::size_t>(slot)]))
                                 : find_byte_mismatch(block, block_bytes, kPoisonByte);
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
  KVF_ASSIGN_OR_RETURN(const KvLayout layout, kMistralSmall31.layout(o.blocks_per_layer));
  const std::uint32_t layers = layout.geometry().layers;
  const std::uint32_t blocks = layout.blocks_for_tokens(static_cast<std::uint64_t>(o.tokens));
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
  std::optional<DemoPool> pool_owner;  // declared before the agent, so the agent goes first
  KVF_ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent,
                       make_single_backend_agent(unique_agent_name("demo-decode"), backend, {}));
  KVF_ASSIGN_OR_RETURN(DemoPool allocated, DemoPool::allocate(layout, kind, o.peer_device, kPoisonByte,
                                                              wants_shared_pool(backend) ? agent.get() : nullptr));
  DemoPool& pool = pool_owner.emplace(std::move(allocated));
  KVF_RETURN_IF_ERROR(agent->register_memory(pool.region()).with_context("registering the decode pool"));

  KVF_ASSIGN_OR_RETURN(ChildProcess prefill,
                       ChildProcess::spawn_self({"demo-prefill", "--backend", backend, "--blocks-per-layer",
                                                 std::to_string(o.blocks_per_layer), "--mem", o.mem, "--device",
                                                 std::to_string(o.device)}));
  KVF_ASSIGN_OR_RETURN(ControlMessage report, prefill.read_report(kPrefillStartLimit));
  KVF_ASSIGN_OR_RETURN(const std::uint16_t port, listening_port(report));
  KVF_ASSIGN_OR_RETURN(std::string peer, agent->fetch_remote("127.0.0.1", port));
  // The prefill's pool, from its metadata: the same model (checked) in a pool of its own size.
  KVF_ASSIGN_OR_RETURN(const KvPool remote_pool, remote_kv_pool(*agent, peer));
  KVF_RETURN_IF_ERROR(check_kv_compatible(layout, remote_pool.layout(), peer));
  const std::uint32_t remote_blocks = remote_pool.layout().blocks();
  if (blocks > remote_blocks) {
    return FailedPrecondition("the prefill pool holds " + std::to_string(remote_blocks) + " blocks per layer; the prompt needs " +
                              std::to_string(blocks));
  }

  KVF_ASSIGN_OR_RETURN(PreparedList remote, agent->prepare_remote(peer, remote_pool.block_descriptors()));
  KVF_ASSIGN_OR_RETURN(PreparedList local, agent->prepare_local(pool.pool().block_descriptors()));
  // An engine's block tables: arbitrary free blocks on each side, same ids every layer.
  const auto src_ids = choose_block_ids(BlockPattern::kScattered, mix64(1), remote_blocks, blocks);
  const auto dst_ids = choose_block_ids(BlockPattern::kScattered, mix64(2), o.blocks_per_layer, blocks);
  std::vector<std::uint32_t> remote_indices, local_indices;
  remote_indices.reserve(std::size_t{layers} * blocks);
  local_indices.reserve(std::size_t{layers} * blocks);
  for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
    for (std::uint32_t i = 0; i < blocks; ++i) {
      remote_indices.push_back(remote_pool.layout().descriptor_index(lane, src_ids[i]));
      local_indices.push_back(layout.descriptor_index(lane, dst_ids[i]));
    }
  }

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
  row.bytes = std::uint64_t{blocks} * layout.block_bytes_all_layers();
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
