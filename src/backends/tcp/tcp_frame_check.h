// Checks of what a tcp peer sends, as pure functions (the engine applies them; the fuzz
// targets in fuzz/ run them on arbitrary bytes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/tcp/tcp_segments.h"
#include "backends/tcp/tcp_wire.h"

namespace kvferry::detail::tcp {

// A batch frame's header (kWrite: table then data; kReadReq: table only): empty when
// well-formed, else what is wrong.
std::string batch_header_error(const WireHeader& h, bool data_follows);

// Whether [addr, addr + len) lies wholly inside memory this side registered.
using InsideFn = std::function<bool(std::uint64_t addr, std::uint64_t len)>;

// Parses a segment table of WireSegment entries into `out` (one Segment each, see
// make_segment) and their data bytes `total`. Returns empty when the table is well-formed,
// else a protocol error naming the entry: an empty unit or count, a stride below its
// unit, an extent that overflows, more than kMaxFrameUnits units or kMaxChunkBytes bytes
// in the table. Each entry is checked against the regions once, by its extent; only an
// entry whose extent spans regions (pieces of different regions that happen to lie at a
// fixed stride) is checked unit by unit, and becomes one Segment per unit: every Segment
// lies within one region. An entry outside registered memory is no
// protocol error (the memory may have been deregistered meanwhile): `outside` names the
// first one and the request fails; nothing is ever written to or read from it.
std::string parse_segments(std::string_view table, const InsideFn& inside, std::vector<Segment>& out,
                           std::uint64_t& total, std::string& outside);

}  // namespace kvferry::detail::tcp
