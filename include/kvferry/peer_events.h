// kvferry/peer_events.h — what an agent learns about its peers over time.
//
// An agent records an event when a peer is loaded for the first time (kJoined), when a
// known peer's metadata changes in place (kUpdated: more memory, new entries), when a
// peer is replaced by a new instance under the same name (kRestarted: the old instance's
// transfers fail), and when a peer goes away (kLeft: forgotten, shut down, or its lease in
// the metadata service ran out). Agent::take_peer_events() drains them in order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvferry {

enum class PeerEventKind : std::uint8_t { kJoined, kUpdated, kRestarted, kLeft };

std::string_view to_string(PeerEventKind kind) noexcept;

struct PeerEvent {
  PeerEventKind kind = PeerEventKind::kJoined;
  std::string peer;
  // The peer's metadata revision after the event (0 for kLeft, and for peers whose
  // metadata carries none).
  std::uint64_t revision = 0;
};

}  // namespace kvferry
