#include "backends/gds/gds_connection.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/local_file.h"

namespace kvferry::detail {

namespace {

constexpr std::chrono::seconds kBatchStall{30};

}  // namespace

// --- GdsRegistry ---------------------------------------------------------------------

GdsRegistry::~GdsRegistry() {
  for (auto& [id, f] : files_)
    if (f.handle) api_->cuFileHandleDeregister(f.handle);
  for (auto& [addr, g] : gpus_)
    if (g.value) {  // cuFileBufRegister succeeded
      CudaDriver::Scope scope(*api_->cuda, static_cast<int>(g.info.device));
      api_->cuFileBufDeregister(reinterpret_cast<void*>(addr));
    }
}

Status GdsRegistry::add(const RegionInfo& r) {
  if (r.kind == MemoryKind::kFile) {
    if (r.file_fd < 0) return InvalidArgument("file region without an open file (use Agent::register_file)");
    File f;
    f.region_id = r.id;
    f.path = path_of_fd(r.file_fd);
    CudaDriver::Scope scope(*api_->cuda, 0);
    KVF_RETURN_IF_ERROR(scope.status());
    Status first;
    for (int fd : {r.file_direct_fd, r.file_fd}) {  // O_DIRECT first: what GDS proper needs
      if (fd < 0) continue;
      CUfileDescr_t descr{};
      descr.type = kCuFileHandleTypeOpaqueFd;
      descr.handle.fd = fd;
      Status s =
          CuFileApi::check(api_->cuFileHandleRegister(&f.handle, &descr),
                           std::string("cuFileHandleRegister (") +
                               (fd == r.file_direct_fd ? "O_DIRECT" : "buffered") + ") '" + f.path + "'");
      if (s.ok()) {
        first = Status::Ok();
        break;
      }
      if (first.ok())
        first = s;
      else
        first = IoError(first.message() + "; then " + s.message());
    }
    // A file cuFile refuses (an unsupported file system, a VM without udev data) stays
    // usable by the other backends: transfers through gds to it fail with this reason.
    if (!first.ok()) {
      f.handle = nullptr;
      f.error = first.with_context("gds cannot use '" + f.path + "' (see cufile.log)");
    }
    std::unique_lock lock(mu_);
    files_[r.device] = f;
    return Status::Ok();
  }
  if (r.kind != MemoryKind::kVram) return Status::Ok();
  const int device = static_cast<int>(r.device);
  CudaDriver::Scope scope(*api_->cuda, device);
  KVF_RETURN_IF_ERROR(scope.status());
  KVF_RETURN_IF_ERROR(api_->cuda->check_device_memory(r.address, r.length, device));
  // Registration lets GDS proper map the buffer once; in compatibility mode it may be
  // refused or pointless, and cuFile works on unregistered memory either way.
  const bool buffer_registered =
      register_buffers_ && api_->cuFileBufRegister(reinterpret_cast<void*>(r.address), r.length, 0).err == 0;
  std::unique_lock lock(mu_);
  gpus_.add(r, buffer_registered);
  return Status::Ok();
}

void GdsRegistry::remove(std::uint64_t region_id) {
  std::unique_lock lock(mu_);
  for (auto it = files_.begin(); it != files_.end(); ++it)
    if (it->second.region_id == region_id) {
      if (it->second.handle) api_->cuFileHandleDeregister(it->second.handle);
      files_.erase(it);
      return;
    }
  if (const auto* g = gpus_.find(region_id)) {
    if (g->value) {
      CudaDriver::Scope scope(*api_->cuda, static_cast<int>(g->info.device));
      api_->cuFileBufDeregister(reinterpret_cast<void*>(g->info.address));
    }
    gpus_.erase(region_id);
  }
}

Result<GdsRegistry::File> GdsRegistry::file(std::uint32_t file_id) const {
  std::shared_lock lock(mu_);
  auto it = files_.find(file_id);
  if (it == files_.end())
    return FailedPrecondition("gds: file id " + std::to_string(file_id) + " is not registered");
  if (!it->second.error.ok()) return it->second.error;
  return it->second;
}

Result<GdsRegistry::Gpu> GdsRegistry::gpu(std::uint64_t address, std::uint64_t length) const {
  std::shared_lock lock(mu_);
  if (const auto* g = gpus_.holding(address, length))
    return Gpu{g->info.id, g->info.address, g->info.length, static_cast<int>(g->info.device), g->value};
  char where[64];
  std::snprintf(where, sizeof where, "0x%llx, +%llu", static_cast<unsigned long long>(address),
                static_cast<unsigned long long>(length));
  return FailedPrecondition(std::string("gds: GPU memory [") + where + "] is not registered");
}

// --- GdsConnection -------------------------------------------------------------------

struct GdsConnection::Run {
  std::shared_ptr<TransferJob> job;
  bool write = false;
  std::vector<IoOp> ops;
  std::vector<std::string> paths;  // by op's path index
  std::vector<std::uint32_t> path_of;
  std::size_t next = 0;
  std::size_t settled = 0;
  unsigned in_flight = 0;
  bool stop = false;
  bool cancelled = false;
  Status error;
};

GdsConnection::GdsConnection(const CuFileApi* api, std::shared_ptr<GdsRegistry> registry,
                             GdsSettings settings, std::string agent_name,
                             DeliverNotification deliver)
    : api_(api),
      registry_(std::move(registry)),
      settings_(std::move(settings)),
      agent_name_(std::move(agent_name)),
      deliver_(std::move(deliver)) {
  if (settings_.engine == "batch") {
    workers_.emplace_back([this] {
      CUfileBatchHandle_t batch = nullptr;
      Status s = api_->has_batch() ? Status::Ok() : NotSupported("gds: this libcufile has no batch API");
      if (s.ok()) s = api_->cuda->make_current(0);
      if (s.ok())
        s = CuFileApi::check(api_->cuFileBatchIOSetUp(&batch, settings_.batch), "cuFileBatchIOSetUp");
      if (!s.ok()) {  // refuse new jobs and fail those already queued (none of them started)
        std::deque<std::shared_ptr<Run>> queued;
        {
          std::lock_guard lock(mu_);
          broken_ = s;
          queued.swap(runs_);
        }
        for (auto& r : queued) r->job->finish(s);
        return;
      }
      batch_loop(batch);
      api_->cuFileBatchIODestroy(batch);
    });
  } else {
    for (unsigned i = 0; i < settings_.threads; ++i) workers_.emplace_back([this] { thread_loop(); });
  }
}

GdsConnection::~GdsConnection() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& r : runs_) {
      r->stop = true;
      if (r->error.ok()) r->error = PeerLost("gds: the agent closed its connection to itself");
    }
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (auto& r : runs_) r->job->finish(r->error);  // nothing of them is in flight any more
}

