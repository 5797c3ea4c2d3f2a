// Accepting connections from untrusted addresses without being exhausted by them: caps
// per remote address and in total (the oldest connection not yet past its handshake
// makes room, so a flood of silent sockets cannot lock real clients out), and a pause of
// the listener when the process runs out of descriptors (instead of a busy loop on a
// listener that stays readable).
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <string>

namespace kvferry::detail {

inline constexpr std::chrono::milliseconds kAcceptBackoff{100};

// The remote IP of a connected socket ("" if unknown).
std::string peer_address(int fd);
// accept(2) errors that mean "out of descriptors or memory": stop accepting a while.
bool out_of_descriptors(int err);
// `wanted`, or less so that untrusted connections take at most 1/`share` of this
// process's descriptor table (RLIMIT_NOFILE), leaving the rest to real work; at least 4.
std::size_t descriptor_share(std::size_t wanted, std::size_t share);

// Among `held` (oldest first), the connection to close so that one more from `address`
// stays within `per_address` and `total`; `held.end()` when it fits already.
// `address_of(element)` gives an element's remote address.
template <class Container, class AddressOf>
auto slot_to_free(Container& held, const std::string& address, std::size_t per_address, std::size_t total,
                  AddressOf address_of) {
  std::size_t same = 0;
  auto oldest_same = held.end();
  for (auto it = held.begin(); it != held.end(); ++it) {
    if (address_of(*it) != address) continue;
    if (oldest_same == held.end()) oldest_same = it;
    ++same;
  }
  if (same >= per_address) return oldest_same;
  if (static_cast<std::size_t>(std::distance(held.begin(), held.end())) >= total) return held.begin();
  return held.end();
}

}  // namespace kvferry::detail
