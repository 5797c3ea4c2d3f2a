// tp_receiver_state.h — what has landed of one request at a decode rank, sender by
// sender. Senders are agents (name and instance id), never rank numbers: two prefill
// ranks are two senders even when an engine gives them one pipeline rank (the bug of
// counting notifications per rank). Pieces of a share may land in any order; a piece
// outside the request, of other heads or overlapping one already landed is refused.
// Not thread-safe: the receiver's lock guards it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kv/tp/tp_wire.h"
#include "kvferry/kv/tp_mapping.h"
#include "kvferry/status.h"

namespace kvferry::tp {

struct LandedShare {
  HeadRange heads;                          // model numbering
  std::uint32_t destination_head_offset = 0;  // among the decode rank's local heads
};

class ReceiveProgress {
 public:
  void add_source(std::string peer, std::uint64_t instance, const TpShare& share);
  // Accounts a landed piece from agent `from`; what to scatter, or why it is refused.
  Result<LandedShare> land(const std::string& from, const TpLanded& landed, std::uint64_t tokens);
  bool source_complete(const std::string& peer, std::uint64_t tokens) const;
  bool complete(std::uint64_t tokens) const;
  std::uint32_t sources() const { return static_cast<std::uint32_t>(senders_.size()); }
  // "'prefill-1' (rank 1, heads [2, 4)): 0 of 4096 tokens; ..." for every incomplete one.
  std::string describe_missing(std::uint64_t tokens) const;

 private:
  struct Sender {
    std::string peer;
    std::uint64_t instance = 0;
    TpShare share;
    std::map<std::uint64_t, std::uint64_t> pieces;  // first token -> tokens
    std::uint64_t tokens_landed = 0;
  };
  std::vector<Sender> senders_;
};

}  // namespace kvferry::tp
