// `kvferry bench --tp P:D` (tp_bench.h).
#include "tp/tp_bench.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include "bench/bench_options.h"
#include "common/cli_util.h"
#include "kv/kv_presets.h"
#include "tp/tp_bench_ceiling.h"
#include "tp/tp_commands.h"
#include "common/vram_support.h"

namespace kvferry::cli {
namespace {

struct CaseResult {
  std::string name;  // the path, or "naive"
  double gbps = 0;   // all decode ranks together, measured prompts
  double ms = 0;     // median prompt time, whole prompt (first expect to last completion)
  bool verified = false;
  std::string path;  // what the receiver reported
  std::string error;
};

Result<std::pair<std::uint32_t, std::uint32_t>> parse_groups(const std::string& text) {
  unsigned p = 0, d = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%u:%u%c", &p, &d, &tail) != 2 || p == 0 || d == 0 || p > 64 || d > 64) {
    return InvalidArgument("--tp '" + text + "': expected P:D, e.g. 4:2");
  }
  return std::make_pair(p, d);
}

CaseResult run_case(TpRunSpec spec, const std::string& name, std::size_t skip) {
  CaseResult c;
  c.name = name;
  spec.naive = name == "naive";
  spec.path = spec.naive ? "direct" : name;
  if (Status s = spec.finalize(); !s.ok()) {
    c.error = s.to_string();
    return c;
  }
  Result<std::vector<TpRankResult>> ranks = run_tp_ranks(spec);
  if (!ranks.ok()) {
    c.error = ranks.status().to_string();
    return c;
  }
  c.verified = true;
  for (const TpRankResult& r : *ranks) {
    if (r.failed) c.error = "decode rank " + std::to_string(r.decode_rank) + ": " + r.message;
    c.verified = c.verified && r.verified;
    if (!r.verified && c.error.empty()) c.error = "decode rank " + std::to_string(r.decode_rank) + ": " + r.message;
    c.path = r.path;
  }
  // GB/s and ms/prompt are one figure: a prompt's bytes over its median whole-prompt time.
  c.ms = tp_median(tp_prompt_spans_ms(*ranks, skip));
  c.gbps = tp_aggregate_gbps(*ranks, skip);
  return c;
}

// The best plain transfer of `bytes` on `backend`: one `kvferry bench` child moving them
// as one descriptor (contiguous 1 MiB blocks of one layer merge into one) with the
// backend's default copy threads / streams, writing and then reading (on shm the
// initiator copies either way; either direction is a plain transfer of the same bytes),
// one request at a time. Each direction's figure is bytes over its median request time,
// as the TP rows are a prompt's bytes over its median whole-prompt time (a mean over the
// window would let one slow request pull the ceiling down). The child is stopped after
// its read case (some backends go on with variants of their own).
struct PlainCeiling {
  double write_gbps = 0;
  double read_gbps = 0;
  double best() const { return std::max(write_gbps, read_gbps); }
  const char* best_op() const { return read_gbps > write_gbps ? "read" : "write"; }
};

// What the plain bench moves: one merged contiguous range (the ceiling), or the prompt's
// own shape without TP (its layers x blocks of the source pool's block bytes, scattered
// ids as a paged KV cache: what moving this prompt 1 -> 1 costs).
struct PlainShape {
  std::uint64_t block_bytes = 1u << 20;
  std::uint64_t layers = 1;
  std::uint64_t blocks = 0;
  bool scattered = false;
  std::uint64_t bytes() const { return block_bytes * layers * blocks; }
};

PlainShape contiguous_shape(std::uint64_t bytes) { return {1u << 20, 1, (bytes + (1u << 20) - 1) >> 20, false}; }

// The prompt's shape, when the prompt's bytes split evenly into layers x blocks.
std::optional<PlainShape> prompt_shape(const TpRunSpec& spec, std::uint64_t bytes) {
  const std::uint64_t layers = spec.model_geometry.layers;
  const std::uint64_t block_tokens = spec.src_block_tokens ? spec.src_block_tokens : spec.model_geometry.block_tokens;
  if (layers == 0 || block_tokens == 0) return std::nullopt;
  const std::uint64_t blocks = (spec.tokens + block_tokens - 1) / block_tokens;
  if (bytes % (layers * blocks) != 0) return std::nullopt;
  return PlainShape{bytes / (layers * blocks), layers, blocks, true};
}

Result<PlainCeiling> plain_bench_gbps(const std::string& backend, const PlainShape& shape, int iterations,
                                      const std::vector<std::string>& params) {
  const std::uint64_t bytes = shape.bytes();
  std::vector<std::string> args = {"kvferry", "bench", "--backend", backend, "--op", "both", "--block-size",
                                   std::to_string(shape.block_bytes), "--layers", std::to_string(shape.layers),
                                   "--pattern", shape.scattered ? "scattered" : "contiguous", "--blocks",
                                   std::to_string(shape.blocks),
                                   "--iterations", std::to_string(iterations), "--warmup", "1",
                                   "--small-round-trips", "0", "--ceiling-reps", "1", "--json"};
  // The ranks' backend settings apply to the plain transfer too (the same backend, tuned alike).
  for (const std::string& p : params) {
    args.push_back("--param");
    args.push_back(p);
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return IoErrorFromErrno("pipe2", errno);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return IoErrorFromErrno("fork", errno);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDERR_FILENO);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(out[1]);
  std::optional<double> write_gbps, read_gbps;
  std::string pending;
  char buffer[4096];
  ssize_t n = 0;
  while (!read_gbps && (n = ::read(out[0], buffer, sizeof buffer)) > 0) {
    pending.append(buffer, static_cast<std::size_t>(n));
    std::size_t end;
    while (!read_gbps && (end = pending.find('\n')) != std::string::npos) {
      const nlohmann::json j = nlohmann::json::parse(pending.substr(0, end), nullptr, false);
      pending.erase(0, end + 1);
      if (!j.is_object()) continue;
      const double p50_us = j.value("p50_us", 0.0);
      const double gbps = p50_us > 0 ? static_cast<double>(bytes) / (p50_us * 1e3) : j.value("gbps", 0.0);
      if (j.value("op", "") == "write") write_gbps = gbps;
      if (j.value("op", "") == "read") read_gbps = gbps;
    }
  }
  close(out[0]);
  ::kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  if (!write_gbps && !read_gbps) return Unavailable("the plain bench on " + backend + " printed no result");
  return PlainCeiling{write_gbps.value_or(0), read_gbps.value_or(0)};
}

// `plain_gbps`: the same prompt moved 1 -> 1 as one plain transfer (host pools; 0: none).
void print_case(const CaseResult& c, double ceiling, const std::string& ceiling_name, double plain_gbps,
                double naive_gbps, bool json, const TpRunSpec& spec) {
  const double ratio = ceiling > 0 ? c.gbps / ceiling : 0;
  const double vs_plain = plain_gbps > 0 ? c.gbps / plain_gbps : 0;
  const double speedup = naive_gbps > 0 && c.name != "naive" ? c.gbps / naive_gbps : 0;
  if (json) {
    nlohmann::json j{{"tp", std::to_string(spec.prefill_tp) + ":" + std::to_string(spec.decode_tp)},
                     {"model", spec.model}, {"kv_heads", spec.model_geometry.kv_heads}, {"tokens", spec.tokens},
                     {"mem", spec.mem}, {"backend", spec.host_backend()}, {"case", c.name}, {"path", c.path},
                     {"bytes", spec.total_bytes()}, {"gbps", c.gbps}, {"ms", c.ms},
                     {"ceiling_gbps", ceiling}, {"ceiling_name", ceiling_name}, {"ratio", ratio},
                     {"speedup_over_naive", speedup}, {"verified", c.verified}};
    if (plain_gbps > 0) {
      j["plain_prompt_gbps"] = plain_gbps;
      j["ratio_to_plain_prompt"] = vs_plain;
    }
    if (!c.error.empty()) j["error"] = c.error;
    std::printf("%s\n", j.dump().c_str());
  } else if (!c.error.empty()) {
    std::printf("%-11s error: %s\n", c.name.c_str(), c.error.c_str());
  } else {
    // auto says which path it took.
    const std::string name = c.name == "auto" && !c.path.empty() ? "auto>" + c.path : c.name;
    char plain_text[16] = "-";
    if (plain_gbps > 0) std::snprintf(plain_text, sizeof plain_text, "%.2f", vs_plain);
    std::printf("%-11s %8.2f %9.1f %-22s %8.2f %6.2f %8s %9s  %s\n", name.c_str(), c.gbps, c.ms, ceiling_name.c_str(),
                ceiling, ratio, plain_text, speedup > 0 ? (std::to_string(speedup).substr(0, 5) + "x").c_str() : "-",
                c.verified ? "yes" : "FAILED");
  }
  std::fflush(stdout);
}

}  // namespace

