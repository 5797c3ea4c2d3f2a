// `kvferry tp-demo`: one prompt's KV cache from P prefill processes to D decode
// processes of other tensor-parallel degree, every element of every decode rank verified.
#include <algorithm>
#include <cstdio>

#include "common/cli_util.h"
#include "kv/kv_presets.h"
#include "tp/tp_commands.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

void print_preamble(const TpRunSpec& s) {
  Result<TpMapping> mapping = TpMapping::create(s.model_geometry.kv_heads, s.prefill_tp, s.decode_tp,
                                                s.src_arrangement == KvArrangement::kMla);
  std::printf("kvferry tp-demo: %s, %u layers, %u KV heads x dim %u, %s; prefill TP %u (%s, %u tokens/block) -> "
              "decode TP %u (%s, %u tokens/block); %llu-token prompt in %s memory over %s, path %s\n",
              s.model.c_str(), s.model_geometry.layers, s.model_geometry.kv_heads, s.model_geometry.head_dim,
              std::string(to_string(s.model_geometry.dtype)).c_str(), s.prefill_tp,
              std::string(to_string(s.src_arrangement)).c_str(),
              s.src_block_tokens != 0 ? s.src_block_tokens : s.model_geometry.block_tokens, s.decode_tp,
              std::string(to_string(s.dst_arrangement)).c_str(),
              s.dst_block_tokens != 0 ? s.dst_block_tokens : s.model_geometry.block_tokens,
              static_cast<unsigned long long>(s.tokens), s.kind == MemoryKind::kVram ? "GPU" : "host",
              s.host_backend().c_str(), s.path.c_str());
  if (mapping.ok()) std::printf("mapping: %s\n", mapping->describe().c_str());
  std::printf("\n%-11s %-7s %-10s %9s %7s %-7s %s\n", "decode_rank", "sources", "bytes", "ms", "GB/s", "path",
              "verified");
}

}  // namespace

CLI::App* add_tp_demo_command(CLI::App& app, TpDemoOptions& o) {
  TpRunSpec& s = o.spec;
  CLI::App* c = app.add_subcommand(
      "tp-demo", "Prefill TP P -> decode TP D of one prompt's KV cache between P + D processes, every element verified");
  c->add_option("--prefill-tp", s.prefill_tp, "Prefill processes (tensor-parallel ranks)")->check(CLI::Range(1, 64))->capture_default_str();
  c->add_option("--decode-tp", s.decode_tp, "Decode processes")->check(CLI::Range(1, 64))->capture_default_str();
  c->add_option("--kv-heads", s.kv_heads, "The model's KV heads (default: the model's)");
  c->add_option("--model", s.model, "Model geometry: " + kv_model_preset_names())->capture_default_str();
  c->add_option("--src-layout", s.src_layout, "Prefill pools: vllm-nhd, vllm-hnd, flashinfer, sglang (default: the model's)");
  c->add_option("--dst-layout", s.dst_layout, "Decode pools (default: the model's)");
  c->add_option("--src-block-tokens", s.src_block_tokens, "Prefill pools' tokens per block (default: the model's)");
  c->add_option("--dst-block-tokens", s.dst_block_tokens, "Decode pools' tokens per block (default: the model's)");
  c->add_option("--mem", s.mem, "Pools in host memory (dram) or on GPUs (vram: one GPU per process, round robin)")
      ->check(CLI::IsMember({"dram", "vram"}))
      ->capture_default_str();
  c->add_option("--backend", s.backend, "Host backend (tcp, shm); GPU data moves with cuda_ipc (default: tcp)");
  c->add_option("--path", s.path, "auto, host (host staging), device (GPU staging), direct (head-slice descriptors)")
      ->check(CLI::IsMember({"auto", "host", "device", "direct"}))
      ->capture_default_str();
  c->add_option("--tokens", s.tokens, "Prompt length in tokens")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--chunk-tokens", s.chunk_tokens, "Chunked prefill: send the prompt in chunks of this many tokens");
  c->add_option("--requests", s.requests, "Prompts moved one after another (the last is verified)")->check(CLI::PositiveNumber);
  c->add_option("--seed", s.seed, "Seed of block tables and values")->capture_default_str();
  c->add_option("--peer-timeout-ms", s.peer_timeout_ms, "A silent or dead rank becomes an error after this")->capture_default_str();
  c->add_option("--param", s.params, "KEY=VALUE backend setting of every rank's agent, e.g. shm.copy_threads=4 (repeatable)");
  c->add_option("--staging-mib", s.staging_mib, "Decode ranks' staging arena (default: one request)");
  c->add_flag("--json", o.json, "One JSON object per decode rank");
  c->add_option("--kill-prefill-rank", s.kill_rank, "Tests: this prefill rank sends its first chunk only and is killed while the decode ranks wait")->group("");
  c->add_option("--timeout-s", s.timeout_s, "Bound on the whole transfer")->group("");
  return c;
}

