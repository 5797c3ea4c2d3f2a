// The gds backend's registry (files as cuFile handles, GPU regions) and its connection
// to the agent itself, which runs jobs as cuFile calls.
//
// Engines: "threads" — `threads` workers each issuing synchronous cuFileRead/Write of
// one op at a time (cuFile is thread-safe); "batch" — one worker submitting up to
// `batch` ops at once with the cuFile batch API and polling their completion.
// A job is finished only when none of its ops is in flight: when cancel() returns,
// no cuFile call touches the job's memory.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/gds/cufile_api.h"
#include "core/backend.h"
#include "core/region_table.h"

namespace kvferry::detail {

struct GdsSettings {
  std::string engine = "threads";  // threads | batch
  unsigned threads = 16;
  unsigned batch = 64;
  std::uint64_t max_io_bytes = 16u << 20;
  bool register_buffers = true;
};

class GdsRegistry {
 public:
  explicit GdsRegistry(const CuFileApi* api, bool register_buffers)
      : api_(api), register_buffers_(register_buffers) {}
  ~GdsRegistry();
  Status add(const RegionInfo& region);
  void remove(std::uint64_t region_id);

  struct File {
    std::uint64_t region_id = 0;
    CUfileHandle_t handle = nullptr;  // null when cuFile refused the file
    std::string path;
    Status error;  // why cuFile refused it
  };
  struct Gpu {
    std::uint64_t region_id = 0;
    std::uint64_t address = 0;
    std::uint64_t length = 0;
    int device = 0;
    bool buffer_registered = false;  // cuFileBufRegister succeeded: pass its base
  };
  // Copies of the entries (by value: the registry may change meanwhile; the core keeps
  // regions of posted jobs registered).
  Result<File> file(std::uint32_t file_id) const;
  Result<Gpu> gpu(std::uint64_t address, std::uint64_t length) const;

 private:
  const CuFileApi* api_;
  const bool register_buffers_;
  mutable std::shared_mutex mu_;
  std::map<std::uint32_t, File> files_;  // by file id
  RegionTable<bool> gpus_;               // GPU regions; value: cuFileBufRegister succeeded
};

class GdsConnection final : public BackendConnection {
 public:
  GdsConnection(const CuFileApi* api, std::shared_ptr<GdsRegistry> registry, GdsSettings settings,
                std::string agent_name, DeliverNotification deliver);
  ~GdsConnection() override;

  Status post(const std::shared_ptr<TransferJob>& job) override;
  void cancel(const std::shared_ptr<TransferJob>& job) override;
  Status notify(std::string_view message) override;
  Status health() const override;

 private:
  // One cuFile read or write: at most max_io_bytes of one of the job's pieces (the file
  // backend's IoOp is the same idea, file_io.h).
  struct IoOp {
    void* base;           // GPU buffer base as cuFile wants it (registered base, or the address)
    off_t device_offset;  // from base
    off_t file_offset;
    std::size_t size;
    CUfileHandle_t handle;
    int device;
  };
  struct Run;

  // Takes the next op of the first job that has one; false when stopping with nothing.
  bool take(std::unique_lock<std::mutex>& lock, std::shared_ptr<Run>& run, std::size_t& index);
  // Records an op's outcome; finishes the job when it was its last one in flight.
  void settle(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Run>& run, Status outcome);
  Status run_op(const Run& run, const IoOp& c, int& current_device) const;
  void thread_loop();
  void batch_loop(CUfileBatchHandle_t batch);

  const CuFileApi* api_;
  const std::shared_ptr<GdsRegistry> registry_;
  const GdsSettings settings_;
  const std::string agent_name_;
  const DeliverNotification deliver_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<Run>> runs_;  // posted, not yet finished
  bool stopping_ = false;
  Status broken_;  // the engine could not start
  std::vector<std::thread> workers_;
};

}  // namespace kvferry::detail
