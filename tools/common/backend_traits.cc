#include "common/backend_traits.h"

#include "kvferry/kvferry.h"

namespace kvferry::cli {

BackendTraits traits_of(std::string_view backend) {
  if (backend == "loopback") {
    return {false, "the loopback backend moves data inside one process only", ThroughputCeiling::kMemcpy};
  }
  if (backend == "file" || backend == "gds") {
    return {false, "the " + std::string(backend) + " backend moves data to storage, not to a peer",
            ThroughputCeiling::kMemcpy};
  }
  if (backend == "tcp" || backend == "ucx") return {true, "", ThroughputCeiling::kTcpStream};
  return {true, "", ThroughputCeiling::kMemcpy};  // shm, cuda_ipc and later same-host paths
}

const char* ceiling_name(ThroughputCeiling ceiling) {
  return ceiling == ThroughputCeiling::kTcpStream ? "tcp stream" : "memcpy";
}

std::vector<std::string> cross_process_backends() {
  std::vector<std::string> names;
  for (const BackendInfo& info : compiled_backends()) {
    if (info.usable && traits_of(info.name).crosses_processes) names.push_back(info.name);
  }
  return names;
}

bool wants_shared_pool(std::string_view backend) { return backend == "shm"; }

}  // namespace kvferry::cli
