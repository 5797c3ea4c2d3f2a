#include "backends/gds/gds_backend.h"

#include <charconv>

#include "backends/gds/gds_connection.h"
#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

class GdsBackend final : public Backend {
 public:
  GdsBackend(const BackendContext& ctx, const CuFileApi* api, GdsSettings settings)
      : ctx_(ctx),
        api_(api),
        settings_(std::move(settings)),
        registry_(std::make_shared<GdsRegistry>(api, settings_.register_buffers)) {}

  std::string_view name() const override { return "gds"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.local_kinds = {MemoryKind::kVram};
    c.remote_kinds = {MemoryKind::kFile};
    c.same_process_only = true;
    c.notifications = true;
    return c;
  }
  CostModel cost_model() const override { return CostModel{20.0, 2.0, 3.0}; }
  Status register_region(const RegionInfo& region) override { return registry_->add(region); }
  Status deregister_region(std::uint64_t region_id) override {
    registry_->remove(region_id);
    return Status::Ok();
  }
  std::vector<std::uint8_t> connection_info() const override {
    ByteWriter w;
    w.str(ctx_.process_id);
    return w.take();
  }
  Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) override {
    if (peer.agent_name != ctx_.agent_name || peer.process_id != ctx_.process_id)
      return Unavailable("gds backend: reaches the files of this agent only, not of '" + peer.agent_name +
                         "'");
    return std::unique_ptr<BackendConnection>(
        new GdsConnection(api_, registry_, settings_, ctx_.agent_name, ctx_.deliver_notification));
  }

 private:
  BackendContext ctx_;
  const CuFileApi* api_;
  GdsSettings settings_;
  std::shared_ptr<GdsRegistry> registry_;
};

}  // namespace

Result<std::unique_ptr<Backend>> make_gds_backend(const BackendContext& ctx) {
  KVF_ASSIGN_OR_RETURN(const CuFileApi* api, CuFileApi::get());
  GdsSettings s;
  std::uint64_t threads = s.threads, batch = s.batch, max_io = s.max_io_bytes;
  KVF_ASSIGN_OR_RETURN(threads, integer_setting(ctx.params, "gds", "threads", 1, 64, threads));
  // 128 entries (cuFile's default max_batch_io_size) stalled on the H200 machine; 64 ran.
  KVF_ASSIGN_OR_RETURN(batch, integer_setting(ctx.params, "gds", "batch", 1, 64, batch));
  KVF_ASSIGN_OR_RETURN(max_io, integer_setting(ctx.params, "gds", "max_io", 4096, 1ull << 30, max_io));
  // Synchronous calls from 16 threads: on the H200 machine (compatibility mode) the batch
  // API wrote faster only into the page cache (its durable rate was lower) and read cold
  // data slower (docs/benchmarks.md "Storage tier").
  if (auto it = ctx.params.find("engine"); it != ctx.params.end()) {
    if (it->second != "threads" && it->second != "batch")
      return InvalidArgument("gds.engine = '" + it->second + "': expected threads or batch");
    s.engine = it->second;
  }
  if (auto it = ctx.params.find("register_buffers"); it != ctx.params.end()) {
    if (it->second != "on" && it->second != "off")
      return InvalidArgument("gds.register_buffers = '" + it->second + "': expected on or off");
    s.register_buffers = it->second == "on";
  }
  s.threads = static_cast<unsigned>(threads);
  s.batch = static_cast<unsigned>(batch);
  s.max_io_bytes = max_io;
  return std::unique_ptr<Backend>(new GdsBackend(ctx, api, s));
}

void register_gds_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "gds";
  f.description =
      "vram <-> file of this agent through cuFile (GPUDirect Storage, compatibility mode without nvidia-fs)";
  f.param_keys = {"engine", "threads", "batch", "max_io", "register_buffers"};
  f.probe = [] { return CuFileApi::get().status(); };
  f.create = [](const BackendContext& ctx) { return make_gds_backend(ctx); };
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
