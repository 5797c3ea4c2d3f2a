// StagedConnection: local vram over a backend that only moves host memory (tcp, shm).
//
// The core wraps the host backend's connection in one of these when a transfer's local
// side is vram and no backend moves vram itself. A job is cut into chunks of at most
// `chunk_bytes`; each chunk goes through one slot of a pinned host staging ring:
//   write: gather the chunk's vram blocks into the slot (one batched GPU copy), then a
//          host job from the slot to the peer;
//   read:  a host job from the peer into the slot, then scatter the slot into the vram
//          blocks (one batched GPU copy).
// With `slots` chunks in flight the GPU copies, the network and the peer overlap. The
// job's notification travels with its last chunk, which starts only after every other
// chunk has landed, so the peer sees it after all data.
//
// Threading: public methods from any thread. Continuations run on one worker thread per
// connection (never inside the host backend's or the stager's callbacks, which may hold
// their own locks).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "core/backend.h"
#include "core/device_stager.h"

namespace kvferry::detail {

struct StagingConfig {
  // 8 slots of 8 MiB (64 MiB of pinned memory per staged connection): enough chunks in
  // flight for a host copy pool to keep PCIe (55 GB/s) busy (docs/benchmarks.md).
  std::uint64_t chunk_bytes = 8u << 20;
  std::uint32_t slots = 8;
  StageMethod method = StageMethod::kBatch;
  // How often cancel() and destruction, while they wait for GPU copies already started
  // (which cannot be recalled), cancel the host jobs of the run again.
  std::chrono::milliseconds drain_timeout{10000};
};

class StagedConnection final : public BackendConnection {
 public:
  StagedConnection(std::shared_ptr<BackendConnection> host, std::shared_ptr<DeviceStager> stager,
                   StagingConfig config);
  ~StagedConnection() override;  // fails unfinished jobs, waits for their GPU copies

  Status post(const std::shared_ptr<TransferJob>& job) override;
  void cancel(const std::shared_ptr<TransferJob>& job) override;
  Status notify(std::string_view message) override;
  Status health() const override;

  class Engine;  // the state shared with callbacks (staged_connection.cc)

 private:
  std::shared_ptr<Engine> engine_;
};

}  // namespace kvferry::detail
