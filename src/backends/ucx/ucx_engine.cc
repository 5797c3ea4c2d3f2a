#include "backends/ucx/ucx_engine.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <future>

#include "core/byte_io.h"

namespace kvferry::detail::ucx {
namespace {

// How often stalls, notification deadlines and unanswered hellos are looked at: while
// something is in flight (also a progress for a transport that signals no event for what
// it completed), and when idle.
constexpr std::chrono::milliseconds kBusyTick{5};
constexpr std::chrono::milliseconds kIdleTick{100};
// How long the engine leaves UCX to complete, after a link closed under them, the
// operations it had in flight (UCX 1.13 does it within a progress call; a newer libucp
// was seen to leave a read pending after its peer was killed) before ending their jobs
// itself. Within the guarantees' bound: a request ends by peer_timeout + 1 s.
constexpr std::chrono::milliseconds kCutGrace{250};
// How long a shutting-down engine lets its endpoints' closes (flushes) finish.
constexpr std::chrono::milliseconds kCloseBound{1000};
// Empty progress calls a pump makes in the spin window before it yields the thread.
constexpr int kSparePolls = 16;

}  // namespace

// A message in flight: UCX reads the payload until the send completes.
struct OutMessage {
  std::vector<std::uint8_t> payload;
  std::function<void(ucs_status_t)> done;
};

UcxEngine::UcxEngine(std::unique_ptr<UcxContext> context, EngineConfig config)
    : cfg_(std::move(config)), context_(std::move(context)), revocation_("ucx", cfg_.peer_timeout) {}

Result<std::unique_ptr<UcxEngine>> UcxEngine::start(std::unique_ptr<UcxContext> context, EngineConfig config,
                                                   std::shared_ptr<Reactor> reactor) {
  std::unique_ptr<UcxEngine> e(new UcxEngine(std::move(context), std::move(config)));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the reactor thread calls UCP
  ucs_status_t st = ucp_worker_create(e->context_->get(), &wp, &e->worker_);
  if (st != UCS_OK) return Unavailable(std::string("ucx: ucp_worker_create: ") + ucs_status_string(st));
  ucp_address_t* address = nullptr;
  std::size_t length = 0;
  st = ucp_worker_get_address(e->worker_, &address, &length);
  if (st != UCS_OK) return Unavailable(std::string("ucx: ucp_worker_get_address: ") + ucs_status_string(st));
  const auto* a = reinterpret_cast<const std::uint8_t*>(address);
  e->address_.assign(a, a + length);
  ucp_worker_release_address(e->worker_, address);
  if (e->address_.size() > kMaxAddressBytes) return Unavailable("ucx: the worker address is larger than peers accept");
  st = ucp_worker_get_efd(e->worker_, &e->worker_fd_);
  if (st != UCS_OK) return Unavailable(std::string("ucx: ucp_worker_get_efd: ") + ucs_status_string(st));
  for (AmId id : {kHello, kHelloAck, kNotify, kRevoke, kRevokeAck, kBye, kPutData, kCommit, kCommitAck, kGetReq,
                  kGetData, kChallenge, kResponse, kRefuse, kNotifyAck}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                    UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = id;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = id == kPutData || id == kGetData ? &UcxEngine::on_data_am : &UcxEngine::on_am;
    hp.arg = new std::pair<UcxEngine*, AmId>(e.get(), id);
    e->am_args_.emplace_back(static_cast<std::pair<UcxEngine*, AmId>*>(hp.arg));
    st = ucp_worker_set_am_recv_handler(e->worker_, &hp);
    if (st != UCS_OK) return Unavailable(std::string("ucx: cannot set an active message handler: ") + ucs_status_string(st));
  }
  ConnectionInfo info;  // the same for the engine's lifetime
  info.flags = e->context_->has_rdma() ? kFlagRdma : 0;
  info.address = e->address_;
  e->info_ = encode_info(info);
  if (!reactor) {
    KVF_ASSIGN_OR_RETURN(reactor, Reactor::start("kvf-ucx"));
  }
  e->reactor_ = std::move(reactor);
  // From here on the reactor thread alone calls UCP (the destructor waits for it).
  UcxEngine* raw = e.get();
  KVF_ASSIGN_OR_RETURN(e->watch_, e->reactor_->watch(e->worker_fd_, EPOLLIN, [raw](std::uint32_t) { raw->pump(); }));
  e->submit([raw] { raw->schedule_tick(); });  // then the first pump arms the worker
  return e;
}

UcxEngine::~UcxEngine() {
  if (reactor_) {
    reactor_->cancel(watch_);
    // Posted tasks still queued find alive_ false after this; nothing of ours runs on the
    // reactor afterwards, so the rest below may call UCP from this thread.
    if (!reactor_->run_sync([this] { shut_down(); })) shut_down();  // a stopped reactor runs nothing more
  }
  if (worker_) {
    // Let closing endpoints finish (flushed ones send what was sent before the shutdown;
    // bounded), then release what is left.
    const auto until = Clock::now() + kCloseBound;
    while (!closing_.empty() && Clock::now() < until) {
      ucp_worker_progress(worker_);
      std::erase_if(closing_, [](Closing& c) {
        if (ucp_request_check_status(c.request) == UCS_INPROGRESS) return false;
        ucp_request_free(c.request);
        return true;
      });
      if (!closing_.empty()) ::usleep(50);
    }
    handle_deferred();  // completions that came with the closes (the reactor no longer serves us: we are alone)
    for (auto& [id, s] : sessions_) drop_rkeys(*s);
    for (auto& [address, s] : served_)
      if (s.value.memh) ucp_mem_unmap(context_->get(), s.value.memh);
    ucp_worker_destroy(worker_);
  }
}

void UcxEngine::shut_down() {
  if (!*alive_) return;
  reactor_->cancel(tick_);  // on the reactor thread: returns at once, and it does not run again
  handle_deferred();        // what UCX reported last: a link it found failed closes forced below
  shutting_down_ = true;
  for (auto& [id, s] : sessions_) {
    if (!s->closed) fail_session(*s, PeerLost("the agent is shutting down"));
  }
  std::vector<std::uint64_t> ids;
  for (auto& [id, t] : targets_) ids.push_back(id);
  for (auto id : ids) drop_target_session(id, "the agent is shutting down");
  pending_auth_.clear();
  close_all_links();
  handle_deferred();  // jobs failed above finish now
  *alive_ = false;
}

void UcxEngine::submit(std::function<void()> command) {
  reactor_->post([this, alive = alive_, command = std::move(command)] {
    if (!*alive) return;
    command();
    after_command();
  });
}

Status UcxEngine::call(std::function<Status()> command, std::chrono::milliseconds bound) {
  if (on_thread()) return command();
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  const bool posted = reactor_->post([this, alive = alive_, command = std::move(command), done] {
    if (!*alive) return done->set_value(Unavailable("ucx: the engine is shutting down"));
    done->set_value(command());
    after_command();
  });
  if (!posted) return Unavailable("ucx: the agent's event loop has stopped");
  if (result.wait_for(bound) != std::future_status::ready)
    return Timeout("ucx: the event loop did not answer within " + std::to_string(bound.count()) + " ms");
  return result.get();
}

void UcxEngine::after_command() {
  // A command starts work whose answer is on its way: it counts as activity (the spin
  // window), and it is progressed now unless a progress is queued already (a burst of
  // commands then shares it).
  last_active_ = Clock::now();
  if (!pump_posted_) pump();
}

void UcxEngine::schedule_tick() {
  bool busy = false;
  for (auto& [id, s] : sessions_)
    busy = busy || (!s->abandoned && (s->ops > 0 || s->tails > 0)) || s->peer_session->awaiting();
  tick_ = reactor_->after(busy ? kBusyTick : kIdleTick, [this] {
    check_timeouts();
    pump();
    schedule_tick();
  });
}

void UcxEngine::schedule_pump() {
  if (pump_posted_) return;
  pump_posted_ = true;
  reactor_->post([this, alive = alive_] {
    if (!*alive) return;
    pump_posted_ = false;
    pump();
  });
}

void UcxEngine::pump() {
  if (!*alive_) return;
  bool progressed = false;
  // Bounded: other backends share the thread; more work re-posts the pump below. In the
  // spin window a few empty polls more per turn (each a few microseconds) keep the
  // reactor's own turn (its lock, its epoll_wait) off the path of a reply on its way.
  int spare_polls = Clock::now() - last_active_ < std::chrono::microseconds(cfg_.spin_us) ? kSparePolls : 0;
  for (int i = 0; i < 64; ++i) {
    if (ucp_worker_progress(worker_) != 0) progressed = true;
    else if (spare_polls-- <= 0) break;
  }
  if (!dirty_.empty() || !reports_.empty()) progressed = true;
  handle_deferred();
  const auto now = Clock::now();
  if (progressed) last_active_ = now;
  // Shortly after activity an answer is likely on its way: poll again (after whatever
  // else the reactor has to do) rather than sleep in epoll.
  if (progressed || now - last_active_ < std::chrono::microseconds(cfg_.spin_us)) return schedule_pump();
  if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) schedule_pump();  // events arrived meanwhile
}

