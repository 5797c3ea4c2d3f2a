#include "backends/file/file_connection.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "backends/file/file_op_planner.h"
#include "core/local_file.h"

namespace kvferry::detail {

namespace {

// A file whose last name was removed (unlinked, or replaced by a rename) still accepts
// I/O through our descriptor, but what is written there is lost: an error, not success.
Status check_not_removed(const FileTarget& f, const char* when) {
  struct stat st {};
  if (fstat(f.fd, &st) != 0) return IoErrorFromErrno("fstat '" + f.path + "'", errno);
  if (S_ISREG(st.st_mode) && st.st_nlink == 0)
    return IoError("'" + f.path + "' was removed " + when + "; its bytes are gone with it");
  return Status::Ok();
}

}  // namespace

Status FileTable::add(const RegionInfo& r) {
  if (r.kind != MemoryKind::kFile) return Status::Ok();  // host memory needs nothing here
  if (r.file_fd < 0) return InvalidArgument("file region without an open file (use Agent::register_file)");
  auto t = std::make_shared<FileTarget>();
  t->file_id = r.device;
  t->region_id = r.id;
  t->fd = r.file_fd;
  t->direct_fd = r.file_direct_fd;
  t->alignment = r.file_direct_alignment;
  t->length = r.length;
  t->path = path_of_fd(r.file_fd);
  std::unique_lock lock(mu_);
  by_file_[r.device] = std::move(t);
  return Status::Ok();
}

void FileTable::remove(std::uint64_t region_id) {
  std::unique_lock lock(mu_);
  std::erase_if(by_file_, [&](const auto& kv) { return kv.second->region_id == region_id; });
}

std::shared_ptr<const FileTarget> FileTable::find(std::uint32_t file_id) const {
  std::shared_lock lock(mu_);
  auto it = by_file_.find(file_id);
  return it == by_file_.end() ? nullptr : it->second;
}

struct FileConnection::JobRun {
  JobRun(std::shared_ptr<TransferJob> j, const FileSettings& s)
      : job(std::move(j)),
        write(job->op() == TransferOp::kWrite),
        planner(&job->pieces().expanded(), write, s.max_io_bytes, s.direct) {}
  std::shared_ptr<TransferJob> job;
  bool write;
  FileOpPlanner planner;
  std::vector<std::shared_ptr<const FileTarget>> held;  // the files its ops use
  unsigned in_flight = 0;
  Status error;
  bool stop = false;  // issue nothing more (error, cancel, shutdown)
  bool cancelled = false;
};

FileConnection::FileConnection(std::shared_ptr<FileTable> files, FileSettings settings,
                               std::string agent_name, DeliverNotification deliver)
    : files_(std::move(files)),
      settings_(settings),
      agent_name_(std::move(agent_name)),
      deliver_(std::move(deliver)),
      worker_([this] { run(); }) {}

FileConnection::~FileConnection() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  worker_.join();
}

Status FileConnection::post(const std::shared_ptr<TransferJob>& job) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Unavailable("file backend: the connection is closing");
    incoming_.push_back(job);
  }
  work_cv_.notify_one();
  return Status::Ok();
}

void FileConnection::cancel(const std::shared_ptr<TransferJob>& job) {
  std::unique_lock lock(mu_);
  auto it = std::find(incoming_.begin(), incoming_.end(), job);
  if (it != incoming_.end()) {
    incoming_.erase(it);
    lock.unlock();
    job->finish(Cancelled("transfer cancelled"));
    return;
  }
  if (!active_ids_.count(job.get())) return;
  cancel_requests_.insert(job.get());
  work_cv_.notify_all();
  // Bounded: the worker issues nothing more for it and waits only for ops in flight.
  done_cv_.wait(lock, [&] { return !active_ids_.count(job.get()); });
}

Status FileConnection::notify(std::string_view message) {
  return deliver_(agent_name_, std::string(message));
}

