// `kvferry demo`: disaggregated prefill -> decode of one prompt's KV cache, per backend,
// with both pools in host memory or (--mem vram) on GPUs.
#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/backend_traits.h"
#include "common/cli_util.h"
#include "commands.h"
#include "demo/demo_decode.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

void print_preamble(const DemoOptions& o) {
  const DemoModel& model = kMistralSmall31;
  const KvGeometry& m = model.geometry;
  const std::uint32_t blocks = static_cast<std::uint32_t>((o.tokens + m.block_tokens - 1) / m.block_tokens);
  std::printf("kvferry demo: %s KV cache: %u layers, %u KV heads, head dim %u, %u tokens/block, "
              "%u-byte dtype -> %s blocks\n",
              model.name, m.layers, m.kv_heads, m.head_dim, m.block_tokens, dtype_bytes(m.dtype),
              format_bytes(model.block_bytes()).c_str());
  const std::string where = o.mem == "vram" ? "on GPUs: prefill GPU " + std::to_string(o.device) +
                                                  ", decode GPU " + std::to_string(o.peer_device)
                                            : "in host memory";
  std::printf("decode reads a %d-token prompt (%u scattered blocks x %u layers) from a prefill "
              "process; pools of %u blocks per layer %s\n\n",
              o.tokens, blocks, m.layers, o.blocks_per_layer, where.c_str());
  std::printf("%-8s %-10s %-15s %9s %7s  %s\n", "backend", "bytes", "desc->merged", "time ms", "GB/s", "verified");
}

void print_row(const DemoRow& row) {
  const std::string descriptors = std::to_string(row.descriptors) + "->" + std::to_string(row.descriptors_merged);
  std::printf("%-8s %-10s %-15s %9.1f %7.2f  %s\n", row.backend.c_str(), format_bytes(row.bytes).c_str(),
              descriptors.c_str(), row.milliseconds, row.gbps, row.verified ? "yes" : "FAILED");
  if (!row.verified) std::printf("  verification: %s\n", row.verify_message.c_str());
  std::fflush(stdout);
}

nlohmann::json to_json(const DemoRow& row, const DemoOptions& o) {
  const int tokens = o.tokens;
  nlohmann::json j{{"backend", row.backend},         {"tokens", tokens},
                   {"blocks", row.blocks_per_layer_moved}, {"layers", kMistralSmall31.geometry.layers},
                   {"block_size", kMistralSmall31.block_bytes()}, {"bytes", row.bytes},
                   {"descriptors", row.descriptors}, {"descriptors_merged", row.descriptors_merged},
                   {"time_ms", row.milliseconds},    {"gbps", row.gbps},
                   {"verified", row.verified}};
  if (!row.verified) j["verify_error"] = row.verify_message;
  j["mem"] = o.mem;
  if (o.mem == "vram") {
    j["prefill_device"] = o.device;
    j["decode_device"] = o.peer_device;
  }
  return j;
}

}  // namespace

CLI::App* add_demo_command(CLI::App& app, DemoOptions& o) {
  CLI::App* command = app.add_subcommand(
      "demo", "Prefill -> decode of one prompt's KV cache (Mistral-Small-3.1 shape) between two processes");
  command->add_option("--backend", o.backends,
                      "Backend(s) to run; default: every backend usable between two processes");
  command->add_option("--tokens", o.tokens, "Prompt length in tokens")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--blocks-per-layer", o.blocks_per_layer, "KV pool size of each process, in blocks per layer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_flag("--json", o.json, "One JSON object per backend on stdout");
  command
      ->add_option("--mem", o.mem,
                   "Memory of both pools: dram (host) or vram (GPUs; needs a CUDA build and a GPU, else exit 2)")
      ->check(CLI::IsMember({"dram", "vram"}))
      ->capture_default_str();
  command->add_option("--device", o.device, "With --mem vram: the prefill process's GPU")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command
      ->add_option("--peer-device", o.peer_device,
                   "With --mem vram: the decode process's GPU (default: the next one, or --device on a "
                   "one-GPU machine)")
      ->check(CLI::NonNegativeNumber);
  return command;
}

int run_demo_command(const DemoOptions& options) {
  DemoOptions o = options;
  if (o.mem == "vram") {
    if (o.peer_device < 0) o.peer_device = next_gpu(o.device);
    for (const auto& [device, option] : {std::pair{o.device, "--device"}, std::pair{o.peer_device, "--peer-device"}}) {
      if (const auto why = vram_unusable(device, option)) {
        std::fprintf(stderr, "kvferry demo --mem vram: %s\n", why->c_str());
        return 2;
      }
    }
  }
  const std::vector<std::string> backends = o.backends.empty() ? cross_process_backends() : o.backends;
  if (backends.empty()) {
    std::fprintf(stderr, "kvferry demo: no compiled backend can move data between two processes here\n");
    return 1;
  }
  const auto blocks = static_cast<std::uint32_t>((o.tokens + kMistralSmall31.geometry.block_tokens - 1) /
                                                 kMistralSmall31.geometry.block_tokens);
  if (blocks > o.blocks_per_layer) {
    std::fprintf(stderr, "kvferry demo: %d tokens need %u blocks per layer; the pools hold %u (raise --blocks-per-layer)\n",
                 o.tokens, blocks, o.blocks_per_layer);
    return 2;
  }
  if (!o.json) print_preamble(o);
  int exit_code = 0;
  int rows = 0;
  for (const std::string& backend : backends) {  // one row per backend
    Result<DemoRow> row = run_demo_decode(o, backend);
    // Not asked for by name, and the Agent cannot take this memory (registration) or has
    // no route for it (e.g. shm reaches no peer vram): not a failure.
    const bool cannot = !row.ok() && (row.status().code() == StatusCode::kNotSupported ||
                                      (row.status().code() == StatusCode::kUnavailable &&
                                       row.status().message().find("no backend can move") != std::string::npos));
    if (cannot && o.backends.empty()) {
      std::fprintf(stderr, "kvferry demo: backend %s: skipped: %s\n", backend.c_str(),
                   row.status().message().c_str());
      continue;
    }
    ++rows;
    if (!row.ok()) {
      std::fprintf(stderr, "kvferry demo: backend %s: %s\n", backend.c_str(), row.status().to_string().c_str());
      exit_code = 1;
      continue;
    }
    if (o.json) {
      std::printf("%s\n", to_json(*row, o).dump().c_str());
      std::fflush(stdout);
    } else {
      print_row(*row);
    }
    if (!row->verified && exit_code == 0) exit_code = 3;
  }
  if (rows == 0) {
    std::fprintf(stderr, "kvferry demo: no backend here moves %s memory between two processes\n", o.mem.c_str());
    return 1;
  }
  return exit_code;
}

}  // namespace kvferry::cli