void UcxEngine::handle_deferred() {
  // Messages and endpoint failures in the order UCX reported them (struct Report), before
  // the jobs below: the completions of jobs a failure ended then carry its reason.
  while (!reports_.empty()) {
    auto batch = std::move(reports_);
    reports_.clear();
    for (Report& r : batch) {
      if (r.failed)
        fail_link(r.link, PeerLost(std::string("the link failed: ") + ucs_status_string(r.status)));
      else
        handle_am(r.message, r.payload);
    }
  }
  // advance() may issue more ops whose immediate completion adds to dirty_.
  while (!dirty_.empty()) {
    auto jobs = std::move(dirty_);
    dirty_.clear();
    for (auto& js : jobs) issue(*js->session);
    for (auto& js : jobs) advance(*js);
  }
}

void UcxEngine::check_timeouts() {
  std::vector<std::uint64_t> stalled;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = *it->second;
    if (s.peer_session->dead() && s.ops == 0) drop_rkeys(s);
    if (s.closed && s.ops == 0 && s.tails == 0 && s.active.empty()) {
      it = sessions_.erase(it);
      continue;
    }
    // A notification the peer did not answer in time: the session is lost (core/peer_session.h).
    s.peer_session->check_deadlines();
    if (s.peer_session->dead() && !s.torn_down) fail_session(s, s.peer_session->health());
    if (s.cut != Clock::time_point{} && !s.abandoned && Clock::now() - s.cut > kCutGrace) end_cut_jobs(s);
    if (s.abandoned) {  // nothing of it is watched any more: its link is gone
      ++it;
      continue;
    }
    // Also a failed session: what it still has in flight on a link that others keep open
    // must end within the bound too.
    if (s.peer_session->check_activity(s.ops > 0 || s.tails > 0) == PeerSession::Activity::kLost)
      stalled.push_back(s.link);
    ++it;
  }
  for (std::uint64_t link : stalled)  // a stalled peer stalls every session on the link
    fail_link(link, PeerLost("no progress for " + std::to_string(cfg_.peer_timeout.count()) + " ms"));
  expire_pending_auth();
  expire_spare_links();
  std::erase_if(closing_, [](Closing& c) {
    if (ucp_request_check_status(c.request) == UCS_INPROGRESS) return false;
    ucp_request_free(c.request);
    return true;
  });
}

