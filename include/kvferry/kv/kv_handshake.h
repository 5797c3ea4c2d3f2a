// kvferry/kv/kv_handshake.h — publishing a KV pool in an Agent's metadata and checking
// a peer's pool before any block moves.
//
// Contract
// - Two pools can exchange blocks when their geometry (layers, kv_heads, head_dim,
//   block_tokens), dtype, arrangement and hence block size agree. Pool sizes (blocks)
//   and memory kinds may differ: a decode engine's cache need not match the prefill's.
// - A mismatch is a FailedPrecondition whose message names every differing field with
//   both values, ours first: "kv geometry mismatch with peer 'prefill-0' (ours vs
//   theirs): kv_heads 8 vs 4, dtype bf16 vs fp16, block_bytes 65536 vs 16384". Never
//   silent garbage.
// - The functions are thread-safe as far as the Agent is (it is: see agent.h).
// - The entry travels in the Agent's metadata: publish before the peer fetches or
//   loads it (Agent::fetch_remote, Agent::load_remote); publishing again replaces it.
#pragma once

#include <string_view>

#include "kvferry/agent.h"
#include "kvferry/kv/kv_layout.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry {

// The metadata key of an agent's KV pool. Agents with several pools (e.g. one per
// attention group) publish the others under keys of their own choosing.
inline constexpr std::string_view kKvPoolMetadataKey = "kv.pool";

// OK when `ours` and `theirs` can exchange blocks; otherwise the error above. `peer`
// only names the other side in the message (may be empty).
Status check_kv_compatible(const KvLayout& ours, const KvLayout& theirs, std::string_view peer = {});

// Sets the pool's encoding (kv_pool.h) as metadata entry `key` of `agent`.
Status publish_kv_pool(Agent& agent, const KvPool& pool, std::string_view key = kKvPoolMetadataKey);

// The pool a loaded peer published under `key`: NotFound if it published none (an
// agent without a KV pool, or an old build), Corrupt if the bytes do not decode.
Result<KvPool> remote_kv_pool(const Agent& agent, std::string_view peer,
                              std::string_view key = kKvPoolMetadataKey);

}  // namespace kvferry
