#include "core/device_stager.h"

namespace kvferry::detail {

Result<StageMethod> parse_stage_method(const std::string& text) {
  if (text == "batch") return StageMethod::kBatch;
  if (text == "kernel") return StageMethod::kKernel;
  return InvalidArgument("staging copy method '" + text + "': expected batch or kernel");
}

}  // namespace kvferry::detail
