#include <unistd.h>
#include "backends/cuda_ipc/cuda_ipc_session.h"

#include <cuda_runtime.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "cuda/cuda_util.h"
#include "core/byte_io.h"
#include "core/revocation.h"

namespace kvferry::detail::cuda_ipc {

using cuda::check;
using cuda::DeviceScope;

Result<CopyLane*> Lanes::get(int device) {
  std::lock_guard lock(mu_);
  auto& lane = lanes_[device];
  if (!lane) {
    auto created = CopyLane::create(device, method_, blocks_);
    if (!created.ok()) {
      lanes_.erase(device);
      return created.status();
    }
    lane = std::move(created).value();
  }
  return lane.get();
}

CudaIpcSession::CudaIpcSession(SessionConfig cfg, std::string peer, pid_t peer_pid, UniqueFd sock,
                               PeerRegions regions)
    : cfg_(std::move(cfg)),
      // A lost peer's socket is shut down (the target sees EOF and drops its side).
      peer_session_("cuda_ipc", std::move(peer), cfg_.peer_timeout, [this] { ::shutdown(sock_.get(), SHUT_RDWR); },
                    peer_pid),
      same_process_(peer_pid == 0),
      sock_(std::move(sock)),
      regions_(std::move(regions)) {}

CudaIpcSession::~CudaIpcSession() {
  fail(PeerLost("connection closed"));
  std::list<InFlight> work;
  {
    std::lock_guard lock(mu_);
    work.swap(inflight_);
  }
  drain(work);  // no copy may run once the mappings below are closed
  for (auto& w : work) w.job->finish(health());
  std::lock_guard lock(mu_);
  for (auto& [key, base] : opened_) {
    DeviceScope scope(key.second);
    cudaIpcCloseMemHandle(base);
  }
}

Result<std::uint64_t> CudaIpcSession::peer_address(PeerRegion& r, int local_device) {
  for (const auto& [dev, addr] : r.value.mapped)
    if (dev == local_device) return addr;
  KVF_ASSIGN_OR_RETURN(std::uint64_t addr, open_region(r, local_device));
  r.value.mapped.emplace_back(local_device, addr);
  return addr;
}

Result<std::uint64_t> CudaIpcSession::open_region(PeerRegion& r, int local_device) {
  if (same_process_) {
    // One address space: the target's pointer works; the copy kernel on another GPU
    // needs peer access to it (cudaMemcpyBatchAsync does not).
    if (static_cast<int>(r.info.device) != local_device) {
      DeviceScope scope(local_device);
      KVF_RETURN_IF_ERROR(scope.status());
      cudaError_t e = cudaDeviceEnablePeerAccess(static_cast<int>(r.info.device), 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) (void)cudaGetLastError();
      else KVF_RETURN_IF_ERROR(check(e, "cudaDeviceEnablePeerAccess"));
    }
    return r.info.address;
  }
  auto key = std::make_pair(r.value.handle, local_device);
  auto it = opened_.find(key);
  if (it == opened_.end()) {
    cudaIpcMemHandle_t h;
    std::memcpy(&h, r.value.handle.data(), sizeof h);
    void* base = nullptr;
    DeviceScope scope(local_device);
    KVF_RETURN_IF_ERROR(scope.status());
    KVF_RETURN_IF_ERROR(check(cudaIpcOpenMemHandle(&base, h, cudaIpcMemLazyEnablePeerAccess),
                              "cudaIpcOpenMemHandle")
                            .with_context("cuda_ipc: opening memory of '" + peer_session_.peer() + "' on GPU " +
                                          std::to_string(local_device)));
    it = opened_.emplace(key, base).first;
  }
  return reinterpret_cast<std::uint64_t>(it->second) + r.value.offset;
}

Status CudaIpcSession::post(const std::shared_ptr<TransferJob>& job) {
  KVF_RETURN_IF_ERROR(health());
  const bool write = job->op() == TransferOp::kWrite;
  const auto& pieces = job->pieces();
  // A strided job's pieces share one device on each side by construction.
  const bool one_gpu = pieces.strided() || std::all_of(pieces.begin(), pieces.end(), [&](const TransferPiece& p) {
                         return p.local_device == pieces[0].local_device;
                       });
  std::lock_guard lock(mu_);
  PeerRegion* region = nullptr;  // the last piece's region: most pieces share it
  // The piece as a copy between addresses the local GPU reaches.
  auto translate = [&](const TransferPiece& p) -> Result<CopyPair> {
    if (!region || !region_holds(region->info, p.remote, p.length)) region = regions_.holding(p.remote, p.length);
    if (!region || region->value.revoked || region->info.device != p.remote_device)
      return RemoteError("cuda_ipc: peer '" + peer_session_.peer() + "' refused a range at offset " + std::to_string(p.remote) +
                         " (+" + std::to_string(p.length) + "): " +
                         (!region          ? "not inside vram it announced"
                          : region->value.revoked ? "it deregistered that memory"
                                            : "the descriptor names another GPU"));
    KVF_ASSIGN_OR_RETURN(std::uint64_t base, peer_address(*region, static_cast<int>(p.local_device)));
    const std::uint64_t remote = base + (p.remote - region->info.address);
    return write ? CopyPair{p.local, remote, p.length} : CopyPair{remote, p.local, p.length};
  };
  InFlight f;
  f.job = job;
  if (const StridedPieces* sp = pieces.strided()) {
    KVF_ASSIGN_OR_RETURN(CopyLane * lane, cfg_.lanes->get(static_cast<int>(sp->local_device)));
    Submission sub;
    bool posted = false;
    if (lane->method() == CopyMethod::kKernel) {
      KVF_ASSIGN_OR_RETURN(posted, post_strided(*sp, write, *lane, &sub));
    }
    if (posted) {
      f.subs.emplace_back(lane, sub);
      return start_watching(std::move(f));
    }
  }
  if (one_gpu && pieces.size() >= kKeepFromPieces) {
    std::erase_if(kept_, [](const Kept& k) { return k.pieces.expired(); });
    auto hit = std::find_if(kept_.begin(), kept_.end(), [&](const Kept& k) {
      return k.op == job->op() && k.pieces.lock() == job->shared_pieces();
    });
    if (hit != kept_.end()) {
      Submission sub;
      KVF_RETURN_IF_ERROR(hit->lane->submit_kept(*hit->table, &sub));
      f.table = hit->table;
      f.subs.emplace_back(hit->lane, sub);
      return start_watching(std::move(f));
    }
  }
  if (one_gpu) {
    // The usual case: one builder, and the GPU starts on the first slice of the table
    // while this loop translates the rest (copy_lane.h).
    const int dev = static_cast<int>(pieces[0].local_device);
    KVF_ASSIGN_OR_RETURN(CopyLane * lane, cfg_.lanes->get(dev));
    const std::size_t max_items = pieces.size() + job->total_bytes() / cuda::kMaxItemBytes + 1;
    KVF_ASSIGN_OR_RETURN(CopyLane::Builder b, lane->start(max_items));
    // Most pieces fall in the region of the one before: translate those inline (the
    // loop runs 40,000 times per post in the acceptance shape; it must stay ~10 ns).
    const PeerRegion* last = nullptr;
    std::uint64_t last_base = 0;
    for (const TransferPiece& p : pieces) {
      if (last && region_holds(last->info, p.remote, p.length) && p.remote_device == last->info.device) {
        const std::uint64_t remote = last_base + (p.remote - last->info.address);
        KVF_RETURN_IF_ERROR(write ? b.add(p.local, remote, p.length) : b.add(remote, p.local, p.length));
        continue;
      }
      KVF_ASSIGN_OR_RETURN(CopyPair c, translate(p));
      KVF_RETURN_IF_ERROR(b.add(c.src, c.dst, c.length));
      last = region;  // translate() left `region` on the piece's region (live, not revoked)
      last_base = (write ? c.dst : c.src) - (p.remote - region->info.address);
    }
    Submission sub;
    KVF_RETURN_IF_ERROR(b.finish(&sub));
    f.subs.emplace_back(lane, sub);
    if (lane->method() == CopyMethod::kKernel && pieces.size() >= kKeepFromPieces) {
      std::erase_if(posted_once_, [](const auto& e) { return e.first.expired(); });
      auto seen = std::find_if(posted_once_.begin(), posted_once_.end(), [&](const auto& e) {
        return e.second == job->op() && e.first.lock() == job->shared_pieces();
      });
      if (seen != posted_once_.end()) {
        f.keep_table = true;  // its second post: keep the table for the third and later
        posted_once_.erase(seen);
      } else {
        if (posted_once_.size() >= 4 * kKeptTables) posted_once_.erase(posted_once_.begin());
        posted_once_.emplace_back(job->shared_pieces(), job->op());
      }
    }
  } else {
    // Pieces on several local GPUs: translate all first, then one submission per GPU,
    // each taking its lane's lock alone (never two at once).
    std::map<int, std::vector<CopyPair>> by_device;
    for (const TransferPiece& p : pieces) {
      KVF_ASSIGN_OR_RETURN(CopyPair c, translate(p));
      by_device[static_cast<int>(p.local_device)].push_back(c);
    }
    for (auto& [dev, pairs] : by_device) {
      Status st;
      auto lane = cfg_.lanes->get(dev);
      Submission sub;
      if (lane.ok()) st = (*lane)->submit(pairs, &sub);
      else st = lane.status();
      if (!st.ok()) {
        std::list<InFlight> started;
        started.push_back(std::move(f));
        drain(started);
        return st;
      }
      f.subs.emplace_back(*lane, sub);
    }
  }
  return start_watching(std::move(f));
}

Result<bool> CudaIpcSession::post_strided(const StridedPieces& sp, bool write, CopyLane& lane, Submission* out) {
  if (sp.runs.empty() || sp.local_lanes.empty()) return false;
  // The remote bytes a lane's runs touch, as offsets from the lane's base.
  std::uint64_t lo = UINT64_MAX, hi = 0;
  for (const StridedRun& r : sp.runs) {
    lo = std::min(lo, r.remote_first * sp.remote_stride);
    hi = std::max(hi, r.remote_first * sp.remote_stride + r.count * sp.block_bytes);
  }
  std::vector<std::uint64_t> remote(sp.remote_lanes.size());
  for (std::size_t l = 0; l < remote.size(); ++l) {
    PeerRegion* r = regions_.holding(sp.remote_lanes[l] + lo, hi - lo);
    if (!r || r->value.revoked || r->info.device != sp.remote_device) return false;
    KVF_ASSIGN_OR_RETURN(std::uint64_t base, peer_address(*r, static_cast<int>(sp.local_device)));
    remote[l] = base + (sp.remote_lanes[l] - r->info.address);  // the lane's base as mapped here (mod 2^64)
  }
  // A run's bytes cut at kMaxItemBytes, so that the grid's blocks share work evenly;
  // runs of kEngineMinBytes or more go to the copy engines whole, one copy per lane.
  std::vector<cuda::CopyItem> chunks;
  std::vector<CopyPair> engine;
  chunks.reserve(sp.runs.size());
  for (const StridedRun& r : sp.runs) {
    const std::uint64_t local = r.local_first * sp.local_stride, far = r.remote_first * sp.remote_stride;
    const std::uint64_t length = r.count * sp.block_bytes;
    if (length >= cuda::kEngineMinBytes) {
      for (std::size_t l = 0; l < remote.size(); ++l) {
        const std::uint64_t a = sp.local_lanes[l] + local, b = remote[l] + far;
        engine.push_back(write ? CopyPair{a, b, length} : CopyPair{b, a, length});
      }
      continue;
    }
    for (std::uint64_t off = 0; off < length; off += cuda::kMaxItemBytes) {
      const std::uint64_t n = std::min(cuda::kMaxItemBytes, length - off);
      chunks.push_back(write ? cuda::CopyItem{local + off, far + off, n} : cuda::CopyItem{far + off, local + off, n});
    }
  }
  KVF_RETURN_IF_ERROR(write ? lane.submit_strided(sp.local_lanes, remote, chunks, engine, out)
                            : lane.submit_strided(remote, sp.local_lanes, chunks, engine, out));
  return true;
}


Status CudaIpcSession::start_watching(InFlight f) {  // mu_ held
  std::shared_ptr<TransferJob> job = f.job;
  inflight_.push_back(std::move(f));
  job->set_poller([weak = weak_from_this()] {
    if (auto s = weak.lock()) s->poll();
  });
  // The reactor polls events only while it knows of copies: wake it so it watches this
  // job's (a waiter spins only briefly before it sleeps too).
  if (cfg_.progress_wake_fd >= 0) ring_eventfd(cfg_.progress_wake_fd);
  return Status::Ok();
}

void CudaIpcSession::drain(std::list<InFlight>& work) {
  for (auto& w : work) {
    for (auto& [lane, sub] : w.subs) {
      cudaEventSynchronize(sub.event);
      lane->release(sub);
    }
    w.subs.clear();
  }
}

void CudaIpcSession::poll() {
  std::vector<std::pair<std::shared_ptr<TransferJob>, Status>> done;
  {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      Status st;
      bool ready = true;
      for (auto& [lane, sub] : it->subs) {
        cudaError_t e = cudaEventQuery(sub.event);
        if (e == cudaErrorNotReady) ready = false;
        else if (e != cudaSuccess && st.ok()) st = check(e, "cuda_ipc: copy on the GPU");
      }
      if (!ready) {
        ++it;
        continue;
      }
      // A table is kept only when it is the whole submission (no engine copies beside it).
      if (it->keep_table && st.ok() && it->subs.size() == 1 && !it->subs.front().second.engine_copies) {
        auto& [lane, sub] = it->subs.front();
        auto table = std::make_shared<const cuda::KeptTable>(lane->release_keeping_table(sub));
        if (kept_.size() >= kKeptTables) kept_.erase(kept_.begin());
        kept_.push_back(Kept{it->job->shared_pieces(), it->job->op(), lane, std::move(table)});
      } else {
        for (auto& [lane, sub] : it->subs) lane->release(sub);
      }
      done.emplace_back(std::move(it->job), std::move(st));
      it = inflight_.erase(it);
    }
  }
  // The copies completed (event): the bytes are in the target's memory now.
  const auto send = [this](std::uint64_t req, std::string_view message) {
    ByteWriter w;
    w.u16(static_cast<std::uint16_t>(MessageType::kNotify));
    w.u64(req);
    w.str(message);
    return send_packet(sock_.get(), w.buffer(), deadline_after(cfg_.peer_timeout));
  };
  for (auto& [job, st] : done) {
    peer_session_.settle(job, peer_session_.confirm_alive(std::move(st)), send);
  }
}

