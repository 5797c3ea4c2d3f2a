// `kvferry offload`: a host KV pool filled with known data, `--blocks` of its blocks
// offloaded to a store directory (kvferry/kv/offload.h).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/agent_factory.h"
#include "common/block_choice.h"
#include "common/block_pattern.h"
#include "kv/kv_host_pool.h"
#include "store/offload_options.h"

namespace kvferry::cli {

CLI::App* add_offload_command(CLI::App& app, OffloadOptions& o) {
  CLI::App* c =
      app.add_subcommand("offload", "Offload KV blocks of a host pool to a store directory (file backend)");
  add_kv_pool_options(c, o.pool);
  c->add_option("--store", o.store, "Store directory (created)")->required();
  c->add_option("--blocks", o.blocks, "Blocks to offload (all layers of each)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--pattern", o.pattern, "scattered (random block ids) or contiguous")
      ->check(CLI::IsMember({"scattered", "contiguous"}))
      ->capture_default_str();
  c->add_option("--seed", o.seed, "Seed of the data and the block ids (default: fresh)");
  c->add_flag("!--no-checksums", o.checksums, "Do not store an XXH3-64 of every block");
  c->add_flag("--overwrite", o.overwrite, "Replace an existing store");
  c->add_flag("!--no-sync", o.sync, "Do not fdatasync the data and fsync the index");
  c->add_flag("!--no-ceiling", o.ceiling, "Skip the same-run O_DIRECT pwrite ceiling");
  c->add_option("--param", o.params, "KEY=VALUE backend parameter (repeatable), e.g. file.queue_depth=64");
  c->add_flag("--json", o.json, "One JSON object on stdout");
  return c;
}

int run_offload_command(const OffloadOptions& o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "kvferry offload: %s\n", s.to_string().c_str());
    return 1;
  };
  const std::uint64_t seed =
      o.seed ? o.seed : (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  auto params = parse_params(o.params);
  if (!params.ok()) return fail(params.status());
  auto layout = o.pool.layout();
  if (!layout.ok()) return fail(layout.status());
  if (o.blocks > layout->blocks())
    return fail(InvalidArgument("--blocks " + std::to_string(o.blocks) + " exceeds the pool's " +
                                std::to_string(layout->blocks()) + " blocks"));
  auto agent = make_single_backend_agent(unique_agent_name("offload"), "file", *params);
  if (!agent.ok()) return fail(agent.status());
  auto pool = KvHostPool::allocate(*layout, 0);
  if (!pool.ok()) return fail(pool.status());
  const auto ids =
      choose_block_ids(o.pattern == "contiguous" ? BlockPattern::kContiguous : BlockPattern::kScattered, seed,
                       layout->blocks(), o.blocks);
  for (std::uint32_t lane = 0; lane < layout->lane_count(); ++lane)
    for (std::uint32_t b : ids)
      fill_pattern(pool->segment(lane, b), layout->segment_bytes(), pattern_key(seed, lane, b));
  if (Status s = (*agent)->register_memory(pool->pool().tensor_regions()); !s.ok()) return fail(s);
  KvStoreOptions so;
  so.checksums = o.checksums;
  so.overwrite = o.overwrite;
  so.sync = o.sync;
  auto r = offload_blocks(**agent, offload_view(pool->pool()), ids, o.store, so);
  if (!r.ok()) return fail(r.status());
  std::ofstream(o.store + "/kvferry-cli.json")
      << nlohmann::json{{"seed", seed}, {"layout", layout->describe()}}.dump() << "\n";
  std::optional<StorageCeiling> ceiling;
  if (o.ceiling) {
    // The same bytes, from the start of the pool's memory, to a scratch file beside the store.
    auto c = measure_store_ceiling(
        o.store, reinterpret_cast<std::uint8_t*>(pool->pool().tensor_addresses()[0]), r->bytes, true);
    if (!c.ok()) return fail(c.status());
    ceiling = *c;
  }
  if (!o.json)
    std::printf("kvferry offload: %s, seed %llu\n", layout->describe().c_str(),
                static_cast<unsigned long long>(seed));
  print_store_line("offload", *r, ceiling ? &*ceiling : nullptr, o.json);
  return 0;
}

}  // namespace kvferry::cli
