// CudaIpcInitiator: the initiator half of the cuda_ipc backend. It connects to
// same-host targets (handshake, the regions and their IPC handles, all validated against
// the peer's metadata) and runs one progress thread that polls the CUDA events of jobs
// in flight, reads acknowledgements and revocations, and notices a peer that went away.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/cuda_ipc/cuda_ipc_session.h"

namespace kvferry::detail::cuda_ipc {

class CudaIpcInitiator {
 public:
  static Result<std::unique_ptr<CudaIpcInitiator>> start(SessionConfig cfg, std::string process_id);
  ~CudaIpcInitiator();
  Result<std::shared_ptr<CudaIpcSession>> connect(const PeerEndpoint& peer, const std::string& socket_name,
                                                  Deadline deadline);

 private:
  CudaIpcInitiator() = default;
  void run();

  SessionConfig cfg_;
  std::string process_id_;
  UniqueFd wake_;
  std::thread thread_;
  std::atomic<bool> running_{true};
  std::mutex mu_;
  std::vector<std::weak_ptr<CudaIpcSession>> sessions_;
};

}  // namespace kvferry::detail::cuda_ipc
