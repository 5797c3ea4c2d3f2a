#include "backends/tcp/tcp_engine.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "backends/tcp/tcp_batch_builder.h"
#include "backends/tcp/tcp_serving.h"
#include "backends/tcp/tcp_session.h"
#include "core/byte_io.h"

namespace kvferry::detail::tcp {

// TcpEngine: sessions, posting and cancelling jobs, regions, frames and timeouts. How the
// engine is served on the reactor (start, commands, watches, ticks, spin) is in
// tcp_engine_loop.cc.

Result<std::shared_ptr<PeerSession>> TcpEngine::add_session(std::uint64_t session_id, std::string peer,
                                                            std::vector<UniqueFd> fds) {
  auto shared_fds = std::make_shared<std::vector<UniqueFd>>(std::move(fds));
  std::shared_ptr<PeerSession> made;
  Status added = run_sync([this, session_id, peer = std::move(peer), shared_fds, &made]() mutable -> Status {
    auto ss = std::make_unique<Session>();
    ss->key = session_id;
    ss->initiator = true;
    made = ss->peer_session = new_peer_session(*ss, std::move(peer));
    for (auto& fd : *shared_fds) {
      auto st = std::make_unique<Stream>();
      st->fd = std::move(fd);
      st->session = ss.get();
      ss->streams.push_back(std::move(st));
      if (!watch_stream(*ss->streams.back())) {
        sessions_[session_id] = std::move(ss);
        fail_session(*sessions_[session_id], PeerLost("tcp: cannot watch a stream socket"));
        return Unavailable("tcp: the reactor cannot watch a stream socket");
      }
    }
    sessions_[session_id] = std::move(ss);
    return Status::Ok();
  });
  if (!added.ok()) return added;
  return made;
}

std::shared_ptr<PeerSession> TcpEngine::new_peer_session(Session& ss, std::string peer) {
  return std::make_shared<PeerSession>("tcp", std::move(peer), cfg_.peer_timeout,
                                       [this, s = &ss] { release_session(*s); });
}

void TcpEngine::close_session(std::uint64_t session_id, const Status& why) {
  run_sync([this, session_id, why] {
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) fail_session(*it->second, why);
    return Status::Ok();
  }).ok();
}

Status TcpEngine::post(std::uint64_t session_id, std::shared_ptr<TransferJob> job) {
  // Small jobs are latency-bound: start them on the caller's thread when the engine is
  // idle, saving a wake-up. Large ones go to the engine so that post() stays cheap (the
  // engine builds their frames and copies their bytes). The engine is often just
  // finishing the iteration that completed the caller's last request (that is what woke
  // the caller): worth a few microseconds of retrying.
  std::unique_lock engine(engine_mu_, std::defer_lock);
  if (job->total_bytes() <= kInlinePostBytes && t_serving != this) {
    const auto until = Clock::now() + std::chrono::microseconds(30);
    while (!engine.try_lock() && Clock::now() < until) {
    }
  }
  if (engine.owns_lock() && running_) {
    // The engine is idle: do its work here, after whatever was queued first.
    run_commands();
    auto it = sessions_.find(session_id);
    if (it == sessions_.end() || it->second->peer_session->dead())
      return PeerLost("connection to peer is closed");
    start_job(*it->second, std::move(job));
    // Closed streams and dead sessions are released on the reactor thread; the spin
    // window (spin_us) starts there too.
    // While the reactor spins already, it sees this job at its next turn.
    const bool start_spin = cfg_.spin_us > 0 && !spinning_.load(std::memory_order_relaxed);
    if (start_spin || !retired_.empty() || !dead_sessions_.empty()) request_settle();
    return Status::Ok();
  }
  if (engine.owns_lock()) engine.unlock();
  {
    std::lock_guard lock(cmd_mu_);
    if (stopping_) return Unavailable("tcp backend is shut down");
  }
  enqueue([this, session_id, job = std::move(job)]() mutable {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end() || it->second->peer_session->dead()) {
      job->finish(PeerLost("connection to peer is closed"));
      return;
    }
    start_job(*it->second, std::move(job));
  });
  return Status::Ok();
}

