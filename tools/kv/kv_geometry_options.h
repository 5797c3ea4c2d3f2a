// kv_geometry_options.h — the KV geometry and pool options shared by `kvferry serve`,
// `pull` and `estimate`: a model preset, explicit fields that override it, and (for
// pools) the pool size. Both sides of a serve/pull must be given the same geometry;
// the handshake refuses a mismatch naming the differing fields.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "kv/kv_pool_memory.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct KvGeometryOptions {
  std::string model = "mistral-small-3.1";
  // 0 / empty: the preset's value.
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t block_tokens = 0;
  std::string dtype;
  std::string layout;

  // The preset with the explicit fields applied, validated.
  Result<KvGeometry> geometry() const;
  Result<KvArrangement> arrangement() const;
};

struct KvPoolOptions {
  KvGeometryOptions geometry;
  std::string pool_size_text = "4GiB";  // all layers, K and V
  std::uint32_t pool_blocks = 0;        // blocks per layer; overrides --pool-size

  // blocks = pool_blocks, or floor(pool size / (block_bytes * layers)) (Mistral-Small-3.1:
  // 4 GiB / (64 KiB * 40) = 1638).
  Result<KvLayout> layout() const;
};

void add_kv_geometry_options(CLI::App* command, KvGeometryOptions& options);
void add_kv_pool_options(CLI::App* command, KvPoolOptions& options);
// --mem and --device: where this process's pool lives. Each side of a serve/pull
// chooses on its own; the Agent picks a backend that can join the two kinds.
void add_kv_memory_options(CLI::App* command, KvMemoryOptions& options);

}  // namespace kvferry::cli
