// The file backend's registered files and its connection (to the agent itself).
//
// FileConnection runs every job on one worker thread that owns an IoEngine: it cuts
// jobs into ops (FileOpPlanner), keeps up to the engine's depth in flight across jobs,
// resubmits the rest of short completions, and finishes a job once all of its ops have
// completed — so when a job is finished (done, failed or cancelled) no I/O touches its
// memory any more.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>

#include "backends/file/file_io.h"
#include "core/backend.h"

namespace kvferry::detail {

class FileTable {
 public:
  Status add(const RegionInfo& region);
  void remove(std::uint64_t region_id);
  std::shared_ptr<const FileTarget> find(std::uint32_t file_id) const;

 private:
  mutable std::shared_mutex mu_;
  std::map<std::uint32_t, std::shared_ptr<const FileTarget>> by_file_;
};

struct FileSettings {
  unsigned queue_depth = 32;
  std::uint64_t max_io_bytes = 1u << 20;
  bool io_uring = true;
  bool direct = true;
};

class FileConnection final : public BackendConnection {
 public:
  FileConnection(std::shared_ptr<FileTable> files, FileSettings settings, std::string agent_name,
                 DeliverNotification deliver);
  ~FileConnection() override;

  Status post(const std::shared_ptr<TransferJob>& job) override;
  void cancel(const std::shared_ptr<TransferJob>& job) override;
  // A notification to itself: straight into the agent's inbox.
  Status notify(std::string_view message) override;
  Status health() const override { return Status::Ok(); }

 private:
  struct JobRun;
  void run();
  // Plans and queues ops of active jobs while slots are free.
  void issue(IoEngine& engine);
  void complete(IoEngine& engine, const IoCompletion& c);
  // Finishes jobs with nothing in flight and nothing left to issue.
  void finalize_idle_jobs();

  const std::shared_ptr<FileTable> files_;
  const FileSettings settings_;
  const std::string agent_name_;
  const DeliverNotification deliver_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // worker: new jobs, cancels, stop
  std::condition_variable done_cv_;  // cancel(): a job left the worker
  std::deque<std::shared_ptr<TransferJob>> incoming_;
  std::set<const TransferJob*> active_ids_;  // jobs the worker holds
  std::set<const TransferJob*> cancel_requests_;
  bool stopping_ = false;

  // Worker thread only.
  std::deque<std::unique_ptr<JobRun>> active_;
  std::vector<IoOp> slots_;
  std::vector<IoOp*> free_slots_;
  unsigned in_flight_ = 0;

  std::thread worker_;
};

}  // namespace kvferry::detail
