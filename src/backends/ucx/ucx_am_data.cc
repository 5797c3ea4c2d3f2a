// The active-message data path of UcxEngine, for host memory where UCX has no RDMA
// transport: its put and get over TCP are software emulations (0.16 GB/s measured),
// while its rendezvous protocol moves large messages at socket speed. Writes send each
// chunk as an active message that the target receives straight into the destination
// after checking it lies in memory it serves; a commit then asks the target to confirm
// every chunk landed (and to deliver the notification first). Reads ask the target to
// send chunks back, received straight into the local destination. Engine thread only.
#include <algorithm>
#include <cstring>

#include "backends/ucx/ucx_engine.h"
#include "core/byte_io.h"

namespace kvferry::detail::ucx {
namespace {

// Largest chunk a target accepts (a bigger one is a misbehaving peer); refused chunks are
// received into scratch memory of this bound so that the rendezvous completes.
constexpr std::uint64_t kMaxChunkBytes = 64u << 20;

struct DataSend {
  std::uint64_t header[3];
  std::function<void(ucs_status_t)> done;
};

struct RecvCtx {
  std::function<void(ucs_status_t)> done;
  std::unique_ptr<std::uint8_t[]> scratch;
};

}  // namespace

Status UcxEngine::send_data(ucp_ep_h ep, AmId id, const std::uint64_t (&header)[3], const void* data,
                            std::size_t length, std::function<void(ucs_status_t)> done) {
  auto* m = new DataSend{{header[0], header[1], header[2]}, std::move(done)};
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.user_data = m;
  p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    std::unique_ptr<DataSend> d(static_cast<DataSend*>(user_data));
    if (d->done) d->done(status);
    ucp_request_free(request);
  };
  ucs_status_ptr_t r = ucp_am_send_nbx(ep, id, m->header, sizeof m->header, data, length, &p);
  if (UCS_PTR_IS_PTR(r)) return Status::Ok();
  std::unique_ptr<DataSend> d(m);
  const ucs_status_t st = UCS_PTR_STATUS(r);
  if (d->done) d->done(st);
  return st == UCS_OK ? Status::Ok() : PeerLost(std::string("ucx: sending data failed: ") + ucs_status_string(st));
}

void UcxEngine::receive_into(void* desc, void* dest, std::size_t length, std::function<void(ucs_status_t)> done) {
  auto* ctx = new RecvCtx{std::move(done), nullptr};
  if (!dest) {
    ctx->scratch.reset(new std::uint8_t[length]);
    dest = ctx->scratch.get();
  }
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.user_data = ctx;
  p.cb.recv_am = [](void* request, ucs_status_t status, std::size_t, void* user_data) {
    std::unique_ptr<RecvCtx> c(static_cast<RecvCtx*>(user_data));
    if (c->done) c->done(status);
    ucp_request_free(request);
  };
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker_, desc, dest, length, &p);
  if (UCS_PTR_IS_PTR(r)) return;
  std::unique_ptr<RecvCtx> c(ctx);
  if (c->done) c->done(UCS_PTR_STATUS(r));
}

// ---- initiator -------------------------------------------------------------------------

bool UcxEngine::issue_am(Session& s, JobState& js, void* local, std::uint64_t remote, std::uint64_t len) {
  if (js.token == 0) js.token = next_token_++;
  auto track = [&] {
    ++js.ops;
    ++s.ops;
  };
  JobState* jp = &js;
  if (js.job->op() == TransferOp::kWrite) {
    const std::uint64_t header[3] = {s.id, js.token, remote};
    track();
    Status sent = send_data(s.ep, kPutData, header, local, len, [this, jp](ucs_status_t st) {
      on_op_done(nullptr, st, jp);
    });
    return sent.ok();
  }
  auto it = s.active.find(js.job.get());
  if (it == s.active.end()) return false;
  const std::uint64_t chunk = next_token_++;
  s.reads[chunk] = ReadChunk{it->second, local, len, false};
  track();
  ByteWriter w;
  w.u64(s.id);
  w.u64(chunk);
  w.u64(remote);
  w.u64(len);
  Status sent = send_am(s.ep, kGetReq, w.take(), nullptr);
  if (!sent.ok()) {
    s.reads.erase(chunk);
    --js.ops;
    --s.ops;
  }
  return sent.ok();
}