void add_tp_bench_options(CLI::App* bench, TpBenchOptions& o) {
  const char* group = "Heterogeneous TP (--tp)";
  bench->add_option("--tp", o.groups, "P:D: prefill TP P -> decode TP D processes, per path, against the naive plan")->group(group);
  bench->add_option("--tp-model", o.model, "Model geometry: " + kv_model_preset_names())->group(group)->capture_default_str();
  bench->add_option("--tp-kv-heads", o.kv_heads, "The model's KV heads (default: the model's)")->group(group);
  bench->add_option("--tp-tokens", o.tokens, "Prompt length")->group(group)->capture_default_str();
  bench->add_option("--tp-src-layout", o.src_layout, "Prefill pools' arrangement")->group(group);
  bench->add_option("--tp-dst-layout", o.dst_layout, "Decode pools' arrangement")->group(group);
  bench->add_option("--tp-src-block-tokens", o.src_block_tokens, "Prefill pools' tokens per block")->group(group);
  bench->add_option("--tp-dst-block-tokens", o.dst_block_tokens, "Decode pools' tokens per block")->group(group);
  bench->add_option("--tp-path", o.paths, "Cases: direct, host, device, naive (repeatable; default: all that apply)")
      ->check(CLI::IsMember({"direct", "host", "device", "naive", "auto"}))
      ->group(group);
  bench->add_flag("--tp-ingress", o.ingress, "GPU pools: also several GPUs writing into one at once")->group(group);
}

