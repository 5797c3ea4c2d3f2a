// Shared-secret authentication of peers (AgentOptions::secret): one mechanism for the
// side channel and every backend's handshake.
//
// A connection is authenticated by a three-message challenge-response, both ways:
//
//   initiator -> target   its hello, carrying the initiator's fresh nonce (the offer)
//   target -> initiator   the challenge: the target's fresh nonce and the target's proof
//   initiator -> target   the response: the initiator's proof
//
// A proof is HMAC-SHA256(secret, purpose | role | initiator nonce | target nonce | hello),
// each part length-prefixed. Both nonces are fresh per connection (16 random bytes), so a
// recorded proof is worthless on any other connection (no replay), a proof of one role
// cannot be reflected as the other, and the hello (names, session ids) cannot be changed
// in flight without the proofs failing. Comparisons are constant-time (CRYPTO_memcmp).
//
// What it does not do: encrypt, or authenticate every data byte after the handshake (an
// attacker who can hijack an established TCP connection is out of scope; use a private
// network or IPsec/WireGuard for that). See docs/reliability.md.
//
// Threading: SharedSecret is immutable after construction and may be shared by threads.
// InitiatorAuth / TargetAuth belong to one connection's handshake (one thread at a time).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

inline constexpr std::size_t kAuthNonceBytes = 16;
inline constexpr std::size_t kAuthTagBytes = 32;   // HMAC-SHA256
inline constexpr std::size_t kMinSecretBytes = 16;  // shorter secrets are refused
inline constexpr std::size_t kMaxSecretBytes = 1024;
// The challenge on the wire: target nonce, then target proof.
inline constexpr std::size_t kAuthChallengeBytes = kAuthNonceBytes + kAuthTagBytes;

using AuthNonce = std::array<std::uint8_t, kAuthNonceBytes>;
using AuthTag = std::array<std::uint8_t, kAuthTagBytes>;

// 16 bytes from the system's random source.
AuthNonce fresh_auth_nonce();

class SharedSecret {
 public:
  // Checks the length (kMinSecretBytes..kMaxSecretBytes).
  static Result<std::shared_ptr<const SharedSecret>> create(std::span<const std::uint8_t> key);
  ~SharedSecret();  // wipes the key
  SharedSecret(const SharedSecret&) = delete;
  SharedSecret& operator=(const SharedSecret&) = delete;

  // HMAC-SHA256 over `label` and each part, each prefixed by its length.
  AuthTag tag(std::string_view label, std::initializer_list<std::span<const std::uint8_t>> parts) const;
  // Constant-time: whether `got` is exactly `expected`.
  static bool same_tag(const AuthTag& expected, std::span<const std::uint8_t> got);

 private:
  explicit SharedSecret(std::span<const std::uint8_t> key) : key_(key.begin(), key.end()) {}
  std::vector<std::uint8_t> key_;
};

// Whether our side and the peer's agree on authenticating; the refusal names why.
// `ours`: we have a secret; `peer_offered`: the peer's hello carried an offer. `where`
// names the agent and the channel ("agent 'b', tcp").
Status auth_agreement(bool ours, bool peer_offered, std::string_view where);

// The initiator's half. `purpose` separates channels ("side", "tcp", "shm").
class InitiatorAuth {
 public:
  InitiatorAuth(std::shared_ptr<const SharedSecret> secret, std::string purpose);
  // The bytes to put in the hello.
  std::span<const std::uint8_t> offer() const { return nonce_; }
  // Checks the target's challenge against `hello` (the exact hello bytes sent, offer
  // included) and returns the response to send. An error names why (a different secret).
  Result<AuthTag> respond(std::span<const std::uint8_t> hello, std::span<const std::uint8_t> challenge,
                          std::string_view where);
  // After respond(): the tag of a frame on this connection (side channel: requests and
  // replies are bound to both nonces and their sequence number).
  AuthTag frame_tag(std::string_view direction, std::uint64_t seq, std::span<const std::uint8_t> frame) const;

 private:
  std::shared_ptr<const SharedSecret> secret_;
  std::string purpose_;
  AuthNonce nonce_;
  AuthNonce target_nonce_{};
};

// The target's half.
class TargetAuth {
 public:
  TargetAuth(std::shared_ptr<const SharedSecret> secret, std::string purpose);
  // The challenge for a hello whose offer is `offer` (kAuthNonceBytes) and whose exact
  // bytes are `hello`; kept for verify().
  std::vector<std::uint8_t> challenge(std::span<const std::uint8_t> hello, std::span<const std::uint8_t> offer);
  // Checks the initiator's response; the error names why.
  Status verify(std::span<const std::uint8_t> response, std::string_view where) const;
  AuthTag frame_tag(std::string_view direction, std::uint64_t seq, std::span<const std::uint8_t> frame) const;

 private:
  std::shared_ptr<const SharedSecret> secret_;
  std::string purpose_;
  AuthNonce nonce_;
  AuthNonce initiator_nonce_{};
  std::vector<std::uint8_t> hello_;
};

}  // namespace kvferry::detail
