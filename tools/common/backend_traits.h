// backend_traits.h — what the tools need to know about a backend that the public API
// does not (yet) say: whether it can join two processes, and which plain path is the
// fair ceiling to compare it against. Adding a backend = adding one line to the table
// in backend_traits.cc; unknown names get same-host-memory defaults.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvferry::cli {

enum class ThroughputCeiling {
  kTcpStream,  // one plain TCP stream between the same two processes
  kMemcpy,     // a memcpy of the same bytes (backends that move host memory same-host)
};

struct BackendTraits {
  bool crosses_processes = true;
  std::string why_not;  // when !crosses_processes: a sentence for the user
  ThroughputCeiling ceiling = ThroughputCeiling::kMemcpy;
};

BackendTraits traits_of(std::string_view backend);
const char* ceiling_name(ThroughputCeiling ceiling);

// Compiled in, usable on this machine, and able to move data between two processes:
// the backends `kvferry demo` runs by default.
std::vector<std::string> cross_process_backends();

// Whether pools for this backend should come from Agent::allocate_shared_memory: the shm
// backend maps such memory in the peer and copies with plain memcpy; ordinary memory it
// can only reach through process_vm_readv/writev.
bool wants_shared_pool(std::string_view backend);

}  // namespace kvferry::cli