int run_tp_bench(const BenchOptions& o) {
  Result<std::pair<std::uint32_t, std::uint32_t>> groups = parse_groups(o.tp.groups);
  if (!groups.ok()) {
    std::fprintf(stderr, "kvferry bench: %s\n", groups.status().to_string().c_str());
    return 2;
  }
  TpRunSpec spec;
  std::tie(spec.prefill_tp, spec.decode_tp) = *groups;
  spec.model = o.tp.model;
  spec.kv_heads = o.tp.kv_heads;
  spec.tokens = o.tp.tokens;
  spec.src_layout = o.tp.src_layout;
  spec.dst_layout = o.tp.dst_layout;
  spec.src_block_tokens = o.tp.src_block_tokens;
  spec.dst_block_tokens = o.tp.dst_block_tokens;
  spec.mem = o.mem;
  spec.backend = o.backend;
  spec.requests = o.warmup + o.iterations;
  spec.seed = o.seed != 0 ? o.seed : 1;
  spec.params = o.params;
  if (Status s = spec.finalize(); !s.ok()) {
    std::fprintf(stderr, "kvferry bench --tp: %s\n", s.to_string().c_str());
    return 2;
  }
  const bool vram = spec.kind == MemoryKind::kVram;
  if (vram) {
    if (const auto why = vram_unusable(0, "--mem vram")) {
      std::fprintf(stderr, "kvferry bench --tp --mem vram: %s\n", why->c_str());
      return 2;
    }
  }
  std::vector<std::string> cases = o.tp.paths;
  if (cases.empty()) {
    cases = vram ? std::vector<std::string>{"device", "host", "direct", "naive"}
                 : std::vector<std::string>{"auto", "direct", "host", "naive"};
  }
  const std::uint64_t bytes = spec.total_bytes();
  if (!o.json) {
    std::printf("kvferry bench --tp %u:%u: %s (%u KV heads), %llu-token prompt = %s over all decode ranks; %s pools, %s; "
                "%d warm-up + %d measured prompts per case\n",
                spec.prefill_tp, spec.decode_tp, spec.model.c_str(), spec.model_geometry.kv_heads,
                static_cast<unsigned long long>(spec.tokens), format_bytes(bytes).c_str(), spec.mem.c_str(),
                vram ? "cuda_ipc + tcp" : spec.host_backend().c_str(), o.warmup, o.iterations);
  }
  // The ceilings, measured in this run (host pools: before and after the cases).
  std::map<std::string, std::pair<std::string, double>> ceiling_of;  // case -> (name, GB/s)
  std::optional<PlainCeiling> plain_before, prompt_before;
  const int plain_iterations = std::max(5, o.iterations);
  const std::optional<PlainShape> prompt = vram ? std::nullopt : prompt_shape(spec, bytes);
  double plain_prompt_gbps = 0;
  if (vram) {
    Result<TpGpuCeilings> gpu = measure_tp_gpu_ceilings(bytes, o.tp.ingress ? spec.prefill_tp : 0, o.ceiling_reps);
    if (!gpu.ok()) {
      std::fprintf(stderr, "kvferry bench --tp: GPU ceilings: %s\n", gpu.status().to_string().c_str());
      return 1;
    }
    const std::string peer = gpu->single_gpu ? "GPU0 copy (1 GPU)" : "peer copy";
    for (const char* c : {"device", "direct", "naive", "auto"}) ceiling_of[c] = {peer, gpu->peer_copy_gbps};
    ceiling_of["host"] = {"pinned D2H copy", gpu->device_to_host_gbps};
    if (o.json) {
      std::printf("%s\n", nlohmann::json{{"ceilings", {{"peer_copy_gbps", gpu->peer_copy_gbps},
                                                      {"device_to_host_gbps", gpu->device_to_host_gbps},
                                                      {"ingress_sources", gpu->ingress_sources},
                                                      {"ingress_gbps", gpu->ingress_gbps},
                                                      {"single_gpu", gpu->single_gpu}}}}
                                .dump()
                                .c_str());
    } else {
      std::printf("ceilings: %s %.1f GB/s, pinned device->host %.1f GB/s",
                  gpu->single_gpu ? "one GPU (every rank on GPU 0): GPU0->GPU0 copy" : "GPU0->GPU1 peer copy",
                  gpu->peer_copy_gbps, gpu->device_to_host_gbps);
      if (gpu->ingress_gbps > 0) std::printf(", %u GPUs writing into one at once %.1f GB/s", gpu->ingress_sources, gpu->ingress_gbps);
      std::printf("\n");
    }
  } else {
    Result<PlainCeiling> plain = plain_bench_gbps(spec.host_backend(), contiguous_shape(bytes), plain_iterations, spec.params);
    if (!plain.ok()) {
      std::fprintf(stderr, "kvferry bench --tp: ceiling: %s\n", plain.status().to_string().c_str());
      return 1;
    }
    plain_before = *plain;
    if (prompt) {
      Result<PlainCeiling> same = plain_bench_gbps(spec.host_backend(), *prompt, plain_iterations, spec.params);
      if (same.ok()) prompt_before = *same;
    }
  }
  std::vector<CaseResult> results;
  for (const std::string& name : cases) results.push_back(run_case(spec, name, static_cast<std::size_t>(o.warmup)));
  if (!vram) {
    // The ceiling is the best of the plain transfers before and after the cases: the
    // honest upper figure of one plain transfer of the same bytes, not their average.
    Result<PlainCeiling> after = plain_bench_gbps(spec.host_backend(), contiguous_shape(bytes), plain_iterations, spec.params);
    const PlainCeiling& best = after.ok() && after->best() > plain_before->best() ? *after : *plain_before;
    Result<PlainCeiling> prompt_after =
        prompt ? plain_bench_gbps(spec.host_backend(), *prompt, plain_iterations, spec.params) : Unavailable("no prompt shape");
    // The same prompt moved 1 -> 1, best of before and after as for the ceiling.
    if (prompt_before) plain_prompt_gbps = prompt_before->best();
    if (prompt_after.ok()) plain_prompt_gbps = std::max(plain_prompt_gbps, prompt_after->best());
    if (!o.json) {
      auto both = [](const PlainCeiling& c) {
        char text[64];
        std::snprintf(text, sizeof text, "write %.2f / read %.2f GB/s", c.write_gbps, c.read_gbps);
        return std::string(text);
      };
      std::printf("ceiling: the same bytes as one plain bench transfer on %s (median request): %s before the cases, "
                  "%s after; the best, %.2f GB/s (%s), is the ceiling\n",
                  spec.host_backend().c_str(), both(*plain_before).c_str(),
                  after.ok() ? both(*after).c_str() : "failed", best.best(), best.best_op());
    }
    if (!o.json && prompt) {
      std::printf("the same prompt moved 1 -> 1 as one plain bench transfer on %s (%llu layers x %llu scattered %s "
                  "blocks, median request, best of before/after): %.2f GB/s (column 'vs plain')\n",
                  spec.host_backend().c_str(), static_cast<unsigned long long>(prompt->layers),
                  static_cast<unsigned long long>(prompt->blocks), format_bytes(prompt->block_bytes).c_str(),
                  plain_prompt_gbps);
    }
    const std::string name = "plain " + spec.host_backend() + " " + best.best_op();
    for (const char* c : {"direct", "host", "naive", "auto"}) ceiling_of[c] = {name, best.best()};
  }
  double naive = 0;
  for (const CaseResult& c : results) {
    if (c.name == "naive" && c.error.empty()) naive = c.gbps;
  }
  if (!o.json) {
    std::printf("\n%-11s %8s %9s %-22s %8s %6s %8s %9s  %s\n", "case", "GB/s", "ms/prompt", "ceiling", "GB/s", "ratio",
                "vs plain", "vs naive", "verified");
  }
  int code = 0;
  for (const CaseResult& c : results) {
    const auto& [name, gbps] = ceiling_of[c.name];
    print_case(c, gbps, name, plain_prompt_gbps, naive, o.json, spec);
    if (!c.error.empty()) code = 1;
    if (c.error.empty() && !c.verified && code == 0) code = 3;
  }
  return code;
}

}  // namespace kvferry::cli
