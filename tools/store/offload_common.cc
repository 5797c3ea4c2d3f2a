// What `kvferry offload` and `kvferry onboard` share.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/bench_file_ceiling.h"
#include "common/cli_util.h"
#include "kvferry/kv/offload.h"
#include "common/latency_stats.h"
#include "store/offload_options.h"

namespace kvferry::cli {

Result<std::map<std::string, std::string>> parse_params(const std::vector<std::string>& params) {
  std::map<std::string, std::string> out;
  for (const std::string& p : params) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      return InvalidArgument("--param '" + p + "': expected KEY=VALUE, e.g. file.queue_depth=64");
    out[p.substr(0, eq)] = p.substr(eq + 1);
  }
  return out;
}

Result<StorageCeiling> measure_store_ceiling(const std::string& directory, std::uint8_t* memory,
                                             std::uint64_t bytes, bool write) {
  const std::string path = directory + "/.kvferry-ceiling";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoErrorFromErrno("ceiling: creating '" + path + "'", errno);
  const bool sized =
      fallocate(fd, 0, 0, static_cast<off_t>(bytes)) == 0 || ftruncate(fd, static_cast<off_t>(bytes)) == 0;
  ::close(fd);
  Result<FileCeiling> result =
      sized ? Result<FileCeiling>(FileCeiling{})
            : Result<FileCeiling>(IoErrorFromErrno("ceiling: sizing '" + path + "'", errno));
  // A read needs written blocks (not holes), and the write is measured on written ones
  // too, as the store's own blocks are after its first offload.
  if (result.ok()) result = measure_file_ceiling(path, memory, bytes, true, 1u << 20, 1);
  if (result.ok()) result = measure_file_ceiling(path, memory, bytes, write, 1u << 20, 3);
  ::unlink(path.c_str());
  if (!result.ok()) return result.status();
  return StorageCeiling{result->name, median(result->gbps)};
}

void print_store_line(const std::string& what, const KvStoreResult& r, const StorageCeiling* ceiling,
                      bool json, const std::string& extra_key, const std::string& extra_value) {
  const double io_gbps = gigabytes_per_second(r.bytes, r.io_seconds);
  const double total_gbps = gigabytes_per_second(r.bytes, r.seconds);
  if (json) {
    nlohmann::json j{{"op", what},
                     {"store", r.store.directory},
                     {"path", r.path},
                     {"blocks", r.store.source_blocks.size()},
                     {"block_bytes", r.store.block_bytes},
                     {"bytes", r.bytes},
                     {"io_seconds", r.io_seconds},
                     {"seconds", r.seconds},
                     {"io_gbps", io_gbps},
                     {"gbps", total_gbps},
                     {"checksums", r.store.checksums},
                     {"verified", r.verified}};
    if (ceiling) {
      j["ceiling_name"] = ceiling->name;
      j["ceiling_gbps"] = ceiling->gbps;
      j["ratio"] = ceiling->gbps > 0 ? io_gbps / ceiling->gbps : 0;
    }
    if (!extra_key.empty()) j[extra_key] = extra_value;
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%s: %zu blocks x %s = %s via %s in %.1f ms: %.2f GB/s transfers, %.2f GB/s with index%s\n",
              what.c_str(), r.store.source_blocks.size(), format_bytes(r.store.block_bytes).c_str(),
              format_bytes(r.bytes).c_str(), r.path.c_str(), r.io_seconds * 1e3, io_gbps, total_gbps,
              what == "offload" ? " and fsync" : "");
  if (ceiling)
    std::printf("  ceiling (same run, same bytes): %.2f GB/s %s, 1 MiB calls, one thread -> ratio %.2f\n",
                ceiling->gbps, ceiling->name.c_str(), ceiling->gbps > 0 ? io_gbps / ceiling->gbps : 0.0);
}

}  // namespace kvferry::cli