void TcpEngine::cancel(std::uint64_t session_id, const std::shared_ptr<TransferJob>& job) {
  run_sync([this, session_id, job] {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return Status::Ok();
    Session& ss = *it->second;
    if (auto r = ss.req_of_job.find(job.get()); r != ss.req_of_job.end()) {
      abort_request(ss, r->second, Cancelled("transfer cancelled"));
    } else if (std::uint64_t note = ss.peer_session->forget(job); note != 0) {
      // Its bytes are all in place; its notification is not sent yet or not answered.
      drop_unsent(ss, note);
      job->finish(Cancelled("transfer cancelled"));
    }
    return Status::Ok();
  }).ok();
}

Status TcpEngine::notify(std::uint64_t session_id, std::string message) {
  return run_sync([this, session_id, message = std::move(message)]() mutable -> Status {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end() || it->second->peer_session->dead())
      return PeerLost("connection to peer is closed");
    Stream& s = *it->second->streams.front();
    queue_frame(s, make_message_frame(FrameType::kNotify, 0, std::move(message)));
    return Status::Ok();
  });
}

Status TcpEngine::register_region(const RegionInfo& region) {
  return run_sync([this, region] {
    const bool added = regions_.find(region.id) == nullptr;
    regions_.add(region);
    if (added && region.kind == MemoryKind::kVram) vram_regions_++;
    return Status::Ok();
  });
}

Status TcpEngine::deregister_region(std::uint64_t id) {
  return run_sync([this, id] {
    deregister_on_thread(id);
    return Status::Ok();
  });
}

const RegionInfo* TcpEngine::find_region(std::uint64_t addr, std::uint64_t len) const {
  const auto* e = regions_.holding(addr, len);
  return e ? &e->info : nullptr;
}

void TcpEngine::deregister_on_thread(std::uint64_t id) {
  const auto* e = regions_.find(id);
  if (!e) return;
  const std::uint64_t lo = e->info.address, hi = lo + e->info.length;
  if (e->info.kind == MemoryKind::kVram) vram_regions_--;
  regions_.erase(id);
  auto inside = [&](const Segment& g) {
    auto p = reinterpret_cast<std::uint64_t>(g.ptr);
    return p < hi && p + g.extent() > lo;
  };
  // Nothing may touch the region after we return: receives into it go to the discard
  // sink, sends out of it send zeros, and the initiators are told.
  for (auto& [key, ss] : sessions_) {
    if (ss->initiator) continue;
    for (auto& st : ss->streams) {
      if (st->in_body && st->sink == Sink::kDest && std::any_of(st->segs.begin(), st->segs.end(), inside)) {
        st->sink = Sink::kDiscard;
        ss->write_errors[st->cur.req] = "peer deregistered the destination memory during the transfer";
      }
      std::vector<std::uint64_t> failed;
      auto cut_off = [&](OutFrame& f) {
        if (f.h.type != static_cast<std::uint8_t>(FrameType::kReadData)) return;
        if (!std::any_of(f.segments.begin(), f.segments.end(), inside)) return;
        zero_segments(f);
        failed.push_back(f.h.req);
      };
      for (auto& f : st->out) cut_off(f);
      for (auto& f : st->deferred_reads) cut_off(f);  // not staged yet: they still point at it
      for (std::uint64_t req : failed)
        queue_frame(*st, make_message_frame(FrameType::kReqError, req,
                                            "peer deregistered the source memory during the transfer"));
    }
  }
}

void TcpEngine::zero_segments(OutFrame& f) {
  // Zeros for any unit: a read-only anonymous mapping of the largest frame's data, whose
  // pages all map the kernel's one zero page (no memory is committed for it). Mapped once,
  // never moved: frames zeroed earlier keep pointing into it.
  if (!zeros_) {
    void* p = ::mmap(nullptr, kMaxChunkBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    zeros_ = p == MAP_FAILED ? nullptr : static_cast<std::uint8_t*>(p);
  }
  for (auto& g : f.segments) {  // every unit sends the same zeros
    g.ptr = zeros_;
    g.stride = 0;
  }
}

void TcpEngine::queue_frame(Stream& s, OutFrame f) {
  s.out.push_back(std::move(f));
  update_interest(s);
}

void TcpEngine::update_interest(Stream& s) {
  std::uint32_t want = EPOLLIN | (s.out.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT));
  if (want == s.events || !s.fd.valid() || s.watch == 0) return;
  s.events = want;
  reactor_->modify(s.watch, want).ok();  // fails only for a retired watch
}

