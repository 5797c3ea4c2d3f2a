// Loopback backend: transfers between agents of one process, by memcpy on a worker
// thread. Used by tests and for local copies. Same-process peers find each other through
// a process-wide directory of weak references keyed by a random token (the token is the
// connection info), so a peer can only be reached while it exists.
#pragma once

#include <memory>

#include "core/backend.h"

namespace kvferry::detail {

std::unique_ptr<Backend> make_loopback_backend(const BackendContext& ctx);

}  // namespace kvferry::detail
