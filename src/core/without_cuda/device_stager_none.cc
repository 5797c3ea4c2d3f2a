// The device stager of a build without CUDA: vram cannot be staged.
#include "core/device_stager.h"

namespace kvferry::detail {

Result<std::shared_ptr<DeviceStager>> DeviceStager::instance() {
  return Unavailable("vram through host memory needs a kvferry built with CUDA (this build has none)");
}

}  // namespace kvferry::detail
