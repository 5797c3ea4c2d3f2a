// offload_options.h — `kvferry offload` and `kvferry onboard`: a host KV pool (any model
// geometry) offloaded to a store directory on local storage and onboarded back into
// other blocks of a fresh pool, every byte checked, timed next to a plain sequential
// O_DIRECT pwrite / pread of the same bytes by one thread in the same run.
//
// The offloading process fills segment (lane, block) with the pattern of
// (seed, lane, block) and records the seed in DIR/kvferry-cli.json, so `onboard` (a later
// process) checks what it read without a second copy of the data.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kv/kv_geometry_options.h"
#include "kvferry/kv/offload.h"

namespace kvferry::cli {

struct OffloadOptions {
  KvPoolOptions pool;
  std::string store;
  std::uint32_t blocks = 256;  // blocks to offload (every layer of each)
  std::string pattern = "scattered";
  std::uint64_t seed = 0;  // 0: fresh
  bool checksums = true;
  bool overwrite = false;
  bool sync = true;
  bool ceiling = true;
  std::vector<std::string> params;  // KEY=VALUE backend parameters (file.queue_depth=...)
  bool json = false;
};

struct OnboardOptions {
  KvPoolOptions pool;
  std::string store;
  std::uint64_t seed = 0;  // of the destination block ids; 0: fresh
  bool verify = true;      // checksums of the store
  bool check_data = true;  // the pattern, when the store was written by `kvferry offload`
  bool ceiling = true;
  std::vector<std::string> params;
  bool json = false;
};

CLI::App* add_offload_command(CLI::App& app, OffloadOptions& options);
int run_offload_command(const OffloadOptions& options);
CLI::App* add_onboard_command(CLI::App& app, OnboardOptions& options);
int run_onboard_command(const OnboardOptions& options);

// Shared by both: backend parameters, the agent, the ceiling on a scratch file in the
// store directory (removed afterwards), and the printed line.
Result<std::map<std::string, std::string>> parse_params(const std::vector<std::string>& params);
struct StorageCeiling {
  std::string name;
  double gbps = 0;
};
Result<StorageCeiling> measure_store_ceiling(const std::string& directory, std::uint8_t* memory,
                                             std::uint64_t bytes, bool write);
void print_store_line(const std::string& what, const KvStoreResult& r, const StorageCeiling* ceiling,
                      bool json, const std::string& extra_json_key = "",
                      const std::string& extra_json_value = "");

}  // namespace kvferry::cli