Status UcxEngine::send_am(ucp_ep_h ep, AmId id, std::vector<std::uint8_t> payload,
                          std::function<void(ucs_status_t)> done) {
  auto* msg = new OutMessage{std::move(payload), std::move(done)};
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_EAGER;  // small control messages: never a rendezvous to receive
  p.user_data = msg;
  p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    auto* m = static_cast<OutMessage*>(user_data);
    if (m->done) m->done(status);
    delete m;
    ucp_request_free(request);
  };
  ucs_status_ptr_t r = ucp_am_send_nbx(ep, id, nullptr, 0, msg->payload.data(), msg->payload.size(), &p);
  if (UCS_PTR_IS_PTR(r)) return Status::Ok();
  const ucs_status_t st = UCS_PTR_STATUS(r);
  if (msg->done) msg->done(st);
  delete msg;
  if (st != UCS_OK) return PeerLost(std::string("ucx: sending a message failed: ") + ucs_status_string(st));
  return Status::Ok();
}

ucs_status_t UcxEngine::on_am(void* arg, const void*, std::size_t, void* data, std::size_t length,
                              const ucp_am_recv_param_t* param) {
  auto [engine, id] = *static_cast<std::pair<UcxEngine*, AmId>*>(arg);
  // Control messages are sent eagerly and are small; anything else is not ours.
  const std::size_t cap = id == kHelloAck ? kMaxHelloAckBytes : std::size_t{1} << 20;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length > cap) return UCS_OK;
  const auto* p = static_cast<const std::uint8_t*>(data);
  engine->reports_.push_back(Report{id, std::vector<std::uint8_t>(p, p + length)});
  return UCS_OK;
}

void UcxEngine::handle_am(AmId id, const std::vector<std::uint8_t>& payload) {
  switch (id) {
    case kHello: on_hello(payload); break;
    case kHelloAck: on_hello_ack(payload); break;
    case kNotify: on_notify(payload); break;
    case kRevoke: on_revoke(payload); break;
    case kRevokeAck: on_revoke_ack(payload); break;
    case kBye: on_bye(payload); break;
    case kCommit: on_commit(payload); break;
    case kCommitAck: on_commit_ack(payload); break;
    case kGetReq: on_get_req(payload); break;
    case kChallenge: on_challenge(payload); break;
    case kResponse: on_response(payload); break;
    case kRefuse: on_refuse(payload); break;
    case kNotifyAck: on_notify_ack(payload); break;
    default: break;
  }
}

void UcxEngine::on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* tag = static_cast<ErrTag*>(arg);
  tag->engine->reports_.push_back(Report{.failed = true, .link = tag->link, .status = status});
}

void UcxEngine::close_ep(ucp_ep_h ep, bool force, std::unique_ptr<ErrTag> tag) {
  if (!ep) return;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &p);
  if (UCS_PTR_IS_PTR(r)) closing_.push_back(Closing{r, std::move(tag)});
}

std::vector<std::uint8_t> UcxEngine::connection_info() const { return info_; }

}  // namespace kvferry::detail::ucx
