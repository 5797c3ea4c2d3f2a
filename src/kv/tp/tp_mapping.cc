#include "kvferry/kv/tp_mapping.h"

#include <algorithm>

namespace kvferry {
namespace {

std::string split_error(std::uint32_t kv_heads, std::uint32_t tp, const char* side) {
  const std::string h = std::to_string(kv_heads), t = std::to_string(tp);
  if (kv_heads >= tp) {
    return std::string(side) + ": " + h + " KV heads cannot be split over TP " + t + ": " + h +
           " is not a multiple of " + t;
  }
  return std::string(side) + ": " + h + " KV heads cannot be replicated over TP " + t + ": " + t +
         " is not a multiple of " + h;
}

Status check_split(std::uint32_t kv_heads, std::uint32_t tp, const char* side) {
  if (tp == 0) return InvalidArgument(std::string(side) + ": TP size must be positive");
  if (kv_heads == 0) return InvalidArgument(std::string(side) + ": kv_heads must be positive");
  const bool ok = kv_heads >= tp ? kv_heads % tp == 0 : tp % kv_heads == 0;
  if (!ok) return InvalidArgument(split_error(kv_heads, tp, side));
  return Status::Ok();
}

// Caller checked the split.
HeadRange heads_of(std::uint32_t kv_heads, std::uint32_t tp, std::uint32_t rank) {
  if (kv_heads >= tp) {
    const std::uint32_t per = kv_heads / tp;
    return HeadRange{rank * per, per};
  }
  return HeadRange{rank / (tp / kv_heads), 1};
}

}  // namespace

Result<HeadRange> tp_rank_heads(std::uint32_t kv_heads, std::uint32_t tp, std::uint32_t rank) {
  KVF_RETURN_IF_ERROR(check_split(kv_heads, tp, "tp heads"));
  if (rank >= tp) {
    return InvalidArgument("tp heads: rank " + std::to_string(rank) + " is outside TP " + std::to_string(tp));
  }
  return heads_of(kv_heads, tp, rank);
}

Result<TpMapping> TpMapping::create(std::uint32_t kv_heads, std::uint32_t prefill_tp, std::uint32_t decode_tp,
                                    bool mla) {
  if (mla && kv_heads != 1) {
    return InvalidArgument("tp mapping: mla holds one latent per token: kv_heads must be 1 (got " +
                           std::to_string(kv_heads) + ")");
  }
  KVF_RETURN_IF_ERROR(check_split(kv_heads, prefill_tp, "tp mapping (prefill)"));
  KVF_RETURN_IF_ERROR(check_split(kv_heads, decode_tp, "tp mapping (decode)"));

  TpMapping m;
  m.kv_heads_ = kv_heads;
  m.prefill_tp_ = prefill_tp;
  m.decode_tp_ = decode_tp;
  m.mla_ = mla;
  // Replicas of head h: prefill ranks [h * rp, h * rp + rp) (rp = 1 without replication).
  const std::uint32_t rp = kv_heads >= prefill_tp ? 1 : prefill_tp / kv_heads;
  const std::uint32_t rd = kv_heads >= decode_tp ? 1 : decode_tp / kv_heads;
  const std::uint32_t per_p = kv_heads >= prefill_tp ? kv_heads / prefill_tp : 1;
  m.decode_first_.reserve(decode_tp + 1);
  for (std::uint32_t d = 0; d < decode_tp; ++d) {
    m.decode_first_.push_back(static_cast<std::uint32_t>(m.shares_.size()));
    const HeadRange mine = heads_of(kv_heads, decode_tp, d);
    for (std::uint32_t h = mine.first; h < mine.end(); ++h) {
      // The j-th decode rank that needs h reads replica j % rp.
      const std::uint32_t j = d % rd;
      const std::uint32_t p = rp > 1 ? h * rp + j % rp : h / per_p;
      const HeadRange theirs = heads_of(kv_heads, prefill_tp, p);
      TpShare* last = m.shares_.size() > m.decode_first_.back() ? &m.shares_.back() : nullptr;
      if (last && last->prefill_rank == p && last->heads.end() == h) {
        ++last->heads.count;  // adjacent head from the same rank: one share
        continue;
      }
      m.shares_.push_back(TpShare{p, d, HeadRange{h, 1}, h - theirs.first, h - mine.first});
    }
  }
  m.decode_first_.push_back(static_cast<std::uint32_t>(m.shares_.size()));

  m.by_prefill_ = m.shares_;
  std::stable_sort(m.by_prefill_.begin(), m.by_prefill_.end(),
                   [](const TpShare& a, const TpShare& b) { return a.prefill_rank < b.prefill_rank; });
  m.prefill_first_.assign(prefill_tp + 1, 0);
  for (const TpShare& s : m.by_prefill_) ++m.prefill_first_[s.prefill_rank + 1];
  for (std::uint32_t p = 0; p < prefill_tp; ++p) m.prefill_first_[p + 1] += m.prefill_first_[p];
  return m;
}

HeadRange TpMapping::prefill_heads(std::uint32_t prefill_rank) const {
  return prefill_rank < prefill_tp_ ? heads_of(kv_heads_, prefill_tp_, prefill_rank) : HeadRange{};
}

HeadRange TpMapping::decode_heads(std::uint32_t decode_rank) const {
  return decode_rank < decode_tp_ ? heads_of(kv_heads_, decode_tp_, decode_rank) : HeadRange{};
}

std::span<const TpShare> TpMapping::decode_shares(std::uint32_t decode_rank) const {
  if (decode_rank >= decode_tp_) return {};
  return std::span<const TpShare>(shares_).subspan(
      decode_first_[decode_rank], decode_first_[decode_rank + 1] - decode_first_[decode_rank]);
}

std::span<const TpShare> TpMapping::prefill_shares(std::uint32_t prefill_rank) const {
  if (prefill_rank >= prefill_tp_) return {};
  return std::span<const TpShare>(by_prefill_)
      .subspan(prefill_first_[prefill_rank], prefill_first_[prefill_rank + 1] - prefill_first_[prefill_rank]);
}

std::vector<std::uint32_t> TpMapping::sources_of(std::uint32_t decode_rank) const {
  std::vector<std::uint32_t> out;
  for (const TpShare& s : decode_shares(decode_rank)) out.push_back(s.prefill_rank);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string TpMapping::describe() const {
  std::string text = mla_ ? std::string("mla latent") : std::to_string(kv_heads_) + " KV heads";
  text += ", prefill TP " + std::to_string(prefill_tp_) + " -> decode TP " + std::to_string(decode_tp_) + ":";
  for (std::uint32_t d = 0; d < decode_tp_; ++d) {
    text += (d ? "; d" : " d") + std::to_string(d) + " <-";
    for (const TpShare& s : decode_shares(d)) {
      text += " p" + std::to_string(s.prefill_rank) + "[" + std::to_string(s.heads.first) + "," +
              std::to_string(s.heads.end()) + ")@" + std::to_string(s.destination_head_offset);
    }
  }
  return text;
}

}  // namespace kvferry
