// The ucx backend. Settings: ucx.tls and ucx.devices (UCX_TLS / UCX_NET_DEVICES for this
// agent's context), ucx.data (auto | am | rma: how host memory moves, see
// ucx_am_data.cc), ucx.ops_in_flight, ucx.chunk_kib, ucx.spin_us (how long the reactor keeps
// polling the worker after activity; 0, the default: arm and sleep as soon as a poll finds
// nothing. On a 2-core host a 50 us window doubled the small-request latency, the polling
// taking the CPU the peer needed to answer; docs/benchmarks.md, 2026-12-01).
#include "backends/ucx/ucx_backend.h"

#include "backends/ucx/ucx_engine.h"
#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/session_connection.h"

namespace kvferry::detail::ucx {
namespace {

// An initiator's session as its SessionConnection sees it: the engine moves the bytes;
// health is the session's PeerSession, readable from any thread.
class UcxLink {
 public:
  UcxLink(std::shared_ptr<UcxEngine> engine, std::shared_ptr<Session> s)
      : engine_(std::move(engine)), session_(std::move(s)) {}
  Status post(const std::shared_ptr<TransferJob>& job) { return engine_->post(session_, job); }
  void cancel(const std::shared_ptr<TransferJob>& job) { engine_->cancel(session_, job); }
  Status notify(std::string_view message) { return engine_->notify(session_, message); }
  Status health() const { return engine_->health(*session_); }
  // The loss now (its awaiting jobs fail at once); the bye and the link's release follow
  // on the reactor, which owns the endpoints.
  void fail(const Status& why) {
    session_->peer_session->fail(why);
    engine_->close(session_, why);
  }

 private:
  std::shared_ptr<UcxEngine> engine_;
  std::shared_ptr<Session> session_;
};

class UcxBackend final : public Backend {
 public:
  UcxBackend(BackendContext ctx, std::shared_ptr<UcxEngine> engine) : ctx_(std::move(ctx)), engine_(std::move(engine)) {}

  std::string_view name() const override { return "ucx"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.local_kinds = {MemoryKind::kDram};
    c.remote_kinds = {MemoryKind::kDram};
    // UCX moves CUDA memory itself (cuda_copy, GPUDirect RDMA) with put/get. The
    // active-message path copies small (eager) chunks with memcpy: there vram goes
    // through the core's pinned staging instead.
    if (engine_->context().has_cuda() && !engine_->active_messages()) {
      c.local_kinds.insert(MemoryKind::kVram);
      c.remote_kinds.insert(MemoryKind::kVram);
    }
    c.notifications = true;
    c.authenticates = true;  // every session's hello (ucx_auth.cc)
    return c;
  }
  // With RDMA, UCX is the fast path between hosts: a few microseconds per request and the
  // bandwidth UCX itself reports for its lanes. Without it UCX runs over TCP sockets,
  // where kvferry's own tcp backend measured 2-4x faster (docs/benchmarks.md): a fixed
  // cost above tcp's keeps tcp the choice, and UCX's figure is capped at what it reached.
  CostModel cost_model() const override {
    const double reported = engine_->reported_gbps();
    if (engine_->context().has_rdma()) return CostModel{5.0, 0.02, reported > 0 ? reported : 12.5};
    return CostModel{100.0, 0.1, reported > 0 ? std::min(reported, 2.0) : 1.0};
  }
  Status register_region(const RegionInfo& r) override { return engine_->register_region(r); }
  Status deregister_region(std::uint64_t id) override { return engine_->deregister_region(id); }
  std::vector<std::uint8_t> connection_info() const override { return engine_->connection_info(); }
  Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) override {
    KVF_ASSIGN_OR_RETURN(auto s, engine_->connect(peer, deadline_after(ctx_.connect_timeout)));
    return std::unique_ptr<BackendConnection>(
        std::make_unique<SessionConnection<UcxLink>>(std::make_shared<UcxLink>(engine_, std::move(s))));
  }

 private:
  BackendContext ctx_;
  std::shared_ptr<UcxEngine> engine_;
};

}  // namespace

Result<std::unique_ptr<Backend>> make_ucx_backend(const BackendContext& ctx) {
  ContextSettings cs;
  if (auto it = ctx.params.find("tls"); it != ctx.params.end()) cs.tls = it->second;
  if (auto it = ctx.params.find("devices"); it != ctx.params.end()) cs.devices = it->second;
  KVF_ASSIGN_OR_RETURN(auto ops, integer_setting(ctx.params, "ucx", "ops_in_flight", 1, 4096, 64));
  KVF_ASSIGN_OR_RETURN(auto chunk_kib, integer_setting(ctx.params, "ucx", "chunk_kib", 4, 1u << 20, 1024));
  KVF_ASSIGN_OR_RETURN(auto spin_us, integer_setting(ctx.params, "ucx", "spin_us", 0, 100000, 0));
  std::string data = "auto";
  if (auto it = ctx.params.find("data"); it != ctx.params.end()) data = it->second;
  if (data != "auto" && data != "am" && data != "rma")
    return InvalidArgument("ucx.data='" + data + "' must be auto, am (active messages) or rma (put/get)");
  KVF_ASSIGN_OR_RETURN(auto context, UcxContext::create(cs));
  EngineConfig cfg;
  cfg.agent_name = ctx.agent_name;
  cfg.secret = ctx.secret;
  cfg.peer_timeout = ctx.peer_timeout;
  cfg.max_notification_bytes = ctx.max_notification_bytes;
  cfg.deliver = ctx.deliver_notification;
  cfg.max_ops = static_cast<std::uint32_t>(ops);
  cfg.chunk_bytes = chunk_kib << 10;
  cfg.spin_us = static_cast<std::uint32_t>(spin_us);
  // Without RDMA, UCX's put/get are emulated in software and its rendezvous is not.
  cfg.active_messages = data == "am" || (data == "auto" && !context->has_rdma());
  KVF_ASSIGN_OR_RETURN(auto engine, UcxEngine::start(std::move(context), std::move(cfg), ctx.reactor));
  return std::unique_ptr<Backend>(new UcxBackend(ctx, std::shared_ptr<UcxEngine>(std::move(engine))));
}

}  // namespace kvferry::detail::ucx

namespace kvferry::detail {

void register_ucx_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "ucx";
  f.description = "dram <-> dram between hosts through UCX (RDMA verbs where present, else tcp / shared memory)";
  f.param_keys = {"tls", "devices", "data", "ops_in_flight", "chunk_kib", "spin_us"};
  f.probe = [] {
    auto ctx = ucx::UcxContext::create({});
    if (!ctx.ok()) return ctx.status();
    if ((*ctx)->transports().empty()) return Unavailable("ucx: UCX found no transport on this machine");
    return Status::Ok();
  };
  f.create = ucx::make_ucx_backend;
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