void TcpEngine::start_job(Session& ss, std::shared_ptr<TransferJob> job) {
  const std::uint64_t req = ss.peer_session->new_request();
  InitiatorRequest& r = ss.requests[req];
  r.job = job;
  ss.req_of_job[job.get()] = req;
  const bool write = job->op() == TransferOp::kWrite;
  const bool notify = job->notification().has_value();
  const std::size_t nstreams = ss.streams.size();
  const std::size_t use = std::clamp<std::size_t>(job->total_bytes() / cfg_.min_stripe_bytes, 1, nstreams);
  const std::size_t first = ss.next_stream++ % nstreams;
  std::vector<bool> used(nstreams, false);
  std::size_t turn = 0;

  // Batch frames (tcp_batch_builder.h: runs of strided pieces are one entry each) go
  // round-robin over the streams this request uses.
  BatchBuilder frames(cfg_.chunk_bytes, cfg_.batch_bytes, [&](Batch&& b) {
    const std::size_t si = (first + turn++ % use) % nstreams;
    Stream& s = *ss.streams[si];
    used[si] = true;
    OutFrame f = make_frame(write ? FrameType::kWrite : FrameType::kReadReq, req, 0,
                            static_cast<std::uint32_t>(b.table.size() / kSegmentEntryBytes));
    f.prefix = std::move(b.table);
    if (write) {
      f.h.flags = notify ? kFlagNotify : 0;
      f.h.len = f.prefix.size() + b.bytes;
      f.segments = std::move(b.local);
    } else {
      f.h.len = f.prefix.size();
      s.reads.push_back(PendingRead{req, std::move(b.local), b.bytes});
      r.reads_pending++;
    }
    s.out.push_back(std::move(f));
  });
  for (const TransferPiece& p : job->pieces()) frames.add(p.local, p.remote, p.length);
  frames.finish();
  for (std::size_t si = 0; si < nstreams; ++si) {
    if (!used[si] || !write) continue;
    ss.streams[si]->out.back().h.flags |= kFlagLast;
    r.acks_pending++;
  }
  // A write's notification goes with its bytes: the target holds it until they all
  // landed (it counts them), saving the round trip of waiting for their acks first.
  if (write && notify && ss.peer_session->announce(job, req)) {
    OutFrame f = make_message_frame(FrameType::kNotify, req, *job->notification());
    f.h.addr = job->total_bytes();
    ss.streams[first]->out.push_back(std::move(f));
    used[first] = true;
  }
  // Start sending now, saving an epoll round trip; on_writable asks for EPOLLOUT only for
  // what the socket did not take (usually nothing: no change of the watch at all, which
  // also spares a caller's post() the reactor's lock).
  for (std::size_t si = 0; si < nstreams; ++si) {
    if (!used[si]) continue;
    on_writable(*ss.streams[si]);
    if (ss.peer_session->dead()) return;
  }
}

void TcpEngine::abort_request(Session& ss, std::uint64_t req, const Status& why) {
  auto it = ss.requests.find(req);
  if (it == ss.requests.end()) return;
  drop_unsent(ss, req);
  auto job = std::move(it->second.job);
  ss.peer_session->forget(job);  // an announced notification (dropped above if unsent)
  ss.req_of_job.erase(job.get());
  ss.requests.erase(it);
  job->finish(why);
}

