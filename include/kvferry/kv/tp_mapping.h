// kvferry/kv/tp_mapping.h — which KV heads move between the ranks of a prefill engine
// and a decode engine whose tensor-parallel degrees differ.
//
// Contract
// - `TpMapping` is an immutable value: copy it freely, share it between threads; every
//   method is const. `create` computes every share once; lookups allocate nothing.
// - Head ownership (the rule vLLM and SGLang use): with `kv_heads >= tp`, `kv_heads` must
//   be a multiple of `tp` and rank r holds heads [r * kv_heads / tp, (r + 1) * kv_heads / tp);
//   with `kv_heads < tp`, `tp` must be a multiple of `kv_heads` and each head is replicated
//   on `tp / kv_heads` consecutive ranks: rank r holds head r / (tp / kv_heads).
//   A rank's local heads are numbered from 0 in model order (local = model - first).
// - MLA: every rank holds the one latent whole (kv_heads is 1, `mla` says so, and the
//   staging has one part instead of K and V). Each decode rank takes it from exactly one
//   prefill rank: decode rank d reads prefill rank d % P.
// - Shares: for every decode rank, the heads it needs are covered exactly once (never a
//   head twice, never one missing) by shares, each from one prefill rank. Adjacent heads
//   from the same prefill rank form one share. Where a head has several prefill replicas,
//   the decode ranks needing it take them round robin (the j-th decode rank that needs
//   head h reads replica j % replicas), so replicas share the load evenly.
//   Each share carries both head offsets: where its first head sits among the prefill
//   rank's local heads and among the decode rank's local heads. The destination offset
//   is relative to the decode rank's own first head (the bug engines hit: the second
//   decode rank's bucket must not use the prefill rank's global index).
// - Staging (kv_head_copy.h): a rank gathers its local heads into `[heads, layers, kv,
//   tokens, head_dim]`, heads outermost, so every share is one contiguous byte range on
//   both sides: heads [source_head_offset, + heads.count) of the prefill staging go to
//   heads [destination_head_offset, + heads.count) of the decode staging.
// - Errors: `create` refuses what cannot be split (e.g. kv_heads 6 on TP 4: "6 KV heads
//   cannot be split over TP 4: ...") and zero sizes, naming the numbers. Rank arguments
//   out of range are a caller bug: lookups return an empty range / span.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvferry/status.h"

namespace kvferry {

// KV heads [first, first + count), in the model's numbering unless said otherwise.
struct HeadRange {
  std::uint32_t first = 0;
  std::uint32_t count = 0;

  std::uint32_t end() const { return first + count; }
  bool empty() const { return count == 0; }
  friend bool operator==(const HeadRange&, const HeadRange&) = default;
};

// The heads rank `rank` of a TP group of `tp` ranks holds (rule above). InvalidArgument
// when the heads cannot be split over `tp` or `rank >= tp`.
Result<HeadRange> tp_rank_heads(std::uint32_t kv_heads, std::uint32_t tp, std::uint32_t rank);

// One contiguous piece of a decode rank's heads, read from one prefill rank.
struct TpShare {
  std::uint32_t prefill_rank = 0;
  std::uint32_t decode_rank = 0;
  HeadRange heads;                            // model numbering
  std::uint32_t source_head_offset = 0;       // heads.first among the prefill rank's local heads
  std::uint32_t destination_head_offset = 0;  // heads.first among the decode rank's local heads

  friend bool operator==(const TpShare&, const TpShare&) = default;
};

class TpMapping {
 public:
  // `kv_heads` of the model; `prefill_tp` (P) and `decode_tp` (D) ranks. With `mla`,
  // kv_heads must be 1 (the latent) and every P, D maps.
  static Result<TpMapping> create(std::uint32_t kv_heads, std::uint32_t prefill_tp, std::uint32_t decode_tp,
                                  bool mla = false);

  std::uint32_t kv_heads() const { return kv_heads_; }
  std::uint32_t prefill_tp() const { return prefill_tp_; }
  std::uint32_t decode_tp() const { return decode_tp_; }
  bool mla() const { return mla_; }

  // Heads a rank holds (model numbering); empty if the rank is out of range.
  HeadRange prefill_heads(std::uint32_t prefill_rank) const;
  HeadRange decode_heads(std::uint32_t decode_rank) const;

  // What decode rank `d` reads: ordered by destination_head_offset, covering its heads
  // exactly once. Empty if `d` is out of range.
  std::span<const TpShare> decode_shares(std::uint32_t decode_rank) const;
  // What prefill rank `p` sends: ordered by decode rank, then head. Empty when `p` is
  // out of range or when every head it holds is read from another replica. A head of a
  // replicated model may go to several decode ranks (each reads it once).
  std::span<const TpShare> prefill_shares(std::uint32_t prefill_rank) const;
  // Every share, ordered by decode rank, then destination offset.
  std::span<const TpShare> shares() const { return shares_; }

  // The prefill ranks decode rank `d` waits for (ascending, no repeats): the senders a
  // decode rank counts before its request is complete.
  std::vector<std::uint32_t> sources_of(std::uint32_t decode_rank) const;

  // "8 KV heads, prefill TP 4 -> decode TP 2: d0 <- p0[0,2)@0 p1[2,4)@2; d1 <- ..."
  std::string describe() const;

 private:
  TpMapping() = default;

  std::uint32_t kv_heads_ = 0;
  std::uint32_t prefill_tp_ = 0;
  std::uint32_t decode_tp_ = 0;
  bool mla_ = false;
  std::vector<TpShare> shares_;               // by decode rank, then destination offset
  std::vector<std::uint32_t> decode_first_;   // decode rank d: shares_[decode_first_[d] .. [d+1])
  std::vector<TpShare> by_prefill_;           // the same shares by prefill rank
  std::vector<std::uint32_t> prefill_first_;  // prefill rank p: by_prefill_[prefill_first_[p] .. [p+1])
};

}  // namespace kvferry
