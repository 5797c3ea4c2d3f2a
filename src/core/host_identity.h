// Identity of this host and process, for same-host / same-process backend selection.
#pragma once

#include <string>

namespace kvferry::detail {

// The kernel's boot id (unique per host boot; falls back to the hostname) and the
// network namespace: same-host paths need both to match.
std::string host_id();
// Unique per process instance: pid plus a random token drawn once per process.
std::string process_id();

}  // namespace kvferry::detail