Status GdsConnection::health() const {
  std::lock_guard lock(mu_);
  return broken_;
}

Status GdsConnection::notify(std::string_view message) {
  return deliver_(agent_name_, std::string(message));
}

Status GdsConnection::post(const std::shared_ptr<TransferJob>& job) {
  auto run = std::make_shared<Run>();
  run->job = job;
  run->write = job->op() == TransferOp::kWrite;
  std::map<std::uint32_t, std::uint32_t> path_index;
  for (const TransferPiece& p : job->pieces()) {
    KVF_ASSIGN_OR_RETURN(GdsRegistry::Gpu gpu, registry_->gpu(p.local, p.length));
    KVF_ASSIGN_OR_RETURN(GdsRegistry::File file, registry_->file(p.remote_device));
    auto [it, fresh] = path_index.emplace(p.remote_device, static_cast<std::uint32_t>(run->paths.size()));
    if (fresh) run->paths.push_back(file.path);
    for (std::uint64_t off = 0; off < p.length; off += settings_.max_io_bytes) {
      const std::uint64_t address = p.local + off;
      IoOp c;
      c.base = reinterpret_cast<void*>(gpu.buffer_registered ? gpu.address : address);
      c.device_offset = static_cast<off_t>(gpu.buffer_registered ? address - gpu.address : 0);
      c.file_offset = static_cast<off_t>(p.remote + off);
      c.size = std::min<std::uint64_t>(settings_.max_io_bytes, p.length - off);
      c.handle = file.handle;
      c.device = gpu.device;
      run->ops.push_back(c);
      run->path_of.push_back(it->second);
    }
  }
  {
    std::lock_guard lock(mu_);
    KVF_RETURN_IF_ERROR(broken_);
    if (stopping_) return Unavailable("gds: the connection is closing");
    runs_.push_back(run);
  }
  work_cv_.notify_all();
  return Status::Ok();
}

