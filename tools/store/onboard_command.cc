// `kvferry onboard`: a store's blocks read into other blocks of a fresh (poisoned) host
// pool of the same geometry; every byte checked against what `kvferry offload` wrote.
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
namespace {

constexpr std::uint8_t kPoison = 0xAB;

// Destination block d (from entry of source s) holds pattern (seed, lane, s); all other
// blocks still hold the poison.
std::optional<std::string> check_pool(const KvHostPool& pool, const std::vector<std::uint32_t>& into,
                                      const std::vector<std::uint32_t>& sources, std::uint64_t seed) {
  const KvLayout& l = pool.layout();
  std::vector<std::int64_t> source_of(l.blocks(), -1);
  for (std::size_t i = 0; i < into.size(); ++i) source_of[into[i]] = sources[i];
  for (std::uint32_t lane = 0; lane < l.lane_count(); ++lane)
    for (std::uint32_t b = 0; b < l.blocks(); ++b) {
      const std::int64_t s = source_of[b];
      const auto bad = s >= 0 ? find_pattern_mismatch(pool.segment(lane, b), l.segment_bytes(),
                                                      pattern_key(seed, lane, static_cast<std::uint64_t>(s)))
                              : find_byte_mismatch(pool.segment(lane, b), l.segment_bytes(), kPoison);
      if (bad)
        return "block " + std::to_string(b) + " lane " + std::to_string(lane) + " differs at byte " +
               std::to_string(*bad) +
               (s >= 0 ? " (from source block " + std::to_string(s) + ")" : " (poison)");
    }
  return std::nullopt;
}

}  // namespace

CLI::App* add_onboard_command(CLI::App& app, OnboardOptions& o) {
  CLI::App* c =
      app.add_subcommand("onboard", "Onboard a store's KV blocks into other blocks of a host pool, verified");
  add_kv_pool_options(c, o.pool);
  c->add_option("--store", o.store, "Store directory written by `kvferry offload`")->required();
  c->add_option("--seed", o.seed, "Seed of the destination block ids (default: fresh)");
  c->add_flag("!--no-verify", o.verify, "Do not check the store's checksums");
  c->add_flag("!--no-check-data", o.check_data,
              "Do not compare every byte with what `kvferry offload` wrote");
  c->add_flag("!--no-ceiling", o.ceiling, "Skip the same-run O_DIRECT pread ceiling");
  c->add_option("--param", o.params, "KEY=VALUE backend parameter (repeatable)");
  c->add_flag("--json", o.json, "One JSON object on stdout");
  return c;
}

int run_onboard_command(const OnboardOptions& o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "kvferry onboard: %s\n", s.to_string().c_str());
    return 1;
  };
  const std::uint64_t seed =
      o.seed ? o.seed : (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  auto params = parse_params(o.params);
  if (!params.ok()) return fail(params.status());
  auto info = inspect_store(o.store);
  if (!info.ok()) return fail(info.status());
  auto layout = o.pool.layout();
  if (!layout.ok()) return fail(layout.status());
  const auto n = static_cast<std::uint32_t>(info->source_blocks.size());
  if (n > layout->blocks())
    return fail(InvalidArgument("the store holds " + std::to_string(n) + " blocks, the pool only " +
                                std::to_string(layout->blocks())));
  auto agent = make_single_backend_agent(unique_agent_name("onboard"), "file", *params);
  if (!agent.ok()) return fail(agent.status());
  auto pool = KvHostPool::allocate(*layout, kPoison);
  if (!pool.ok()) return fail(pool.status());
  if (Status s = (*agent)->register_memory(pool->pool().tensor_regions()); !s.ok()) return fail(s);
  const auto into = choose_block_ids(BlockPattern::kScattered, seed, layout->blocks(), n);
  KvStoreOptions so;
  so.verify = o.verify;
  auto r = onboard_blocks(**agent, offload_view(pool->pool()), o.store, into, {}, so);
  if (!r.ok()) return fail(r.status());
  std::string data = "not checked";
  if (o.check_data) {
    std::ifstream side(o.store + "/kvferry-cli.json");
    const auto j = nlohmann::json::parse(side, nullptr, false);
    if (!j.is_discarded() && j.contains("seed") && j["seed"].is_number_unsigned()) {
      const auto bad = check_pool(*pool, into, info->source_blocks, j["seed"].get<std::uint64_t>());
      data = bad ? "FAILED: " + *bad : "every byte matches";
    } else {
      data = "not checked (no kvferry-cli.json: not written by `kvferry offload`)";
    }
  }
  std::optional<StorageCeiling> ceiling;
  if (o.ceiling) {
    auto c = measure_store_ceiling(
        o.store, reinterpret_cast<std::uint8_t*>(pool->pool().tensor_addresses()[0]), r->bytes, false);
    if (!c.ok()) return fail(c.status());
    ceiling = *c;
  }
  if (!o.json)
    std::printf("kvferry onboard: %s, into scattered blocks (seed %llu)\n", layout->describe().c_str(),
                static_cast<unsigned long long>(seed));
  print_store_line("onboard", *r, ceiling ? &*ceiling : nullptr, o.json, "data", data);
  if (!o.json)
    std::printf("  data: %s; checksums: %s\n", data.c_str(), r->verified ? "verified" : "not verified");
  return data.rfind("FAILED", 0) == 0 ? 3 : 0;
}

}  // namespace kvferry::cli
