// Staging arenas of a build without CUDA: no device memory.
#include "kv/tp/staging_memory.h"

namespace kvferry::detail {

Result<std::shared_ptr<std::uint8_t>> allocate_device_staging(std::uint64_t, std::uint32_t) {
  return NotSupported("vram staging needs a kvferry built with CUDA (this build has none)");
}

}  // namespace kvferry::detail