bool GdsConnection::take(std::unique_lock<std::mutex>& lock, std::shared_ptr<Run>& run, std::size_t& index) {
  for (;;) {
    for (auto& r : runs_) {
      if (r->stop || r->next >= r->ops.size()) continue;
      run = r;
      index = r->next++;
      ++r->in_flight;
      return true;
    }
    if (stopping_) return false;
    work_cv_.wait(lock);
  }
}

void GdsConnection::settle(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Run>& run,
                           Status outcome) {
  --run->in_flight;
  ++run->settled;
  if (!outcome.ok()) {
    if (run->error.ok()) run->error = std::move(outcome);
    run->stop = true;
  }
  if (run->in_flight > 0 || (!run->stop && run->settled < run->ops.size())) return;
  auto it = std::find(runs_.begin(), runs_.end(), run);
  if (it == runs_.end()) return;
  runs_.erase(it);
  Status result = run->error;
  if (result.ok() && run->cancelled) result = Cancelled("transfer cancelled");
  lock.unlock();
  if (result.ok() && run->job->notification()) result = deliver_(agent_name_, *run->job->notification());
  run->job->finish(std::move(result));
  lock.lock();
  done_cv_.notify_all();
}

void GdsConnection::cancel(const std::shared_ptr<TransferJob>& job) {
  std::unique_lock lock(mu_);
  auto it = std::find_if(runs_.begin(), runs_.end(), [&](const auto& r) { return r->job == job; });
  if (it == runs_.end()) return;
  std::shared_ptr<Run> run = *it;
  run->stop = run->cancelled = true;
  if (run->in_flight == 0) {  // nothing of it runs: finish it here
    ++run->in_flight;
    --run->settled;
    settle(lock, run, Status::Ok());
    return;
  }
  done_cv_.wait(lock, [&] { return std::find(runs_.begin(), runs_.end(), run) == runs_.end(); });
}

Status GdsConnection::run_op(const Run& run, const IoOp& c, int& current_device) const {
  if (c.device != current_device) {
    KVF_RETURN_IF_ERROR(api_->cuda->make_current(c.device));
    current_device = c.device;
  }
  std::size_t done = 0;
  while (done < c.size) {
    const auto dev_off = static_cast<off_t>(c.device_offset + static_cast<off_t>(done));
    const auto file_off = static_cast<off_t>(c.file_offset + static_cast<off_t>(done));
    const ssize_t r = run.write ? api_->cuFileWrite(c.handle, c.base, c.size - done, file_off, dev_off)
                                : api_->cuFileRead(c.handle, c.base, c.size - done, file_off, dev_off);
    const int err = errno;
    const std::string& path = run.paths[run.path_of[static_cast<std::size_t>(&c - run.ops.data())]];
    if (r < 0)
      return IoError(std::string(run.write ? "gds: writing '" : "gds: reading '") + path + "' at offset " +
                     std::to_string(file_off) + ": " + CuFileApi::io_error_text(r, err));
    if (r == 0)
      return IoError(run.write ? "gds: writing '" + path + "' at offset " + std::to_string(file_off) +
                                     ": no progress"
                               : "short read: '" + path + "' ends before offset " + std::to_string(file_off) +
                                     " + " + std::to_string(c.size - done) + " bytes");
    done += static_cast<std::size_t>(r);
  }
  return Status::Ok();
}

void GdsConnection::thread_loop() {
  int current_device = -1;
  std::unique_lock lock(mu_);
  std::shared_ptr<Run> run;
  std::size_t index = 0;
  while (take(lock, run, index)) {
    lock.unlock();
    Status s = run_op(*run, run->ops[index], current_device);
    lock.lock();
    settle(lock, run, std::move(s));
  }
}

