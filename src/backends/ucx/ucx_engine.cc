#include "backends/ucx/ucx_engine.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <future>

#include "core/byte_io.h"

namespace kvferry::detail::ucx {

// A message in flight: UCX reads the payload until the send completes.
struct OutMessage {
  std::vector<std::uint8_t> payload;
  std::function<void(ucs_status_t)> done;
};

UcxEngine::UcxEngine(std::unique_ptr<UcxContext> context, EngineConfig config)
    : cfg_(std::move(config)), context_(std::move(context)) {}

Result<std::unique_ptr<UcxEngine>> UcxEngine::start(std::unique_ptr<UcxContext> context, EngineConfig config) {
  std::unique_ptr<UcxEngine> e(new UcxEngine(std::move(context), std::move(config)));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the engine thread calls UCP
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
                  kGetData, kChallenge, kResponse, kRefuse}) {
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
  e->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!e->epoll_.valid()) return IoErrorFromErrno("ucx: epoll_create1", errno);
  KVF_ASSIGN_OR_RETURN(e->bell_, make_eventfd("ucx engine"));
  for (int fd : {e->worker_fd_, e->bell_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(e->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return IoErrorFromErrno("ucx: epoll_ctl", errno);
  }
  ConnectionInfo info;  // the same for the engine's lifetime
  info.flags = e->context_->has_rdma() ? kFlagRdma : 0;
  info.address = e->address_;
  e->info_ = encode_info(info);
  e->thread_ = std::thread([raw = e.get()] { raw->run(); });
  e->thread_id_ = e->thread_.get_id();
  return e;
}

UcxEngine::~UcxEngine() {
  if (thread_.joinable()) {
    submit([this] {
      for (auto& [id, s] : sessions_) {
        if (!s->closed) fail_session(*s, PeerLost("the agent is shutting down"));
      }
      std::vector<std::uint64_t> ids;
      for (auto& [id, t] : targets_) ids.push_back(id);
      for (auto id : ids) drop_target_session(id, "the agent is shutting down");
      pending_auth_.clear();
      close_all_links();
      settle_revocations(true);
      handle_deferred();  // jobs failed above finish now
      running_ = false;
    });
    thread_.join();
  }
  if (worker_) {
    // Let closing endpoints finish (bounded), then release what is left.
    for (int i = 0; i < 20000 && !closing_.empty(); ++i) {
      ucp_worker_progress(worker_);
      std::erase_if(closing_, [](Closing& c) {
        if (ucp_request_check_status(c.request) == UCS_INPROGRESS) return false;
        ucp_request_free(c.request);
        return true;
      });
      if (!closing_.empty()) ::usleep(50);
    }
    handle_deferred();  // completions that came with the closes (the thread is gone: we are alone)
    for (auto& [id, s] : sessions_) drop_rkeys(*s);
    for (auto& [address, s] : served_)
      if (s.value.memh) ucp_mem_unmap(context_->get(), s.value.memh);
    ucp_worker_destroy(worker_);
  }
}

void UcxEngine::submit(std::function<void()> command) {
  {
    std::lock_guard lock(commands_mu_);
    commands_.push_back(std::move(command));
  }
  ring_eventfd(bell_.get());
}

Status UcxEngine::call(std::function<Status()> command, std::chrono::milliseconds bound) {
  if (on_thread()) return command();
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  submit([command = std::move(command), done] { done->set_value(command()); });
  if (result.wait_for(bound) != std::future_status::ready)
    return Timeout("ucx: the engine thread did not answer within " + std::to_string(bound.count()) + " ms");
  return result.get();
}

bool UcxEngine::run_commands() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(commands_mu_);
    batch.swap(commands_);
  }
  for (auto& c : batch) c();
  return !batch.empty();
}

void UcxEngine::run() {
  auto last_active = Clock::now();
  auto last_check = last_active;
  while (running_.load(std::memory_order_relaxed)) {
    bool active = run_commands();
    for (int i = 0; i < 64 && ucp_worker_progress(worker_) != 0; ++i) active = true;
    if (!dirty_.empty() || !failed_eps_.empty() || !incoming_.empty()) active = true;
    handle_deferred();
    const auto now = Clock::now();
    if (now - last_check > std::chrono::milliseconds(5)) {
      check_timeouts();
      last_check = now;
    }
    if (active) {
      last_active = now;
      continue;
    }
    bool busy = false;  // something in flight: sleep less
    for (auto& [id, s] : sessions_) busy = busy || s->ops > 0 || s->tails > 0;
    if (now - last_active < std::chrono::microseconds(cfg_.spin_us)) continue;
    ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) continue;
    epoll_event evs[2];
    const int timeout_ms = busy || !revocations_.empty() ? 5 : 100;
    const int n = ::epoll_wait(epoll_.get(), evs, 2, timeout_ms);
    for (int i = 0; i < n; ++i)
      if (evs[i].data.fd == bell_.get()) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(bell_.get(), &v, sizeof v);
      }
  }
}

void UcxEngine::handle_deferred() {
  // Endpoint failures first: their jobs' completions below then carry the reason.
  while (!failed_eps_.empty()) {
    auto failed = std::move(failed_eps_);
    failed_eps_.clear();
    for (auto& [tag, status] : failed) {
      fail_link(tag.link, PeerLost(std::string("the link failed: ") + ucs_status_string(status)));
    }
  }
  while (!incoming_.empty()) {
    auto in = std::move(incoming_);
    incoming_.clear();
    for (auto& [id, payload] : in) handle_am(id, payload);
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
  const auto now = Clock::now();
  std::vector<Session*> stalled;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = *it->second;
    if (s.peer_session->dead() && s.ops == 0) drop_rkeys(s);
    if (s.closed && s.ops == 0 && s.tails == 0 && s.active.empty()) {
      it = sessions_.erase(it);
      continue;
    }
    // Also a failed session: what it still has in flight on a link that others keep open
    // must end within the bound too.
    if ((s.ops > 0 || s.tails > 0) && now - s.last_progress > cfg_.peer_timeout) stalled.push_back(&s);
    ++it;
  }
  for (Session* s : stalled)  // a stalled peer stalls every session on the link
    fail_link(s->link, PeerLost("no progress for " + std::to_string(cfg_.peer_timeout.count()) + " ms"));
  settle_revocations(false);
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
  engine->incoming_.emplace_back(id, std::vector<std::uint8_t>(p, p + length));
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
    default: break;
  }
}

void UcxEngine::on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* tag = static_cast<ErrTag*>(arg);
  tag->engine->failed_eps_.emplace_back(*tag, status);
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