int run_tp_demo_command(TpDemoOptions& o) {
  TpRunSpec& s = o.spec;
  if (Status status = s.finalize(); !status.ok()) {
    std::fprintf(stderr, "kvferry tp-demo: %s\n", status.to_string().c_str());
    return 2;
  }
  if (s.kind == MemoryKind::kVram) {
    if (const auto why = vram_unusable(0, "--mem vram")) {
      std::fprintf(stderr, "kvferry tp-demo --mem vram: %s\n", why->c_str());
      return 2;
    }
  }
  if (!o.json) print_preamble(s);
  Result<std::vector<TpRankResult>> ranks = run_tp_ranks(s);
  if (!ranks.ok()) {
    std::fprintf(stderr, "kvferry tp-demo: %s\n", ranks.status().to_string().c_str());
    return 1;
  }
  int code = 0;
  for (const TpRankResult& r : *ranks) {
    const double ms = tp_median(r.ms);
    const double gbps = ms > 0 ? static_cast<double>(r.bytes) / (ms * 1e6) : 0;
    if (r.failed) code = 1;
    if (!r.failed && !r.verified && code == 0) code = 3;
    if (o.json) {
      nlohmann::json j{{"decode_rank", r.decode_rank}, {"sources", r.sources.size()}, {"source_agents", r.sources},
                       {"bytes", r.bytes}, {"ms", ms}, {"gbps", gbps}, {"path", r.path}, {"pieces", r.pieces},
                       {"verified", r.verified}, {"prompt_ms", r.ms}};
      if (!r.start_ns.empty() && !ranks->front().start_ns.empty()) {
        // Each prompt's start and end, ms after the first decode rank's first start.
        std::vector<double> start_ms, end_ms;
        for (std::size_t i = 0; i < r.start_ns.size() && i < r.end_ns.size(); ++i) {
          start_ms.push_back(static_cast<double>(r.start_ns[i] - ranks->front().start_ns[0]) / 1e6);
          end_ms.push_back(static_cast<double>(r.end_ns[i] - ranks->front().start_ns[0]) / 1e6);
        }
        j["start_ms"] = start_ms;
        j["end_ms"] = end_ms;
      }
      if (!r.message.empty()) j[r.failed ? "error" : "verify_error"] = r.message;
      std::printf("%s\n", j.dump().c_str());
      continue;
    }
    if (r.failed) {
      std::printf("%-11u error: %s\n", r.decode_rank, r.message.c_str());
      continue;
    }
    std::printf("%-11u %-7zu %-10s %9.1f %7.2f %-7s %s\n", r.decode_rank, r.sources.size(),
                format_bytes(r.bytes).c_str(), ms, gbps, r.path.c_str(), r.verified ? "yes" : "FAILED");
    if (!r.verified) std::printf("  verification: %s\n", r.message.c_str());
  }
  if (!o.json && code == 0) std::printf("\nall decode ranks: %.2f GB/s together (a prompt's bytes over its median time from the "
                "first decode rank's start to the last one's end)\n", tp_aggregate_gbps(*ranks));
  std::fflush(stdout);
  return code;
}

}  // namespace kvferry::cli
