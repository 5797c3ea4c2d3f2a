// File backend: this agent's host memory <-> this agent's registered files (seed 004's
// loopback agent). Local only: it connects to the agent itself and nothing else.
// io_uring at a queue depth (liburing), O_DIRECT for aligned pieces, the page cache for
// the rest, plain preadv/pwritev when io_uring is unavailable.
//
// Settings ("file.<key>"): queue_depth (1..1024, default 32), max_io (bytes per op,
// 4KiB..64MiB, default 1MiB), io_uring (on|off), direct (on|off).
#pragma once

#include <memory>

#include "core/backend.h"

namespace kvferry::detail {

Result<std::unique_ptr<Backend>> make_file_backend(const BackendContext& ctx);

}  // namespace kvferry::detail