void TcpEngine::drop_unsent(Session& ss, std::uint64_t req) {
  const auto kWriteType = static_cast<std::uint8_t>(FrameType::kWrite);
  const auto kNotifyType = static_cast<std::uint8_t>(FrameType::kNotify);
  for (auto& st : ss.streams) {
    // Unsent writes and notifications of this request are dropped; one half sent is
    // completed with zeros so the stream stays framed without reading user memory.
    // Read requests stay: their replies are received into the discard sink.
    std::deque<OutFrame> keep;
    for (auto& f : st->out) {
      const bool ours = f.h.req == req && (f.h.type == kWriteType || f.h.type == kNotifyType);
      if (ours && f.sent == 0) continue;
      if (ours) zero_segments(f);
      keep.push_back(std::move(f));
    }
    st->out.swap(keep);
    for (auto& pr : st->reads)
      if (pr.req == req) pr.discard = true;
    if (st->in_body && st->sink == Sink::kDest && st->cur.req == req &&
        st->cur.type == static_cast<std::uint8_t>(FrameType::kReadData))
      st->sink = Sink::kDiscard;
    update_interest(*st);
  }
}

void TcpEngine::maybe_finish(Session& ss, std::uint64_t req) {
  auto it = ss.requests.find(req);
  if (it == ss.requests.end()) return;
  InitiatorRequest& r = it->second;
  if (r.acks_pending > 0 || r.reads_pending > 0) return;
  auto job = std::move(r.job);
  Status result = std::move(r.error);
  ss.req_of_job.erase(job.get());
  ss.requests.erase(it);
  // Every byte is in place: a read's notification goes out now; an announced write's
  // waits for its answer, if that has not come yet.
  ss.peer_session->settle(job, std::move(result), [this, &ss](std::uint64_t note, std::string_view message) {
    queue_frame(*ss.streams.front(), make_message_frame(FrameType::kNotify, note, std::string(message)));
    return Status::Ok();
  });
}

void TcpEngine::fail_session(Session& ss, const Status& why) { ss.peer_session->fail(why); }

void TcpEngine::release_session(Session& ss) {
  const Status lost = ss.peer_session->health();
  // Sockets close first, so no byte lands in user memory once the jobs report failure
  // (PeerSession::fail runs this before it finishes the jobs awaiting answers).
  for (auto& st : ss.streams) close_stream(*st);
  for (auto& [req, r] : ss.requests) r.job->finish(lost);
  ss.requests.clear();
  ss.req_of_job.clear();
  if (!ss.initiator) accepted_by_remote_.erase(ss.remote_id);
  dead_sessions_.push_back(ss.key);
}

void TcpEngine::close_stream(Stream& s) {
  if (!s.fd.valid()) return;
  // The socket stays open until its watch is cancelled (settle, on the reactor thread): a
  // closed fd's number may be reused by a new watch meanwhile.
  retired_.emplace_back(s.watch, std::move(s.fd));
  s.watch = 0;
  s.out.clear();
}

void TcpEngine::check_timeouts() {
  const auto now = Clock::now();
  const auto timeout = cfg_.peer_timeout;
  for (auto& [key, ssp] : sessions_) {
    Session& ss = *ssp;
    PeerSession& peer = *ss.peer_session;
    if (peer.dead()) continue;
    bool busy = !ss.requests.empty() || peer.awaiting();
    for (auto& st : ss.streams) busy = busy || !st->out.empty();
    // Requests take as long as their bytes: timed by progress, with pings.
    const PeerSession::Activity activity = peer.check_activity(busy, now);
    if (activity == PeerSession::Activity::kLost) continue;
    peer.check_deadlines();  // an answer overdue once the bytes were all in place
    if (activity == PeerSession::Activity::kPingDue && ss.initiator && !peer.dead()) {
      Stream& s = *ss.streams.front();
      // A ping overtakes queued data (after a frame half sent) so the answer is prompt.
      auto pos = s.out.begin();
      if (pos != s.out.end() && pos->sent > 0) ++pos;
      s.out.insert(pos, make_frame(FrameType::kPing, 0));
      update_interest(s);
    }
  }
  std::erase_if(pending_, [&](const std::unique_ptr<Stream>& s) {
    if (!s->fd.valid()) return true;
    if (now - s->created <= timeout) return false;
    close_stream(*s);
    return true;
  });
  if (accept_paused_until_ != Clock::time_point{} && now >= accept_paused_until_) {
    accept_paused_until_ = {};
    reactor_->modify(listener_watch_, EPOLLIN).ok();
  }
}

}  // namespace kvferry::detail::tcp
