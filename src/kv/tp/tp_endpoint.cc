#include "kv/tp/tp_endpoint.h"

#include <random>

namespace kvferry::tp {

std::uint64_t new_instance_id() {
  std::random_device device;
  const std::uint64_t id = (std::uint64_t{device()} << 32) ^ device();
  return id == 0 ? 1 : id;
}

Status publish_endpoint(Agent& agent, const EndpointInfo& info) {
  const std::vector<std::uint8_t> bytes = encode(info);
  return agent.set_metadata_entry(kKvTpMetadataKey, bytes).with_context("publishing the kv.tp entry");
}

Result<EndpointInfo> remote_endpoint(const Agent& agent, std::string_view peer) {
  Result<std::vector<std::uint8_t>> bytes = agent.remote_metadata_entry(peer, kKvTpMetadataKey);
  if (!bytes.ok()) {
    return bytes.status().with_context("peer '" + std::string(peer) +
                                       "' published no kv.tp entry (not a TP endpoint, or its metadata is not loaded)");
  }
  Result<EndpointInfo> info = decode_endpoint(*bytes);
  if (!info.ok()) return info.status().with_context("peer '" + std::string(peer) + "'");
  return info;
}

Status check_same_model(const KvLayout& ours, const KvLayout& theirs, std::string_view who) {
  const KvGeometry& a = ours.geometry();
  const KvGeometry& b = theirs.geometry();
  const bool mla_a = ours.arrangement() == KvArrangement::kMla;
  const bool mla_b = theirs.arrangement() == KvArrangement::kMla;
  if (a.layers == b.layers && a.head_dim == b.head_dim && a.dtype == b.dtype && mla_a == mla_b) return Status::Ok();
  return FailedPrecondition("kv model mismatch with " + std::string(who) + " (ours vs theirs): " + ours.describe() +
                            " vs " + theirs.describe());
}

Status check_pool_heads(const KvLayout& layout, HeadRange heads, std::string_view role, std::uint32_t rank) {
  if (layout.geometry().kv_heads == heads.count) return Status::Ok();
  return InvalidArgument(std::string(role) + " rank " + std::to_string(rank) + " holds heads [" +
                         std::to_string(heads.first) + ", " + std::to_string(heads.end()) + ") of the model (" +
                         std::to_string(heads.count) + "), but its pool has " +
                         std::to_string(layout.geometry().kv_heads) + " KV heads");
}

}  // namespace kvferry::tp
