// tp_spec.h — one heterogeneous-TP run of `kvferry tp-demo` and `bench --tp`: the model,
// the two TP groups, the pools' layouts, the path; what each spawned rank is told (as
// JSON on its command line); what a decode rank reports back is tp_rank_result.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvferry/kv/tp_transfer.h"
#include "kvferry/kvferry.h"
#include "tp/tp_rank_result.h"

namespace kvferry::cli {

struct TpRunSpec {
  std::uint32_t prefill_tp = 2;
  std::uint32_t decode_tp = 1;
  std::string model = "mistral-small-3.1";
  std::uint32_t kv_heads = 0;  // 0: the model's
  std::string src_layout;      // empty: the model's arrangement
  std::string dst_layout;
  std::uint32_t src_block_tokens = 0;  // 0: the model's
  std::uint32_t dst_block_tokens = 0;
  std::string mem = "dram";
  std::string backend;  // empty: tcp (with --mem vram: cuda_ipc for GPU data, tcp for the rest)
  std::string path = "auto";
  std::uint64_t tokens = 4096;
  std::uint64_t chunk_tokens = 0;  // 0: the prompt in one chunk
  int requests = 1;                // the last one is verified; all are timed
  bool naive = false;              // direct path with the naive per-head plan
  std::uint64_t seed = 1;
  int peer_timeout_ms = 5000;
  std::uint64_t staging_mib = 0;   // receiver staging arena, MiB (0: enough for one request)
  int kill_rank = -1;              // tests: this prefill rank sends one chunk and is killed
  int timeout_s = 120;
  std::vector<std::string> params;  // KEY=VALUE backend settings of every rank's agent (e.g. shm.copy_threads=4)

  // Derived by finalize().
  KvGeometry model_geometry;  // kv_heads = the model's
  std::map<std::string, std::string> backend_params;  // from params
  KvArrangement src_arrangement = KvArrangement::kVllmNhd;
  KvArrangement dst_arrangement = KvArrangement::kVllmNhd;
  TpPath tp_path = TpPath::kAuto;
  MemoryKind kind = MemoryKind::kDram;

  // Resolves the model, layouts, path and memory; a clear message naming the bad option.
  Status finalize();
  TpGroups groups() const;
  // The pool layout of prefill rank `rank` (its heads only) or decode rank `rank`.
  Result<KvLayout> prefill_layout(std::uint32_t rank) const;
  Result<KvLayout> decode_layout(std::uint32_t rank) const;
  // The request's block table on one rank, drawn from the seed (scattered ids).
  std::vector<std::uint32_t> block_table(const KvLayout& layout, bool prefill, std::uint32_t rank) const;
  // Bytes one decode rank receives per request, and all ranks together.
  std::uint64_t decode_rank_bytes(std::uint32_t rank) const;
  std::uint64_t total_bytes() const;
  std::string host_backend() const { return backend.empty() || backend == "cuda_ipc" ? "tcp" : backend; }
  std::vector<std::string> agent_backends() const;

  nlohmann::json to_json() const;
  static Result<TpRunSpec> from_json(const std::string& text);
};

}  // namespace kvferry::cli
