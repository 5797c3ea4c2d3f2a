// UcxContext: one UCP context (RMA + active messages + wake-up) configured from the
// backend's settings, and what UCX says about it: the transports it will use, whether
// one of them is RDMA (InfiniBand / RoCE verbs: rc, ud, dc), whether it moves CUDA memory.
#pragma once

#include <ucp/api/ucp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail::ucx {

struct ContextSettings {
  std::string tls;      // "ucx.tls" -> UCX_TLS ("" keeps UCX's own choice or the environment's)
  std::string devices;  // "ucx.devices" -> UCX_NET_DEVICES
};

class UcxContext {
 public:
  static Result<std::unique_ptr<UcxContext>> create(const ContextSettings& settings);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  ucp_context_h get() const { return context_; }
  // Transport names UCX opened for this context ("tcp", "posix", "rc_mlx5", ...).
  const std::vector<std::string>& transports() const { return transports_; }
  bool has_rdma() const { return rdma_; }
  bool has_cuda() const { return cuda_; }
  // "tcp,sysv,posix,cma" for messages.
  std::string describe() const;

 private:
  UcxContext() = default;
  ucp_context_h context_ = nullptr;
  std::vector<std::string> transports_;
  bool rdma_ = false;
  bool cuda_ = false;
};

// True for the verbs transports (what RDMA hardware gives UCX).
bool is_rdma_transport(const std::string& tl);

// UCX's printed resource list ("# resource 0 : md 0 dev 0 flags -- tcp/lo") -> names.
std::vector<std::string> parse_transports(const std::string& printed);

}  // namespace kvferry::detail::ucx
