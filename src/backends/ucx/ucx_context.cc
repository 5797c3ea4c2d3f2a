#include "backends/ucx/ucx_context.h"

#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

namespace kvferry::detail::ucx {

bool is_rdma_transport(const std::string& tl) {
  for (const char* p : {"rc", "ud", "dc"})
    if (tl.rfind(p, 0) == 0) return true;  // rc_verbs, rc_mlx5, ud_verbs, ud_mlx5, dc_mlx5
  return false;
}

std::vector<std::string> parse_transports(const std::string& printed) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  std::istringstream in(printed);
  for (std::string line; std::getline(in, line);) {
    if (line.find("resource") == std::string::npos) continue;
    const auto dashes = line.find("-- ");
    if (dashes == std::string::npos) continue;
    std::string tl = line.substr(dashes + 3);
    tl = tl.substr(0, tl.find('/'));
    while (!tl.empty() && (tl.back() == ' ' || tl.back() == '\r')) tl.pop_back();
    if (!tl.empty() && seen.insert(tl).second) out.push_back(tl);
  }
  return out;
}

Result<std::unique_ptr<UcxContext>> UcxContext::create(const ContextSettings& settings) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return Unavailable(std::string("ucx: cannot read UCX configuration: ") + ucs_status_string(st));
  auto modify = [&](const char* key, const std::string& value) -> Status {
    if (value.empty()) return Status::Ok();
    ucs_status_t s = ucp_config_modify(config, key, value.c_str());
    if (s != UCS_OK)
      return InvalidArgument(std::string("ucx: UCX refused ") + key + "='" + value + "': " + ucs_status_string(s));
    return Status::Ok();
  };
  Status ms = modify("TLS", settings.tls);
  if (ms.ok()) ms = modify("NET_DEVICES", settings.devices);
  if (!ms.ok()) {
    ucp_config_release(config);
    return ms;
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  std::unique_ptr<UcxContext> ctx(new UcxContext());
  st = ucp_init(&params, config, &ctx->context_);
  ucp_config_release(config);
  if (st != UCS_OK) return Unavailable(std::string("ucx: ucp_init failed: ") + ucs_status_string(st));

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(ctx->context_, &attr) == UCS_OK)
    ctx->cuda_ = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  // UCX 1.13 has no query for the transport list: read what it prints.
  char* text = nullptr;
  std::size_t size = 0;
  if (FILE* f = open_memstream(&text, &size)) {
    ucp_context_print_info(ctx->context_, f);
    std::fclose(f);
    ctx->transports_ = parse_transports(std::string(text, size));
    std::free(text);
  }
  for (const auto& tl : ctx->transports_) ctx->rdma_ = ctx->rdma_ || is_rdma_transport(tl);
  return ctx;
}

UcxContext::~UcxContext() {
  if (context_) ucp_cleanup(context_);
}

std::string UcxContext::describe() const {
  std::string s;
  for (const auto& t : transports_) s += (s.empty() ? "" : ",") + t;
  return s.empty() ? "none" : s;
}

}  // namespace kvferry::detail::ucx
