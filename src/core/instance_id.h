// Agent instance identity: 128 random bits drawn when an agent is created.
//
// A peer is its (name, instance id). The name is what applications address; the instance
// id tells one incarnation from another (a restart, or an impostor that takes the name).
// Agents of this process also enter a process-wide set while they live, so that a peer
// entry of an agent in this very process can be known dead without asking anyone.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry::detail {

struct InstanceId {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  bool zero() const { return hi == 0 && lo == 0; }
  friend bool operator==(const InstanceId&, const InstanceId&) = default;
  std::string hex() const;  // 32 lowercase hex digits
};

// 128 bits from getrandom(2); never zero.
InstanceId random_instance_id();

// Marks an agent of this process alive (while it exists) or gone.
void mark_instance_alive(const InstanceId& id);
void mark_instance_gone(const InstanceId& id);
bool instance_alive_here(const InstanceId& id);

}  // namespace kvferry::detail
