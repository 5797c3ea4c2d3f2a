// Identity of this host and process, for same-host / same-process backend selection.
#pragma once

#include <string>

namespace kvferry::detail {

// The kernel's boot id (unique per host boot; falls back to the hostname) and the
// network namespace: same-host paths need both to match.
std::string host_id();
// Unique per process instance: "pid:token:pidns", a random token drawn once per process
// and the inode of our pid namespace (pids mean something only within one namespace).
std::string process_id();
// Whether the process named by `process_id` (of an agent on this host) has exited: true
// only when it shares our pid namespace and its pid no longer exists. A reused pid reads
// as alive (never a false "exited").
bool process_exited(const std::string& process_id);

}  // namespace kvferry::detail