Status CudaIpcSession::notify(std::string_view message) {
  KVF_RETURN_IF_ERROR(health());
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(MessageType::kNotify));
  w.u64(0);
  w.str(message);
  return send_packet(sock_.get(), w.buffer(), deadline_after(cfg_.peer_timeout));
}

void CudaIpcSession::on_readable() {
  std::vector<std::uint8_t> msg;
  Status st = recv_packet(sock_.get(), &msg, Clock::now());
  if (st.code() == StatusCode::kTimeout) return;
  if (!st.ok()) return fail(st);
  if (auto region = parse_host_revoke(msg, HostMessage::kRevoke)) return on_revoke(*region);
  ByteReader r(msg);
  const auto type = static_cast<MessageType>(r.u16());
  const std::uint64_t value = r.u64();
  if (!r.ok() || type != MessageType::kNotifyAck || r.remaining() > kMaxAckReason)
    return fail(Corrupt("unexpected or malformed message from the peer"));
  // An ack with text: the peer's inbox refused the notification, and says why.
  peer_session_.on_answer(value, r.str(r.remaining()));
}

void CudaIpcSession::on_revoke(std::uint64_t id) {
  std::vector<Submission> pending;
  const auto mark = [&](std::uint64_t region) {
    std::lock_guard lock(mu_);  // posts after this see the mark
    if (PeerRegion* r = regions_.find(region)) {
      r->value.revoked = true;
      r->value.mapped.clear();
    }
    kept_.clear();  // their tables may point into the revoked memory
    for (auto& f : inflight_)
      for (auto& [lane, sub] : f.subs) pending.push_back(sub);
  };
  const auto drain = [&](std::uint64_t region) {
    // Every copy posted before the mark ends before we confirm (an event reused
    // meanwhile only makes us wait for newer work).
    for (auto& sub : pending) cudaEventSynchronize(sub.event);
    std::lock_guard lock(mu_);
    if (PeerRegion* r = regions_.find(region)) close_handles(r->value.handle);
  };
  const auto confirm = [this](std::uint64_t region) {
    return send_packet(sock_.get(), host_revoke_message(HostMessage::kRevokeAck, region),
                       deadline_after(cfg_.peer_timeout));
  };
  if (Status s = answer_revoke(id, mark, drain, confirm); !s.ok()) fail(s);
}

void CudaIpcSession::close_handles(const std::string& handle) {
  for (const auto& [address, r] : regions_)
    if (r.value.handle == handle && !r.value.revoked) return;  // another live region shares the allocation
  for (auto it = opened_.begin(); it != opened_.end();) {
    if (it->first.first != handle) {
      ++it;
      continue;
    }
    DeviceScope scope(it->first.second);
    cudaIpcCloseMemHandle(it->second);
    it = opened_.erase(it);
  }
}

bool CudaIpcSession::copying() {
  std::lock_guard lock(mu_);
  return !inflight_.empty();
}

void CudaIpcSession::cancel(const std::shared_ptr<TransferJob>& job) {
  std::list<InFlight> mine;
  {
    std::lock_guard lock(mu_);
    for (auto it = inflight_.begin(); it != inflight_.end(); ++it) {
      if (it->job == job) {
        mine.splice(mine.begin(), inflight_, it);
        break;
      }
    }
  }
  peer_session_.forget(job);
  drain(mine);  // a GPU copy cannot be stopped: wait until it no longer touches our memory
  job->finish(Cancelled("transfer cancelled"));
}

}  // namespace kvferry::detail::cuda_ipc
