// tp_endpoint.h — what a TP sender and receiver share: publishing the "kv.tp" entry,
// reading a peer's, checking that two pools hold the same model, the instance id, the
// split of the Agent's inbox into our messages and everyone else's.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "kv/tp/tp_wire.h"
#include "kvferry/agent.h"
#include "kvferry/kv/kv_handshake.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry::tp {

// A fresh random 64-bit id per endpoint object: a restarted peer with the same name is a
// different instance.
std::uint64_t new_instance_id();

Status publish_endpoint(Agent& agent, const EndpointInfo& info);
Result<EndpointInfo> remote_endpoint(const Agent& agent, std::string_view peer);

// Both pools hold the same model (layers, head_dim, dtype, MLA or not); block sizes,
// arrangements and head counts may differ. `who` names the peer in the message.
Status check_same_model(const KvLayout& ours, const KvLayout& theirs, std::string_view who);

// Our pool holds exactly the heads `heads` of the model.
Status check_pool_heads(const KvLayout& layout, HeadRange heads, std::string_view role, std::uint32_t rank);

// Staging bytes of one token of `heads` heads (KvStagingShape of one token).
inline std::uint64_t staging_token_bytes(const KvLayout& layout, std::uint32_t heads) {
  return KvStagingShape::of(layout, heads, 1).bytes();
}

// Keeps notifications that are not ours, bounded (the oldest go first).
class OtherInbox {
 public:
  void keep(Notification n) {
    if (kept_.size() >= kMaxKept) kept_.pop_front();
    kept_.push_back(std::move(n));
  }
  std::vector<Notification> take() {
    std::vector<Notification> out(std::make_move_iterator(kept_.begin()), std::make_move_iterator(kept_.end()));
    kept_.clear();
    return out;
  }

 private:
  static constexpr std::size_t kMaxKept = 1 << 16;
  std::deque<Notification> kept_;
};

}  // namespace kvferry::tp