void UcxEngine::commit_am(Session& s, JobState& js) {
  auto it = s.active.find(js.job.get());
  if (it == s.active.end()) return;
  ByteWriter w;
  w.u64(s.id);
  w.u64(js.token);
  w.u8(js.job->notification() ? 1 : 0);
  if (js.job->notification()) w.str(*js.job->notification());
  s.commits[js.token] = it->second;
  ++s.tails;
  ++js.pending;
  if (!send_am(s.ep, kCommit, w.take(), nullptr).ok())
    fail_link(s.link, PeerLost("committing a write failed"));
}

void UcxEngine::on_commit_ack(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), token = r.u64();
  const bool ok = r.u8() != 0;
  std::string why = r.str(std::min<std::size_t>(r.remaining(), 4096));
  if (!r.ok()) return;
  auto sit = sessions_.find(id);
  if (sit == sessions_.end()) return;
  Session& s = *sit->second;
  auto c = s.commits.find(token);
  if (c == s.commits.end()) return;
  auto js = c->second;
  s.commits.erase(c);
  --s.tails;
  --js->pending;
  s.peer_session->note_progress();
  if (js->cancelled) return finish(*js, Cancelled("transfer cancelled"));
  finish(*js, ok ? Status::Ok() : RemoteError("ucx: peer '" + s.peer + "' " + why));
}

ucs_status_t UcxEngine::on_data_am(void* arg, const void* header, std::size_t header_length, void* data,
                                   std::size_t length, const ucp_am_recv_param_t* param) {
  auto [engine, id] = *static_cast<std::pair<UcxEngine*, AmId>*>(arg);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  std::uint64_t h[3] = {0, 0, 0};
  if (header_length == kDataHeaderBytes) std::memcpy(h, header, sizeof h);
  else h[0] = 0;  // no session has id 0: the data is dropped (and drained if rendezvous)
  if (id == kPutData) engine->on_put_data(h, data, length, rndv);
  else engine->on_get_data(h, data, length, rndv);
  return UCS_OK;
}

void UcxEngine::on_get_data(const std::uint64_t* h, void* data, std::size_t length, bool rndv) {
  auto sit = sessions_.find(h[0]);
  Session* s = sit == sessions_.end() ? nullptr : sit->second.get();
  auto c = s ? s->reads.find(h[1]) : decltype(s->reads.end()){};
  const bool known = s && c != s->reads.end() && !c->second.receiving;
  if (!known || h[2] != 1 || length != c->second.length) {
    if (rndv && length <= kMaxChunkBytes) receive_into(data, nullptr, length, nullptr);  // drain
    if (!known) return;
    auto js = c->second.js;
    s->reads.erase(c);
    if (js->error.ok())
      js->error = h[2] != 1 ? RemoteError("ucx: peer '" + s->peer + "' refused a read: not inside memory it serves")
                            : Corrupt("ucx: peer '" + s->peer + "' answered a read with the wrong length");
    on_op_done(nullptr, UCS_OK, js.get());
    return;
  }
  if (!rndv) {
    std::memcpy(c->second.local, data, length);
    auto js = c->second.js;
    s->reads.erase(c);
    on_op_done(nullptr, UCS_OK, js.get());
    return;
  }
  c->second.receiving = true;
  const std::uint64_t session = h[0], chunk = h[1];
  receive_into(data, c->second.local, length, [this, session, chunk](ucs_status_t st) {
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    auto rc = it->second->reads.find(chunk);
    if (rc == it->second->reads.end()) return;
    auto js = rc->second.js;
    it->second->reads.erase(rc);
    on_op_done(nullptr, st, js.get());
  });
}

// Reads whose data never came: their ops end with the session (receives in flight end
// when UCX fails them).
void UcxEngine::fail_am(Session& s, const Status& why) {
  for (auto it = s.reads.begin(); it != s.reads.end();) {
    if (it->second.receiving) {
      ++it;
      continue;
    }
    auto js = it->second.js;
    it = s.reads.erase(it);
    if (js->error.ok()) js->error = why;
    on_op_done(nullptr, UCS_ERR_CANCELED, js.get());
  }
  auto commits = std::move(s.commits);
  s.commits.clear();
  for (auto& [token, js] : commits) {
    --s.tails;
    --js->pending;
    finish(*js, why);
  }
}

