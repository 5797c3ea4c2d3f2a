#include "kvferry/kv/kv_handshake.h"

#include <algorithm>
#include <string>

namespace kvferry {
namespace {

class MismatchList {
 public:
  template <typename T>
  void compare(const char* field, const T& ours, const T& theirs) {
    if (ours == theirs) return;
    text_ +=
        (text_.empty() ? "" : ", ") + std::string(field) + " " + as_text(ours) + " vs " + as_text(theirs);
  }
  bool empty() const { return text_.empty(); }
  const std::string& text() const { return text_; }

 private:
  static std::string as_text(std::uint64_t v) { return std::to_string(v); }
  static std::string as_text(std::uint32_t v) { return std::to_string(v); }
  static std::string as_text(KvDtype v) { return std::string(to_string(v)); }
  static std::string as_text(KvArrangement v) { return std::string(to_string(v)); }
  std::string text_;
};

}  // namespace

Status check_kv_compatible(const KvLayout& ours, const KvLayout& theirs, std::string_view peer) {
  const KvGeometry& a = ours.geometry();
  const KvGeometry& b = theirs.geometry();
  MismatchList mismatches;
  mismatches.compare("layers", a.layers, b.layers);
  mismatches.compare("kv_heads", a.kv_heads, b.kv_heads);
  mismatches.compare("head_dim", a.head_dim, b.head_dim);
  mismatches.compare("block_tokens", a.block_tokens, b.block_tokens);
  mismatches.compare("dtype", a.dtype, b.dtype);
  mismatches.compare("layout", ours.arrangement(), theirs.arrangement());
  mismatches.compare("block_bytes", ours.block_bytes(), theirs.block_bytes());
  if (mismatches.empty()) return Status::Ok();
  const std::string who = peer.empty() ? std::string() : " with peer '" + std::string(peer) + "'";
  return FailedPrecondition("kv geometry mismatch" + who + " (ours vs theirs): " + mismatches.text());
}

Status publish_kv_pool(Agent& agent, const KvPool& pool, std::string_view key) {
  const std::vector<std::uint8_t> bytes = pool.encode();
  return agent.set_metadata_entry(key, bytes)
      .with_context("publishing the KV pool as metadata entry '" + std::string(key) + "'");
}

Result<KvPool> remote_kv_pool(const Agent& agent, std::string_view peer, std::string_view key) {
  Result<std::vector<std::uint8_t>> bytes = agent.remote_metadata_entry(peer, key);
  if (!bytes.ok()) {
    const std::vector<std::string> known = agent.remote_agents();
    const bool peer_known = std::find(known.begin(), known.end(), peer) != known.end();
    if (bytes.status().code() == StatusCode::kNotFound && peer_known) {
      return NotFound("peer '" + std::string(peer) + "' published no KV pool (metadata entry '" +
                      std::string(key) + "'): is it a kvferry KV server of this version?");
    }
    return bytes.status();
  }
  Result<KvPool> pool = KvPool::decode(*bytes);
  if (!pool.ok()) return pool.status().with_context("peer '" + std::string(peer) + "'");
  return pool;
}

}  // namespace kvferry