void GdsConnection::batch_loop(CUfileBatchHandle_t batch) {
  const unsigned capacity = settings_.batch;
  std::vector<CUfileIOParams_t> params(capacity);
  std::vector<CUfileIOEvents_t> events(capacity);
  std::vector<std::pair<std::shared_ptr<Run>, std::size_t>> taken;
  std::vector<Status> outcome(capacity);
  std::vector<bool> done(capacity, false);
  int current_device = 0;
  std::unique_lock lock(mu_);
  for (;;) {
    taken.clear();
    std::shared_ptr<Run> run;
    std::size_t index = 0;
    if (!take(lock, run, index)) return;
    taken.emplace_back(run, index);
    // More ops of the same GPU, from any job, without waiting.
    for (auto& r : runs_) {
      while (taken.size() < capacity && !r->stop && r->next < r->ops.size() &&
             r->ops[r->next].device == run->ops[index].device) {
        taken.emplace_back(r, r->next++);
        ++r->in_flight;
      }
    }
    lock.unlock();
    const auto n = static_cast<unsigned>(taken.size());
    Status setup;
    if (run->ops[index].device != current_device) {
      setup = api_->cuda->make_current(run->ops[index].device);
      current_device = run->ops[index].device;
    }
    for (unsigned k = 0; k < n; ++k) {
      const auto& [r, i] = taken[k];
      const IoOp& c = r->ops[i];
      params[k] = CUfileIOParams_t{};
      params[k].mode = kCuFileBatch;
      params[k].u.batch.devPtr_base = c.base;
      params[k].u.batch.file_offset = c.file_offset;
      params[k].u.batch.devPtr_offset = c.device_offset;
      params[k].u.batch.size = c.size;
      params[k].fh = c.handle;
      params[k].opcode = r->write ? kCuFileWrite : kCuFileRead;
      params[k].cookie = reinterpret_cast<void*>(static_cast<std::uintptr_t>(k));
      outcome[k] = setup;
    }
    unsigned pending = 0;
    std::fill(done.begin(), done.end(), false);
    if (setup.ok()) {
      Status s =
          CuFileApi::check(api_->cuFileBatchIOSubmit(batch, n, params.data(), 0), "cuFileBatchIOSubmit");
      if (s.ok())
        pending = n;
      else
        for (unsigned k = 0; k < n; ++k) outcome[k] = s;
    }
    auto last_progress = std::chrono::steady_clock::now();
    while (pending > 0) {
      unsigned got = capacity;
      timespec timeout{0, 100 * 1000 * 1000};
      Status s = CuFileApi::check(api_->cuFileBatchIOGetStatus(batch, 1, &got, events.data(), &timeout),
                                  "cuFileBatchIOGetStatus");
      // A failing poll, or a batch that stops completing, cannot be waited for forever;
      // its ops are failed (cuFile gives no way to know more of them).
      if (s.ok() && got == 0 && std::chrono::steady_clock::now() - last_progress > kBatchStall)
        s = IoError("gds batch: " + std::to_string(pending) + " of " + std::to_string(n) +
                    " ops did not complete within " + std::to_string(kBatchStall.count()) + " s");
      if (!s.ok()) {
        for (unsigned k = 0; k < n; ++k)
          if (!done[k] && outcome[k].ok()) outcome[k] = s;
        break;
      }
      if (got > 0) last_progress = std::chrono::steady_clock::now();
      for (unsigned e = 0; e < got && e < capacity; ++e) {
        const auto k = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(events[e].cookie));
        if (k >= n || done[k]) continue;  // each op once, whatever the poll reports
        done[k] = true;
        --pending;
        const auto& [r, i] = taken[k];
        const IoOp& c = r->ops[i];
        const auto ret = static_cast<ssize_t>(events[e].ret);
        if (events[e].status != kCuFileStatusComplete || ret < 0) {
          outcome[k] = IoError(std::string("gds batch: ") + (r->write ? "writing '" : "reading '") +
                               r->paths[r->path_of[i]] + "' at offset " + std::to_string(c.file_offset) +
                               ": status " + std::to_string(events[e].status) +
                               (ret < 0 ? ", " + CuFileApi::io_error_text(ret, static_cast<int>(-ret)) : ""));
        } else if (static_cast<std::size_t>(ret) < c.size) {  // a short one: the rest synchronously
          IoOp rest = c;
          rest.device_offset += static_cast<off_t>(ret);
          rest.file_offset += static_cast<off_t>(ret);
          rest.size -= static_cast<std::size_t>(ret);
          Run copy;  // run_op reads only paths and direction from it
          copy.write = r->write;
          copy.paths = {r->paths[r->path_of[i]]};
          copy.path_of = {0};
          copy.ops = {rest};
          outcome[k] = run_op(copy, copy.ops[0], current_device);
        }
      }
    }
    lock.lock();
    for (unsigned k = 0; k < n; ++k) settle(lock, taken[k].first, outcome[k]);
  }
}

}  // namespace kvferry::detail