// ---- target ----------------------------------------------------------------------------

UcxEngine::ServedRegion* UcxEngine::serving(std::uint64_t address, std::uint64_t length) {
  ServedRegion* r = served_.holding(address, length);
  return r && !r->value.revoking ? r : nullptr;
}

void UcxEngine::on_put_data(const std::uint64_t* h, void* data, std::size_t length, bool rndv) {
  auto t = targets_.find(h[0]);
  if (t == targets_.end() || length > kMaxChunkBytes) {
    if (rndv && length <= kMaxChunkBytes) receive_into(data, nullptr, length, nullptr);  // drain
    return;
  }
  PostState& post = t->second->posts[h[1]];
  ServedRegion* region = serving(h[2], length);
  if (!region) {
    if (post.refused.empty())
      post.refused = "refused a write to [" + std::to_string(h[2]) + ", +" + std::to_string(length) +
                     "): not inside memory it serves";
    if (rndv) receive_into(data, nullptr, length, nullptr);
    return;
  }
  if (!rndv) {
    std::memcpy(reinterpret_cast<void*>(h[2]), data, length);
    return;
  }
  ++post.receiving;
  ++region->value.inflight;
  const std::uint64_t session = h[0], token = h[1], region_id = region->info.id;
  receive_into(data, reinterpret_cast<void*>(h[2]), length, [this, session, token, region_id](ucs_status_t st) {
    if (auto* r = served_.find(region_id)) --r->value.inflight;
    auto ts = targets_.find(session);
    if (ts == targets_.end()) return;
    auto p = ts->second->posts.find(token);
    if (p == ts->second->posts.end()) return;
    --p->second.receiving;
    if (st != UCS_OK && p->second.refused.empty()) p->second.refused = std::string("lost a chunk: ") + ucs_status_string(st);
    if (p->second.committed && p->second.receiving == 0) answer_commit(*ts->second, token);
  });
}

void UcxEngine::on_commit(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), token = r.u64();
  const bool has_note = r.u8() != 0;
  auto t = targets_.find(id);
  if (!r.ok() || t == targets_.end() || r.remaining() > cfg_.max_notification_bytes) return;
  PostState& post = t->second->posts[token];
  post.committed = true;
  if (has_note) post.note = r.str(r.remaining());
  if (post.receiving == 0) answer_commit(*t->second, token);
}

// Every chunk of the post landed (or was refused): deliver its notification, then ack.
void UcxEngine::answer_commit(TargetSession& t, std::uint64_t token) {
  auto p = t.posts.find(token);
  if (p == t.posts.end()) return;
  PostState post = std::move(p->second);
  t.posts.erase(p);
  if (post.refused.empty() && post.note && cfg_.deliver) {
    // The agent may refuse it (inbox full, too large): the write then fails, never
    // reported done with its notification dropped.
    if (Status kept = cfg_.deliver(t.name, std::move(*post.note)); !kept.ok())
      post.refused = "did not keep the notification: " + kept.message();
  }
  ByteWriter w;
  w.u64(t.id);
  w.u64(token);
  w.u8(post.refused.empty() ? 1 : 0);
  w.str(post.refused);
  (void)send_am(t.ep, kCommitAck, w.take(), nullptr);
}

void UcxEngine::on_get_req(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), chunk = r.u64(), address = r.u64(), length = r.u64();
  auto t = targets_.find(id);
  if (!r.ok() || r.remaining() != 0 || t == targets_.end()) return;
  ServedRegion* region = length <= kMaxChunkBytes ? serving(address, length) : nullptr;
  const std::uint64_t refused[3] = {id, chunk, 0};
  if (!region) {
    (void)send_data(t->second->ep, kGetData, refused, nullptr, 0, nullptr);
    return;
  }
  ++region->value.inflight;
  const std::uint64_t ok[3] = {id, chunk, 1};
  const std::uint64_t region_id = region->info.id;
  (void)send_data(t->second->ep, kGetData, ok, reinterpret_cast<const void*>(address), length,
                  [this, region_id](ucs_status_t) {
                    if (auto* served = served_.find(region_id)) --served->value.inflight;
                  });
}

}  // namespace kvferry::detail::ucx
