// kvferry/prepared_list.h — a descriptor list validated once, for index transfers.
//
// Contract
// - Made by `Agent::prepare_local` (every descriptor inside this agent's registered
//   memory) or `Agent::prepare_remote` (inside the memory the peer announced).
// - Immutable and cheap to copy (shared). Safe to use from any thread.
// - It stays bound to what it was validated against: a transfer that uses it fails with
//   a clear error if that memory was deregistered or the peer was forgotten/reloaded.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kvferry/memory.h"

namespace kvferry {

namespace detail {
struct PreparedData;
}

class PreparedList {
 public:
  PreparedList() = default;  // empty, invalid
  bool valid() const { return data_ != nullptr; }
  std::size_t size() const;
  MemoryKind kind() const;
  bool is_local() const;
  // The peer it was prepared against; empty for a local list.
  const std::string& peer() const;

 private:
  friend class Agent;
  explicit PreparedList(std::shared_ptr<const detail::PreparedData> data)
      : data_(std::move(data)) {}
  std::shared_ptr<const detail::PreparedData> data_;
};

}  // namespace kvferry
