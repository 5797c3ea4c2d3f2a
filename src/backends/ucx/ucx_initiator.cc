// The initiator half of UcxEngine: sessions, puts/gets over the pieces of a job,
// flush-then-notify, failure and revocation. Engine thread only, except the public
// entry points, which hand commands to it.
#include <algorithm>
#include <random>
#include <utility>

#include "backends/ucx/ucx_engine.h"
#include "core/byte_io.h"
#include "core/revocation.h"

namespace kvferry::detail::ucx {
namespace {

std::uint64_t random_id() {
  std::random_device rd;
  return ((static_cast<std::uint64_t>(rd()) << 32) ^ rd()) | 1;
}

std::string hex(std::uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

Result<std::shared_ptr<Session>> UcxEngine::connect(const PeerEndpoint& peer, Deadline deadline) {
  auto info = decode_info(peer.connection_info);
  if (!info.ok()) return info.status().with_context("peer '" + peer.agent_name + "'");
  auto s = std::make_shared<Session>();
  s->engine = this;
  s->id = random_id();
  s->peer = peer.agent_name;
  s->peer_session = std::make_unique<PeerSession>("ucx", peer.agent_name, cfg_.peer_timeout);
  submit([this, s, address = std::move(info->address)] { open_session(s, address); });
  std::unique_lock lock(s->mu);
  if (!s->hello_cv.wait_until(lock, deadline, [&] { return s->hello_done; })) {
    lock.unlock();
    close(s, PeerLost("it did not answer the hello in time"));
    return Unavailable("ucx: peer '" + peer.agent_name + "' did not answer within the connect timeout");
  }
  if (!s->hello.ok()) {
    Status why = s->hello;
    lock.unlock();
    close(s, why);
    return why;
  }
  return s;
}

void UcxEngine::open_session(const std::shared_ptr<Session>& s, const std::vector<std::uint8_t>& address) {
  auto fail_hello = [&](Status why) {
    std::lock_guard lock(s->mu);
    s->hello_done = true;
    s->hello = std::move(why);
    s->hello_cv.notify_all();
  };
  auto link = open_link(address);
  if (!link.ok()) {
    return fail_hello(link.status().with_context("peer '" + s->peer + "'"));
  }
  (*link)->users++;
  (*link)->claimed = true;
  s->link = (*link)->id;
  s->ep = (*link)->ep;
  sessions_[s->id] = s;
  ByteWriter w;
  w.u32(kProtocolVersion);
  w.u64(s->id);
  w.u32((*link)->index);
  w.u16(static_cast<std::uint16_t>(std::min<std::size_t>(cfg_.agent_name.size(), kMaxNameBytes)));
  w.str(std::string_view(cfg_.agent_name).substr(0, kMaxNameBytes));
  w.u32(static_cast<std::uint32_t>(address_.size()));
  w.bytes(address_);
  if (cfg_.secret) {  // the target challenges instead of answering (ucx_auth.cc)
    s->auth = std::make_unique<InitiatorAuth>(cfg_.secret, "ucx");
    w.bytes(s->auth->offer());
    s->hello_bytes = w.buffer();
  }
  Status sent = send_am(s->ep, kHello, w.take(), nullptr);
  if (!sent.ok()) {
    fail_link(s->link, sent);  // fails the session (and its hello) with it
    fail_hello(sent);
  }
}

void UcxEngine::on_hello_ack(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  auto it = sessions_.find(id);
  if (!r.ok() || it == sessions_.end() || it->second->peer_session->dead() || it->second->hello_done) return;
  Session& s = *it->second;
  // What the peer serves now (memory it withdrew after publishing the metadata we hold
  // is not in it, and is refused here).
  auto keys = decode_region_keys(r);
  if (!keys.ok()) return fail_session(s, keys.status().with_context("peer '" + s.peer + "'"));
  for (const auto& k : *keys) {
    RegionInfo info;
    info.id = k.id;
    info.address = k.address;
    info.length = k.length;
    // fail_session destroys the keys unpacked so far.
    if (s.regions.find(k.id) || s.regions.holding(k.address, 1))
      return fail_session(s, Corrupt("ucx: peer '" + s.peer + "' announced a region twice or overlapping"));
    RemoteKey key;
    if (ucp_ep_rkey_unpack(s.ep, k.rkey.data(), &key.rkey) != UCS_OK)
      return fail_session(s, Corrupt("ucx: peer '" + s.peer + "' sent a remote key UCX cannot unpack"));
    s.regions.add(info, key);
  }
  ucp_ep_evaluate_perf_param_t pp{};
  pp.field_mask = UCP_EP_PERF_PARAM_FIELD_MESSAGE_SIZE;
  pp.message_size = 16u << 20;
  ucp_ep_evaluate_perf_attr_t pa{};
  pa.field_mask = UCP_EP_PERF_ATTR_FIELD_ESTIMATED_TIME;
  if (ucp_ep_evaluate_perf(s.ep, &pp, &pa) == UCS_OK && pa.estimated_time > 0)
    reported_gbps_.store(static_cast<double>(pp.message_size) / pa.estimated_time / 1e9, std::memory_order_relaxed);
  std::lock_guard lock(s.mu);
  s.hello_done = true;
  s.hello_cv.notify_all();
}

Status UcxEngine::post(const std::shared_ptr<Session>& s, const std::shared_ptr<TransferJob>& job) {
  KVF_RETURN_IF_ERROR(health(*s));
  auto js = std::make_shared<JobState>();
  js->job = job;
  js->session = s.get();
  submit([this, s, js] {
    if (s->peer_session->dead() || s->closed) {
      js->job->finish(closed_status(*s));
      return;
    }
    s->active[js->job.get()] = js;
    s->waiting.push_back(js);
    issue(*s);
    advance(*js);
  });
  return Status::Ok();
}

void UcxEngine::issue(Session& s) {
  while (!s.waiting.empty() && s.ops < cfg_.max_ops && !s.peer_session->dead()) {
    JobState& js = *s.waiting.front();
    const auto& pieces = js.job->pieces();
    if (js.cancelled || !js.error.ok() || js.piece >= pieces.size()) {
      js.issued_all = true;
      mark_dirty(js);
      s.waiting.pop_front();
      continue;
    }
    const TransferPiece& p = pieces[js.piece];
    const std::uint64_t remote = p.remote + js.offset;
    const std::uint64_t len = std::min<std::uint64_t>(cfg_.chunk_bytes, p.length - js.offset);
    const auto* region = s.regions.holding(remote, len);
    if (!region || region->value.revoked) {
      js.error = RemoteError("ucx: peer '" + s.peer + "' refused [" + hex(remote) + ", +" + std::to_string(len) +
                             "): not inside memory it serves (withdrawn or never announced)");
      continue;
    }
    void* local = reinterpret_cast<void*>(p.local + js.offset);
    if (cfg_.active_messages) {
      if (!issue_am(s, js, local, remote, len) && js.error.ok())
        js.error = PeerLost("ucx: sending to '" + s.peer + "' failed");
      js.offset += len;
      if (js.offset == p.length) ++js.piece, js.offset = 0;
      continue;
    }
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = &UcxEngine::on_op_done;
    prm.user_data = &js;
    ucp_rkey_h rkey = region->value.rkey;
    ucs_status_ptr_t r = js.job->op() == TransferOp::kWrite ? ucp_put_nbx(s.ep, local, len, remote, rkey, &prm)
                                                            : ucp_get_nbx(s.ep, local, len, remote, rkey, &prm);
    if (UCS_PTR_IS_ERR(r)) {
      js.error = PeerLost("ucx: " + std::string(js.job->op() == TransferOp::kWrite ? "put" : "get") + " to '" +
                          s.peer + "' failed: " + ucs_status_string(UCS_PTR_STATUS(r)));
      continue;
    }
    if (r != nullptr) {
      ++js.ops;
      ++s.ops;
    }
    js.offset += len;
    if (js.offset == p.length) {
      ++js.piece;
      js.offset = 0;
    }
  }
}

void UcxEngine::on_op_done(void* request, ucs_status_t status, void* user_data) {
  auto& js = *static_cast<JobState*>(user_data);
  Session& s = *js.session;
  --js.ops;
  --s.ops;
  s.peer_session->note_progress();
  if (status != UCS_OK && js.error.ok())
    js.error = PeerLost("ucx: transfer with '" + s.peer + "' failed: " + ucs_status_string(status));
  s.engine->mark_dirty(js);
  if (request) ucp_request_free(request);
}

void UcxEngine::on_flush_done(void* request, ucs_status_t status, void* user_data) {
  auto& js = *static_cast<JobState*>(user_data);
  Session& s = *js.session;
  --s.tails;
  --js.pending;
  s.peer_session->note_progress();
  UcxEngine& e = *s.engine;
  if (request) ucp_request_free(request);
  if (js.job->finished()) return e.release(js);  // cancelled meanwhile
  if (s.peer_session->dead())  // its link stayed open for others: the flush completed, the session did not
    return e.finish(js, s.peer_session->health());
  if (status != UCS_OK) return e.finish(js, PeerLost("ucx: flushing to '" + s.peer + "' failed: " + ucs_status_string(status)));
  if (js.cancelled) return e.finish(js, Cancelled("transfer cancelled"));
  if (!js.job->notification()) return e.finish(js, Status::Ok());
  // The data is remotely complete: now the notification may go. The job finishes on the
  // peer's answer (kept or refused), with the loss, or at the answer's deadline.
  std::shared_ptr<TransferJob> job = js.job;
  Session* session = &s;
  session->active.erase(job.get());  // frees js: no callback of ours refers to it any more
  session->peer_session->settle(job, Status::Ok(), [&e, session](std::uint64_t req, std::string_view message) {
    return e.send_notification(*session, req, message);
  });
}

Status UcxEngine::send_notification(Session& s, std::uint64_t req, std::string_view message) {
  if (!s.ep) return closed_status(s);
  ByteWriter w;
  w.u64(s.id);
  w.u64(req);
  w.str(message);
  ++s.tails;
  std::weak_ptr<Session> weak = sessions_.count(s.id) ? sessions_.at(s.id) : nullptr;
  return send_am(s.ep, kNotify, w.take(), [weak](ucs_status_t) {
    if (auto held = weak.lock()) {
      --held->tails;
      held->peer_session->note_progress();
    }
  });
}

void UcxEngine::on_notify_ack(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), req = r.u64();
  std::string why = r.str(std::min<std::size_t>(r.remaining(), 4096));
  if (!r.ok() || r.remaining() != 0) return;
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  it->second->peer_session->note_progress();
  it->second->peer_session->on_answer(req, why);
}

void UcxEngine::advance(JobState& js) {
  if (js.job->finished()) return release(js);
  if (js.ops > 0 || !js.issued_all || js.tail) return;
  Session& s = *js.session;
  if (js.cancelled) return finish(js, Cancelled("transfer cancelled"));
  if (!js.error.ok()) return finish(js, js.error);
  js.tail = true;
  if (js.job->op() == TransferOp::kWrite && cfg_.active_messages) return commit_am(s, js);
  if (js.job->op() == TransferOp::kWrite) {
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = &UcxEngine::on_flush_done;
    prm.user_data = &js;
    ++s.tails;
    ++js.pending;
    ucs_status_ptr_t r = ucp_ep_flush_nbx(s.ep, &prm);
    if (!UCS_PTR_IS_PTR(r)) on_flush_done(nullptr, UCS_PTR_STATUS(r), &js);
    return;
  }
  // A read's data is here once its gets completed.
  ++s.tails;
  ++js.pending;
  on_flush_done(nullptr, UCS_OK, &js);
}

void UcxEngine::finish(JobState& js, Status status) {
  js.job->finish(std::move(status));
  release(js);
}

void UcxEngine::release(JobState& js) {
  if (js.ops == 0 && js.pending == 0 && js.job->finished()) js.session->active.erase(js.job.get());  // frees js
}

void UcxEngine::mark_dirty(JobState& js) {
  auto it = js.session->active.find(js.job.get());
  if (it != js.session->active.end()) dirty_.push_back(it->second);
}

void UcxEngine::cancel(const std::shared_ptr<Session>& s, const std::shared_ptr<TransferJob>& job) {
  if (job->finished()) return;
  submit([this, s, job] {
    auto it = s->active.find(job.get());
    if (it == s->active.end()) {  // its bytes are in place; it may await the peer's answer
      if (s->peer_session->forget(job) != 0) job->finish(Cancelled("transfer cancelled"));
      return;
    }
    JobState& js = *it->second;
    js.cancelled = true;
    auto w = std::find(s->waiting.begin(), s->waiting.end(), it->second);
    if (w != s->waiting.end()) s->waiting.erase(w);
    js.issued_all = true;
    // Data ops in flight must complete before the job does (they touch our memory); a
    // flush or notification in flight touches none of it.
    if (js.tail || js.ops == 0) return finish(js, Cancelled("transfer cancelled"));
  });
  if (on_thread()) return;
  const auto bound = cfg_.peer_timeout + std::chrono::milliseconds(500);
  if (job->wait_until(Clock::now() + bound)) return;
  // The peer stopped completing our operations: closing the endpoint ends them.
  submit([this, s] { fail_link(s->link, PeerLost("it stalled a cancelled transfer")); });
  job->wait_until(Clock::now() + std::chrono::seconds(5));
}

Status UcxEngine::notify(const std::shared_ptr<Session>& s, std::string_view message) {
  KVF_RETURN_IF_ERROR(health(*s));
  submit([this, s, message = std::string(message)] {
    // Sent unless the engine has ended the session: a close of the connection marks it
    // lost at once (UcxLink::fail) but reaches the reactor after the notifications posted
    // before it, which still go (the link is flushed when it closes).
    if (s->torn_down || s->closed) return;
    (void)send_notification(*s, 0, message);  // fire and forget, as before: UCX reports a broken link
  });
  return Status::Ok();
}

Status UcxEngine::health(const Session& s) const { return s.peer_session->health(); }

Status UcxEngine::closed_status(const Session& s) const {
  return s.peer_session->dead() ? s.peer_session->health()
                                : PeerLost("ucx: link to '" + s.peer + "' is closed");
}

void UcxEngine::fail_session(Session& s, const Status& why) {
  s.peer_session->fail(why);  // the first cause wins (it may have failed on another thread)
  if (std::exchange(s.torn_down, true)) return;
  const Status lost = s.peer_session->health();  // "ucx peer '<name>': <why>"
  {
    std::lock_guard lock(s.mu);
    if (!s.hello_done) {  // a refusal keeps its own code and text; a loss reads as one
      s.hello_done = true;
      s.hello = why.code() == StatusCode::kPeerLost ? lost : why;
      s.hello_cv.notify_all();
    }
  }
  for (auto& [job, js] : s.active) {
    if (js->error.ok()) js->error = lost;
    js->issued_all = true;
    dirty_.push_back(js);
  }
  s.waiting.clear();
  fail_am(s, why);
  if (s.ops == 0) drop_rkeys(s);  // else once its puts/gets ended (check_timeouts): they use them
  // The link may carry other sessions (struct Link): it closes, completing what is still
  // in flight with an error, once none is left; what this session has in flight on a link
  // that stays open completes normally, and its jobs finish then.
  // (A link that stays open is still watched for this session's stall: check_timeouts.)
  s.ep = nullptr;
  if (!std::exchange(s.released, true)) release_link(s.link);
}

// The link closed under what `s` had in flight and UCX has not completed all of it within
// kCutGrace: the peer can no longer touch our memory through that link, so the jobs end
// now, with the session's loss. Their state stays in `active` (UCX's requests still point
// at it) until UCX completes the requests, if it ever does; the session is kept as long.
void UcxEngine::end_cut_jobs(Session& s) {
  s.abandoned = true;
  const Status lost = s.peer_session->health().ok() ? PeerLost("ucx: link to '" + s.peer + "' is closed")
                                                    : s.peer_session->health();
  for (auto& [job, js] : s.active) {
    if (js->job->finished()) continue;
    const Status& why = js->error.ok() ? lost : js->error;
    js->job->finish(
        Status(why.code(), why.message() + " (ended by the link's close; UCX had not completed it)"));
  }
}

void UcxEngine::drop_rkeys(Session& s) {
  for (auto& [address, r] : s.regions)
    if (r.value.rkey) ucp_rkey_destroy(r.value.rkey), r.value.rkey = nullptr;
}

void UcxEngine::close(const std::shared_ptr<Session>& s, const Status& why) {
  submit([this, s, why] { close_session(*s, why); });
}

void UcxEngine::close_session(Session& s, const Status& why) {
  if (s.closed) return;
  s.closed = true;
  if (!s.torn_down && s.ep) {
    ByteWriter w;
    w.u64(s.id);
    (void)send_am(s.ep, kBye, w.take(), nullptr);
  }
  fail_session(s, why);
}

// The target withdraws a region (core/revocation.h): refuse it from now on, and confirm
// once everything issued so far is remotely complete (a flush: the reactor never waits).
void UcxEngine::on_revoke(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), region = r.u64();
  if (!r.ok() || r.remaining() != 0) return;
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->peer_session->dead()) return;
  std::shared_ptr<Session> s = it->second;
  answer_revoke_later(
      region,
      [&s](std::uint64_t revoked) {
        if (auto* key = s->regions.find(revoked)) key->value.revoked = true;
      },
      [&s](std::uint64_t, Drained drained) { flush(s->ep, std::move(drained)); },
      [this, s](std::uint64_t revoked) -> Status {
        if (s->peer_session->dead()) return s->peer_session->health();
        ByteWriter w;
        w.u64(s->id);
        w.u64(revoked);
        return send_am(s->ep, kRevokeAck, w.take(), nullptr);
      });
}

void UcxEngine::flush(ucp_ep_h ep, std::function<void()> done) {
  auto* held = new std::function<void()>(std::move(done));
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.user_data = held;
  prm.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    std::unique_ptr<std::function<void()>> then(static_cast<std::function<void()>*>(user_data));
    if (request) ucp_request_free(request);
    if (status == UCS_OK) (*then)();  // else the link failed: its sessions fail with it
  };
  ucs_status_ptr_t fr = ucp_ep_flush_nbx(ep, &prm);
  if (!UCS_PTR_IS_PTR(fr)) prm.cb.send(nullptr, UCS_PTR_STATUS(fr), held);
}

}  // namespace kvferry::detail::ucx
