#include "kv/tp/tp_receiver_state.h"

namespace kvferry::tp {

void ReceiveProgress::add_source(std::string peer, std::uint64_t instance, const TpShare& share) {
  senders_.push_back(Sender{std::move(peer), instance, share, {}, 0});
}

Result<LandedShare> ReceiveProgress::land(const std::string& from, const TpLanded& landed, std::uint64_t tokens) {
  Sender* sender = nullptr;
  for (Sender& s : senders_) {
    if (s.peer == from) sender = &s;
  }
  if (sender == nullptr) return Corrupt("a piece from '" + from + "', which is not a sender of this decode rank");
  if (landed.sender_instance != sender->instance) {
    return FailedPrecondition("a piece from another instance of '" + from +
                              "' (restarted?) than the one asked; its bytes cannot be trusted");
  }
  if (landed.heads != sender->share.heads || landed.prefill_rank != sender->share.prefill_rank) {
    return Corrupt("'" + from + "' sent heads [" + std::to_string(landed.heads.first) + ", " +
                   std::to_string(landed.heads.end()) + "), its share is [" + std::to_string(sender->share.heads.first) +
                   ", " + std::to_string(sender->share.heads.end()) + ")");
  }
  const std::uint64_t end = landed.first_token + landed.tokens;
  if (end > tokens) {
    return Corrupt("'" + from + "' sent tokens up to " + std::to_string(end) + " of a " + std::to_string(tokens) +
                   "-token request");
  }
  auto next = sender->pieces.lower_bound(landed.first_token);
  const bool overlaps_next = next != sender->pieces.end() && next->first < end;
  const bool overlaps_previous = next != sender->pieces.begin() && std::prev(next)->first + std::prev(next)->second > landed.first_token;
  if (overlaps_next || overlaps_previous) {
    return Corrupt("'" + from + "' sent tokens [" + std::to_string(landed.first_token) + ", " + std::to_string(end) +
                   ") twice");
  }
  sender->pieces.emplace(landed.first_token, landed.tokens);
  sender->tokens_landed += landed.tokens;
  return LandedShare{sender->share.heads, sender->share.destination_head_offset};
}

bool ReceiveProgress::source_complete(const std::string& peer, std::uint64_t tokens) const {
  for (const Sender& s : senders_) {
    if (s.peer == peer) return s.tokens_landed == tokens;
  }
  return true;
}

bool ReceiveProgress::complete(std::uint64_t tokens) const {
  for (const Sender& s : senders_) {
    if (s.tokens_landed != tokens) return false;
  }
  return true;
}

std::string ReceiveProgress::describe_missing(std::uint64_t tokens) const {
  std::string text;
  for (const Sender& s : senders_) {
    if (s.tokens_landed == tokens) continue;
    if (!text.empty()) text += "; ";
    text += "'" + s.peer + "' (prefill rank " + std::to_string(s.share.prefill_rank) + ", heads [" +
            std::to_string(s.share.heads.first) + ", " + std::to_string(s.share.heads.end()) + ")): " +
            std::to_string(s.tokens_landed) + " of " + std::to_string(tokens) + " tokens landed";
  }
  return text;
}

}  // namespace kvferry::tp
