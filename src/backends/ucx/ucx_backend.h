// The ucx backend: dram (and vram where UCX moves CUDA memory) between hosts over UCX,
// RDMA verbs where UCX finds them. Private to the library.
#pragma once

#include <memory>

#include "core/backend.h"

namespace kvferry::detail::ucx {

Result<std::unique_ptr<Backend>> make_ucx_backend(const BackendContext& ctx);

}  // namespace kvferry::detail::ucx
