#include "core/peer_auth.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace kvferry::detail {
namespace {

std::shared_ptr<const SharedSecret> key(const std::string& s) {
  auto k = SharedSecret::create({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
  EXPECT_TRUE(k.ok()) << k.status().to_string();
  return *k;
}

const std::vector<std::uint8_t> kHello = {'h', 'e', 'l', 'l', 'o'};

TEST(PeerAuth, SameSecretCompletesBothWays) {
  auto k = key("0123456789abcdef0123456789abcdef");
  InitiatorAuth i(k, "tcp");
  TargetAuth t(k, "tcp");
  auto challenge = t.challenge(kHello, i.offer());
  ASSERT_EQ(challenge.size(), kAuthChallengeBytes);
  auto proof = i.respond(kHello, challenge, "test");
  ASSERT_TRUE(proof.ok()) << proof.status().to_string();
  EXPECT_TRUE(t.verify(*proof, "test").ok());
  // Both ends derive the same frame tags, and they differ by direction and sequence.
  std::vector<std::uint8_t> frame = {1, 2, 3};
  EXPECT_EQ(i.frame_tag("request", 0, frame), t.frame_tag("request", 0, frame));
  EXPECT_NE(i.frame_tag("request", 0, frame), t.frame_tag("request", 1, frame));
  EXPECT_NE(i.frame_tag("request", 0, frame), t.frame_tag("reply", 0, frame));
}

TEST(PeerAuth, DifferentSecretsAreCaughtOnEitherSide) {
  auto a = key("0123456789abcdef0123456789abcdef");
  auto b = key("0123456789abcdef0123456789abcdeX");
  InitiatorAuth i(a, "tcp");
  TargetAuth t(b, "tcp");
  auto r = i.respond(kHello, t.challenge(kHello, i.offer()), "test");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("different secrets"), std::string::npos) << r.status().to_string();
  // An initiator that skips checking the target cannot pass a proof it made up.
  InitiatorAuth i2(b, "tcp");
  TargetAuth t2(a, "tcp");
  t2.challenge(kHello, i2.offer());
  Status wrong = t2.verify(std::vector<std::uint8_t>(kAuthTagBytes, 0), "test");
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("authentication failed"), std::string::npos);
}

TEST(PeerAuth, ReplayReflectionAndChangedHellosAreRefused) {
  auto k = key("0123456789abcdef0123456789abcdef");
  InitiatorAuth i(k, "tcp");
  TargetAuth t1(k, "tcp");
  auto proof = i.respond(kHello, t1.challenge(kHello, i.offer()), "test");
  ASSERT_TRUE(proof.ok());
  // The recorded proof against a new connection (fresh target nonce): refused.
  TargetAuth t2(k, "tcp");
  t2.challenge(kHello, i.offer());
  Status replay = t2.verify(*proof, "test");
  EXPECT_FALSE(replay.ok());
  EXPECT_NE(replay.message().find("replayed"), std::string::npos);
  // The target's own proof reflected back as the initiator's: refused (roles differ).
  TargetAuth t3(k, "tcp");
  auto c3 = t3.challenge(kHello, i.offer());
  EXPECT_FALSE(t3.verify(std::span<const std::uint8_t>(c3).subspan(kAuthNonceBytes), "test").ok());
  // A hello changed in flight: the target's proof no longer matches the initiator's.
  InitiatorAuth i4(k, "tcp");
  TargetAuth t4(k, "tcp");
  std::vector<std::uint8_t> changed = kHello;
  changed[0] ^= 1;
  EXPECT_FALSE(i4.respond(kHello, t4.challenge(changed, i4.offer()), "test").ok());
  // Another purpose (tcp proof on the side channel): refused.
  InitiatorAuth i5(k, "side");
  TargetAuth t5(k, "tcp");
  EXPECT_FALSE(i5.respond(kHello, t5.challenge(kHello, i5.offer()), "test").ok());
}

TEST(PeerAuth, SecretLengthIsChecked) {
  std::vector<std::uint8_t> short_key(kMinSecretBytes - 1, 7), long_key(kMaxSecretBytes + 1, 7);
  EXPECT_FALSE(SharedSecret::create(short_key).ok());
  EXPECT_FALSE(SharedSecret::create(long_key).ok());
  EXPECT_TRUE(SharedSecret::create(std::vector<std::uint8_t>(kMinSecretBytes, 7)).ok());
}

// CPU cost of one whole handshake (both halves), printed.
TEST(PeerAuth, HandshakeCpuCost) {
  auto k = key("0123456789abcdef0123456789abcdef");
  constexpr int kRounds = 2000;
  auto t0 = std::chrono::steady_clock::now();
  for (int n = 0; n < kRounds; ++n) {
    InitiatorAuth i(k, "tcp");
    TargetAuth t(k, "tcp");
    auto proof = i.respond(kHello, t.challenge(kHello, i.offer()), "test");
    ASSERT_TRUE(proof.ok() && t.verify(*proof, "test").ok());
  }
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kRounds;
  std::printf("one handshake, both halves (2 nonces, 4 HMAC-SHA256): %.1f us of CPU\n", us);
  EXPECT_LT(us, 5000.0);
}

}  // namespace
}  // namespace kvferry::detail
