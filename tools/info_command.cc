// `kvferry info`: what this build holds and what of it works on this machine.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/backend_traits.h"
#include "commands.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {
namespace {

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

long online_cpus() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : static_cast<long>(std::thread::hardware_concurrency());
}

}  // namespace

CLI::App* add_info_command(CLI::App& app, InfoOptions& o) {
  CLI::App* command = app.add_subcommand("info", "Version, compiled backends and whether each is usable here");
  command->add_flag("--json", o.json, "Print one JSON object");
  return command;
}

int run_info_command(const InfoOptions& o) {
  const std::vector<BackendInfo> backends = compiled_backends();
  if (o.json) {
    nlohmann::json j{{"version", version_string()}, {"hostname", host_name()}, {"cpus", online_cpus()}};
    j["backends"] = nlohmann::json::array();
    for (const BackendInfo& b : backends) {
      j["backends"].push_back({{"name", b.name},
                               {"description", b.description},
                               {"usable", b.usable},
                               {"reason", b.reason},
                               {"crosses_processes", traits_of(b.name).crosses_processes}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("kvferry %s\n", version_string());
  std::printf("host     %s, %ld CPUs\n", host_name().c_str(), online_cpus());
  std::printf("backends (%zu compiled):\n", backends.size());
  for (const BackendInfo& b : backends) {
    std::string state = b.usable ? "usable" : "not usable";
    if (b.usable && !traits_of(b.name).crosses_processes) state += ", one process only";
    std::printf("  %-10s %-24s %s\n", b.name.c_str(), state.c_str(), b.description.c_str());
    if (!b.usable) std::printf("  %-10s %-24s why: %s\n", "", "", b.reason.c_str());
  }
  return 0;
}

}  // namespace kvferry::cli
