// The head gather/scatter of a build without CUDA: vram pools cannot be copied.
#include "kv/tp/head_copy_internal.h"

namespace kvferry::detail {

Status device_head_copy(const HeadCopyJob& job, const KvPool&, const KvStaging&, const KvStaging*, void*,
                        bool, std::chrono::milliseconds) {
  return NotSupported(std::string(job.direction == HeadCopyDirection::kGather ? "gather" : "scatter") +
                      "_kv_heads: a vram pool needs a kvferry built with CUDA (this build has none)");
}

}  // namespace kvferry::detail
