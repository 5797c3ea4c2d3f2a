// Checks of what a tcp peer sends, as pure functions (the engine applies them; the fuzz
// targets in fuzz/ run them on arbitrary bytes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/tcp/tcp_wire.h"

namespace kvferry::detail::tcp {

// One entry of a batch frame's segment table, on one side: where a chunk's bytes land
// or come from. A wire unit, not a piece: the initiator cuts each TransferPiece into
// chunks of at most chunk_bytes; the target sees only these, untrusted, from the peer.
struct Segment {
  std::uint8_t* ptr;
  std::uint64_t len;
};

// A batch frame's header (kWrite: table then data; kReadReq: table only): empty when
// well-formed, else what is wrong.
std::string batch_header_error(const WireHeader& h, bool data_follows);

// Parses a segment table of (addr u64, len u64) entries into `out` and their byte total
// (saturating: a sum that would wrap is reported as UINT64_MAX). False if an entry is
// empty or `inside(addr, len)` refuses it; `bad` then names the first such entry.
bool parse_segments(const std::string& table, const std::function<bool(std::uint64_t, std::uint64_t)>& inside,
                    std::vector<Segment>& out, std::uint64_t& total, std::string& bad);

}  // namespace kvferry::detail::tcp
