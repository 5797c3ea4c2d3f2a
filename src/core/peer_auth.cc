#include "core/peer_auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "core/byte_io.h"

namespace kvferry::detail {

AuthNonce fresh_auth_nonce() {
  AuthNonce n{};
  std::size_t got = 0;
  while (got < n.size()) {
    ssize_t rc = ::getrandom(n.data() + got, n.size() - got, 0);
    if (rc > 0) got += static_cast<std::size_t>(rc);
    else if (rc < 0 && errno != EINTR) break;
  }
  // getrandom cannot fail once the pool is initialised; OpenSSL's generator is the fallback.
  if (got < n.size() && RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) std::abort();
  return n;
}

Result<std::shared_ptr<const SharedSecret>> SharedSecret::create(std::span<const std::uint8_t> key) {
  if (key.size() < kMinSecretBytes || key.size() > kMaxSecretBytes)
    return InvalidArgument("secret: " + std::to_string(key.size()) + " bytes; a shared secret has " +
                           std::to_string(kMinSecretBytes) + ".." + std::to_string(kMaxSecretBytes) +
                           " bytes (32 random bytes recommended)");
  return std::shared_ptr<const SharedSecret>(new SharedSecret(key));
}

SharedSecret::~SharedSecret() { OPENSSL_cleanse(key_.data(), key_.size()); }

AuthTag SharedSecret::tag(std::string_view label, std::initializer_list<std::span<const std::uint8_t>> parts) const {
  ByteWriter w;
  w.u32(static_cast<std::uint32_t>(label.size()));
  w.str(label);
  for (auto p : parts) {
    w.u64(p.size());
    w.bytes(p);
  }
  AuthTag out{};
  unsigned int len = 0;
  const auto& in = w.buffer();
  if (!HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), in.data(), in.size(), out.data(), &len) ||
      len != out.size())
    std::abort();  // only on allocation failure inside OpenSSL
  return out;
}

bool SharedSecret::same_tag(const AuthTag& expected, std::span<const std::uint8_t> got) {
  return got.size() == expected.size() && CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

Status auth_agreement(bool ours, bool peer_offered, std::string_view where) {
  if (ours && !peer_offered)
    return FailedPrecondition(std::string(where) +
                            ": authentication required: this agent has a shared secret (AgentOptions::secret) "
                            "and the peer offered none");
  if (!ours && peer_offered)
    return FailedPrecondition(std::string(where) +
                            ": the peer authenticates with a shared secret and this agent has none "
                            "(set the same AgentOptions::secret on both)");
  return Status::Ok();
}

namespace {
std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
std::span<const std::uint8_t> as_bytes(std::uint64_t& v) { return {reinterpret_cast<const std::uint8_t*>(&v), 8}; }

AuthTag proof(const SharedSecret& k, const std::string& purpose, std::string_view role, const AuthNonce& ni,
              const AuthNonce& nt, std::span<const std::uint8_t> hello) {
  return k.tag("kvferry-auth-1", {as_bytes(purpose), as_bytes(role), ni, nt, hello});
}

AuthTag frame(const SharedSecret& k, const std::string& purpose, std::string_view direction, const AuthNonce& ni,
              const AuthNonce& nt, std::uint64_t seq, std::span<const std::uint8_t> bytes) {
  return k.tag("kvferry-frame-1", {as_bytes(purpose), as_bytes(direction), ni, nt, as_bytes(seq), bytes});
}
}  // namespace

InitiatorAuth::InitiatorAuth(std::shared_ptr<const SharedSecret> secret, std::string purpose)
    : secret_(std::move(secret)), purpose_(std::move(purpose)), nonce_(fresh_auth_nonce()) {}

Result<AuthTag> InitiatorAuth::respond(std::span<const std::uint8_t> hello, std::span<const std::uint8_t> challenge,
                                       std::string_view where) {
  if (challenge.size() != kAuthChallengeBytes)
    return Corrupt(std::string(where) + ": authentication challenge of " + std::to_string(challenge.size()) +
                   " bytes (expected " + std::to_string(kAuthChallengeBytes) + ")");
  std::memcpy(target_nonce_.data(), challenge.data(), kAuthNonceBytes);
  const AuthTag expected = proof(*secret_, purpose_, "target", nonce_, target_nonce_, hello);
  if (!SharedSecret::same_tag(expected, challenge.subspan(kAuthNonceBytes)))
    return FailedPrecondition(std::string(where) +
                            ": authentication failed: the peer's proof does not match this agent's shared secret "
                            "(the two agents have different secrets)");
  return proof(*secret_, purpose_, "initiator", nonce_, target_nonce_, hello);
}

AuthTag InitiatorAuth::frame_tag(std::string_view direction, std::uint64_t seq,
                                 std::span<const std::uint8_t> bytes) const {
  return frame(*secret_, purpose_, direction, nonce_, target_nonce_, seq, bytes);
}

TargetAuth::TargetAuth(std::shared_ptr<const SharedSecret> secret, std::string purpose)
    : secret_(std::move(secret)), purpose_(std::move(purpose)), nonce_(fresh_auth_nonce()) {}

std::vector<std::uint8_t> TargetAuth::challenge(std::span<const std::uint8_t> hello,
                                                std::span<const std::uint8_t> offer) {
  std::memcpy(initiator_nonce_.data(), offer.data(), std::min(offer.size(), kAuthNonceBytes));
  hello_.assign(hello.begin(), hello.end());
  const AuthTag p = proof(*secret_, purpose_, "target", initiator_nonce_, nonce_, hello_);
  std::vector<std::uint8_t> out(nonce_.begin(), nonce_.end());
  out.insert(out.end(), p.begin(), p.end());
  return out;
}

Status TargetAuth::verify(std::span<const std::uint8_t> response, std::string_view where) const {
  const AuthTag expected = proof(*secret_, purpose_, "initiator", initiator_nonce_, nonce_, hello_);
  if (!SharedSecret::same_tag(expected, response))
    return FailedPrecondition(std::string(where) +
                            ": authentication failed: the initiator's proof does not match this agent's shared "
                            "secret (a different secret, or a replayed handshake)");
  return Status::Ok();
}

AuthTag TargetAuth::frame_tag(std::string_view direction, std::uint64_t seq,
                              std::span<const std::uint8_t> bytes) const {
  return frame(*secret_, purpose_, direction, initiator_nonce_, nonce_, seq, bytes);
}

}  // namespace kvferry::detail
