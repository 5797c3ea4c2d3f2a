// gds backend: this agent's GPU memory <-> this agent's registered files through cuFile
// (GPUDirect Storage), loaded at run time (no build dependency on CUDA). Where the
// nvidia-fs driver is absent cuFile works in compatibility mode. Local only.
//
// Usable where a CUDA driver with a device, libcufile.so.0 and cuFileDriverOpen work;
// `kvferry info` says which of them is missing. GPU regions are checked with the driver's
// pointer attributes (device memory of the descriptor's device, not managed memory).
//
// Settings ("gds.<key>"): engine (threads|batch, default threads), threads (1..64,
// default 16), batch (1..64 entries, default 64), max_io (bytes per cuFile call,
// default 16MiB), register_buffers (on|off: cuFileBufRegister of GPU regions).
#pragma once

#include <memory>

#include "core/backend.h"

namespace kvferry::detail {

Result<std::unique_ptr<Backend>> make_gds_backend(const BackendContext& ctx);

}  // namespace kvferry::detail