void FileConnection::run() {
  std::unique_ptr<IoEngine> engine;
  if (settings_.io_uring) {
    auto e = make_uring_engine(settings_.queue_depth);
    if (e.ok()) engine = std::move(e).value();
  }
  if (!engine) engine = make_sync_engine();
  slots_.resize(engine->depth());
  for (IoOp& op : slots_) free_slots_.push_back(&op);
  std::vector<IoCompletion> done;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (active_.empty() && in_flight_ == 0)
        work_cv_.wait(lock, [&] { return stopping_ || !incoming_.empty(); });
      while (!incoming_.empty()) {
        active_ids_.insert(incoming_.front().get());
        active_.push_back(std::make_unique<JobRun>(std::move(incoming_.front()), settings_));
        incoming_.pop_front();
      }
      for (auto& r : active_) {
        if (stopping_ && !r->stop) {
          r->stop = true;
          if (r->error.ok()) r->error = PeerLost("file backend: the agent closed its connection to itself");
        }
        if (cancel_requests_.count(r->job.get())) r->stop = r->cancelled = true;
      }
      if (stopping_ && active_.empty() && in_flight_ == 0) return;
    }
    issue(*engine);
    if (in_flight_ > 0) {
      done.clear();
      Status s = engine->reap(done, true);
      if (!s.ok()) {
        // The ring itself failed: nothing more can be known of the ops in flight.
        for (auto& r : active_) {
          r->stop = true;
          if (r->error.ok()) r->error = s;
          r->in_flight = 0;
        }
        in_flight_ = 0;
        free_slots_.clear();
        for (IoOp& op : slots_) free_slots_.push_back(&op);
      }
      for (const IoCompletion& c : done) complete(*engine, c);
    }
    finalize_idle_jobs();
  }
}

void FileConnection::issue(IoEngine& engine) {
  for (auto& r : active_) {
    JobRun& run = *r;
    auto lookup = [&](std::uint32_t file_id) -> Result<const FileTarget*> {
      for (const auto& f : run.held)
        if (f->file_id == file_id) return f.get();
      auto f = files_->find(file_id);
      if (!f)
        return FailedPrecondition("file id " + std::to_string(file_id) +
                                  " is not registered with this agent");
      KVF_RETURN_IF_ERROR(check_not_removed(*f, "after it was registered"));
      run.held.push_back(f);
      return f.get();
    };
    while (!run.stop && !run.planner.done() && !free_slots_.empty()) {
      IoOp& op = *free_slots_.back();
      op.owner = &run;
      Status s = run.planner.next(op, lookup);
      if (!s.ok()) {
        run.error = s;
        run.stop = true;
        break;
      }
      free_slots_.pop_back();
      engine.queue(op);
      ++run.in_flight;
      ++in_flight_;
    }
    if (free_slots_.empty()) return;
  }
}

void FileConnection::complete(IoEngine& engine, const IoCompletion& c) {
  IoOp& op = *c.op;
  JobRun& run = *static_cast<JobRun*>(op.owner);
  Status failure;
  if (c.result < 0) {
    const int err = static_cast<int>(-c.result);
    if (err == EINTR || err == EAGAIN) return engine.queue(op);
    if (err == EINVAL && op.direct) {  // the file system refused this O_DIRECT op after all
      op.direct = false;
      return engine.queue(op);
    }
    failure = io_error(op, err);
  } else if (c.result == 0) {
    struct stat st {};
    const std::uint64_t size = fstat(op.file->fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    failure = op.write ? IoError("writing '" + op.file->path + "' at offset " + std::to_string(op.offset) +
                                 ": the kernel accepted no bytes")
                       : IoError("short read: '" + op.file->path + "' ends at " + std::to_string(size) +
                                 " bytes, the transfer reads " + std::to_string(op.bytes) +
                                 " more at offset " + std::to_string(op.offset));
  } else if (op.advance(static_cast<std::uint64_t>(c.result))) {
    return engine.queue(op);  // a short completion: the rest goes again
  }
  if (!failure.ok() && run.error.ok()) run.error = failure;
  if (!failure.ok()) run.stop = true;
  free_slots_.push_back(&op);
  --run.in_flight;
  --in_flight_;
}

void FileConnection::finalize_idle_jobs() {
  for (auto it = active_.begin(); it != active_.end();) {
    JobRun& run = **it;
    if (run.in_flight > 0 || (!run.stop && !run.planner.done())) {
      ++it;
      continue;
    }
    Status result = run.error;
    if (result.ok() && run.cancelled) result = Cancelled("transfer cancelled");
    if (result.ok() && run.write)
      for (const auto& f : run.held) {
        result = check_not_removed(*f, "while it was being written");
        if (!result.ok()) break;
      }
    if (result.ok() && run.job->notification()) result = deliver_(agent_name_, *run.job->notification());
    std::shared_ptr<TransferJob> job = std::move(run.job);
    it = active_.erase(it);
    job->finish(std::move(result));  // before cancel() may return
    {
      std::lock_guard lock(mu_);
      active_ids_.erase(job.get());
      cancel_requests_.erase(job.get());
    }
    done_cv_.notify_all();
  }
}

}  // namespace kvferry::detail
