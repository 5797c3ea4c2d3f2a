// The tools' one control framing (tools/common/control_codec.h) on untrusted bytes:
// truncation, oversize, unknown types, trailing bytes, bodies that are not objects,
// and the typed fields and messages built on it (kv_messages.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/control_codec.h"
#include "kv/kv_messages.h"

namespace kvferry::cli {
namespace {

using nlohmann::json;

std::vector<std::uint8_t> header(const char* magic, std::uint32_t type, std::uint32_t length) {
  std::vector<std::uint8_t> bytes(magic, magic + 4);
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<std::uint8_t>(type >> (8 * i)));
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<std::uint8_t>(length >> (8 * i)));
  return bytes;
}

TEST(ControlCodec, RoundTripsEveryFieldKindIncludingBinary) {
  const json body{{"port", 4242}, {"name", "prefill-0"}, {"ok", true},
                  {"metadata", json::binary({0, 1, 2, 255})}, {"list", {1, 2, 3}}};
  const std::vector<std::uint8_t> frame = encode_control(ControlType::kSetupReply, body);
  ASSERT_GE(frame.size(), kControlHeaderBytes);
  EXPECT_EQ(std::string(frame.begin(), frame.begin() + 4), "KVFC");
  Result<ControlMessage> decoded = decode_control(frame, kMaxControlBodyBytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
  EXPECT_EQ(decoded->type, ControlType::kSetupReply);
  EXPECT_EQ(decoded->body, body);
  const std::vector<std::uint8_t> metadata = decoded->body.at("metadata").get_binary();
  EXPECT_EQ(metadata, (std::vector<std::uint8_t>{0, 1, 2, 255}));
}

TEST(ControlCodec, EmptyBodyIsAnEmptyObject) {
  Result<ControlMessage> decoded = decode_control(encode_control_string(ControlType::kReady), 64);
  ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
  EXPECT_EQ(decoded->type, ControlType::kReady);
  EXPECT_TRUE(decoded->body.is_object());
  EXPECT_TRUE(decoded->body.empty());
}

TEST(ControlCodec, EveryTruncationIsIncompleteInAStreamAndCorruptAsAFrame) {
  const std::vector<std::uint8_t> frame = encode_control(ControlType::kResult, {{"bytes", 123456789}, {"path", "direct"}});
  for (std::size_t cut = 0; cut < frame.size(); ++cut) {
    const std::span<const std::uint8_t> prefix(frame.data(), cut);
    Result<std::optional<ControlTaken>> taken = take_control(prefix, kMaxControlBodyBytes);
    ASSERT_TRUE(taken.ok()) << "cut " << cut << ": " << taken.status().to_string();
    EXPECT_FALSE(taken->has_value()) << "cut " << cut;
    Result<ControlMessage> whole = decode_control(prefix, kMaxControlBodyBytes);
    ASSERT_FALSE(whole.ok()) << "cut " << cut;
    EXPECT_EQ(whole.status().code(), StatusCode::kCorrupt) << "cut " << cut;
  }
}

TEST(ControlCodec, OversizeIsRefusedFromTheHeaderAlone) {
  // Only the 12 header bytes: the reader must not wait for (or allocate) the body.
  const std::vector<std::uint8_t> bytes = header("KVFC", static_cast<std::uint32_t>(ControlType::kSetup), 4097);
  Result<std::optional<ControlTaken>> taken = take_control(bytes, 4096);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(taken.status().message().find("4097 bytes is over the limit of 4096"), std::string::npos)
      << taken.status().message();
  // At the cap it is a (still incomplete) frame.
  Result<std::optional<ControlTaken>> at_cap =
      take_control(header("KVFC", static_cast<std::uint32_t>(ControlType::kSetup), 4096), 4096);
  ASSERT_TRUE(at_cap.ok());
  EXPECT_FALSE(at_cap->has_value());
  // The hard ceiling holds whatever cap a caller passes.
  Result<std::optional<ControlTaken>> huge =
      take_control(header("KVFC", static_cast<std::uint32_t>(ControlType::kSetup), 0xFFFFFFFFu), 0xFFFFFFFFu);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kCorrupt);
}

TEST(ControlCodec, UnknownTypesAndBadMagicAreCorrupt) {
  for (std::uint32_t type : {0u, 12u, 31u, 35u, 47u, 52u, 999u, 0xFFFFFFFFu}) {
    Result<std::optional<ControlTaken>> taken = take_control(header("KVFC", type, 0), 1024);
    ASSERT_FALSE(taken.ok()) << "type " << type;
    EXPECT_EQ(taken.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(taken.status().message().find("unknown message type " + std::to_string(type)), std::string::npos)
        << taken.status().message();
  }
  Result<std::optional<ControlTaken>> foreign = take_control(header("KVFB", 1, 0), 1024);  // the old bench framing
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.status().message().find("bad magic"), std::string::npos);
}

TEST(ControlCodec, BytesAfterTheFrameAreCorruptButAStreamTakesFramesInTurn) {
  std::vector<std::uint8_t> two = encode_control(ControlType::kReady);
  const std::vector<std::uint8_t> second = encode_control(ControlType::kResult, {{"verified", true}});
  two.insert(two.end(), second.begin(), second.end());
  Result<ControlMessage> whole = decode_control(two, 1024);
  ASSERT_FALSE(whole.ok());
  EXPECT_NE(whole.status().message().find("bytes after the end of the frame"), std::string::npos);

  Result<std::optional<ControlTaken>> first = take_control(two, 1024);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->message.type, ControlType::kReady);
  const std::span<const std::uint8_t> rest = std::span<const std::uint8_t>(two).subspan((*first)->consumed);
  Result<std::optional<ControlTaken>> next = take_control(rest, 1024);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->message.type, ControlType::kResult);
  EXPECT_EQ((*next)->consumed, rest.size());
}

TEST(ControlCodec, BodiesThatAreNotOneCborObjectAreCorrupt) {
  const std::vector<std::vector<std::uint8_t>> bodies = {
      json::to_cbor(json::array({1, 2})),  // an array
      json::to_cbor(json(7)),              // a number
      {0xBF},                              // an unterminated map
      {0xA1, 0x61},                        // a map cut inside its key
      {0xFF, 0xFF, 0xFF},                  // not CBOR
      {},                                  // nothing
      // Maps and arrays that claim 2^63 entries: nlohmann throws on these even when asked
      // not to (out_of_range 408); the codec must turn that into Corrupt.
      {0xBB, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
      {0xA1, 0x61, 'a', 0x9B, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
  };
  for (const auto& body : bodies) {
    std::vector<std::uint8_t> frame =
        header("KVFC", static_cast<std::uint32_t>(ControlType::kVerifyResult), static_cast<std::uint32_t>(body.size()));
    frame.insert(frame.end(), body.begin(), body.end());
    Result<ControlMessage> decoded = decode_control(frame, 1024);
    ASSERT_FALSE(decoded.ok()) << body.size();
    EXPECT_EQ(decoded.status().code(), StatusCode::kCorrupt);
  }
  // An object followed by more CBOR inside the same body is not one object either.
  std::vector<std::uint8_t> body = json::to_cbor(json::object());
  body.push_back(0x01);
  std::vector<std::uint8_t> frame = header("KVFC", 1, static_cast<std::uint32_t>(body.size()));
  frame.insert(frame.end(), body.begin(), body.end());
  EXPECT_FALSE(decode_control(frame, 1024).ok());
}

TEST(ControlCodec, RandomCorruptionNeverCrashesAndNeverPassesAWrongLength) {
  const std::vector<std::uint8_t> frame =
      encode_control(ControlType::kKvPulled, {{"step", 3}, {"part", 1}, {"parts", 2}, {"bytes", 1 << 20}, {"last", false}});
  std::mt19937_64 rng(12345);
  int decoded_ok = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::uint8_t> bytes = frame;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<std::uint8_t>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 8), 0x5A);
    Result<ControlMessage> decoded = decode_control(bytes, 256);
    if (decoded.ok()) {
      ++decoded_ok;
      EXPECT_TRUE(decoded->body.is_object());
    } else {
      EXPECT_EQ(decoded.status().code(), StatusCode::kCorrupt) << decoded.status().to_string();
    }
  }
  EXPECT_LT(decoded_ok, 20000);
}

TEST(ControlCodec, TypedFieldsNameWhatIsWrong) {
  const json body{{"port", 70000}, {"zero", 0}, {"text", "x"}, {"negative", -1}, {"flag", true}};
  EXPECT_EQ(*control_uint(body, "zero"), 0u);
  Result<std::uint64_t> over = control_uint(body, "port", 65535);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("'port' is 70000, above 65535"), std::string::npos);
  EXPECT_FALSE(control_uint(body, "negative").ok());
  EXPECT_FALSE(control_uint(body, "text").ok());
  EXPECT_FALSE(control_uint(body, "missing").ok());
  EXPECT_EQ(*control_string(body, "text"), "x");
  EXPECT_FALSE(control_string(body, "port").ok());
  EXPECT_TRUE(*control_bool(body, "flag"));
  EXPECT_FALSE(control_bool(body, "zero").ok());
}

TEST(ControlCodec, ListeningPortIsCheckedAndTyped) {
  EXPECT_EQ(*listening_port({ControlType::kListening, {{"port", 5555}}}), 5555);
  EXPECT_FALSE(listening_port({ControlType::kListening, {{"port", 0}}}).ok());
  EXPECT_FALSE(listening_port({ControlType::kListening, {{"port", 65536}}}).ok());
  EXPECT_FALSE(listening_port({ControlType::kListening, {{"port", "5555"}}}).ok());
  Result<std::uint16_t> wrong = listening_port({ControlType::kReady, json::object()});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("got ready"), std::string::npos) << wrong.status().message();
}

TEST(KvMessages, RoundTripAndRefuseWhatIsNotServePull) {
  const KvPulledMessage sent{7, 2, 3, 1u << 30, true};
  Result<ControlMessage> message = parse_kv_message(format_pulled(sent));
  ASSERT_TRUE(message.ok()) << message.status().to_string();
  ASSERT_EQ(message->type, ControlType::kKvPulled);
  Result<KvPulledMessage> pulled = parse_pulled(message->body);
  ASSERT_TRUE(pulled.ok()) << pulled.status().to_string();
  EXPECT_EQ(pulled->step, 7u);
  EXPECT_EQ(pulled->part, 2u);
  EXPECT_EQ(pulled->parts, 3u);
  EXPECT_EQ(pulled->bytes, 1u << 30);
  EXPECT_TRUE(pulled->last);

  EXPECT_EQ(parse_kv_message(format_kv_hello())->type, ControlType::kKvHello);
  EXPECT_EQ(parse_kv_message(format_kv_welcome())->type, ControlType::kKvWelcome);
  Result<ControlMessage> refused = parse_kv_message(format_kv_refused("kv_heads 8 vs 4"));
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(*refused_reason(refused->body), "kv_heads 8 vs 4");
  // A very long reason is cut to fit the cap rather than dropped by the receiver.
  EXPECT_TRUE(parse_kv_message(format_kv_refused(std::string(100000, 'r'))).ok());

  EXPECT_FALSE(parse_kv_message("kv.hello").ok());  // the old text form
  EXPECT_FALSE(parse_kv_message(encode_control_string(ControlType::kSetup)).ok());
  EXPECT_FALSE(parse_kv_message(encode_control_string(ControlType::kKvHello, {{"pad", std::string(5000, 'p')}})).ok());
  for (const json& bad : {json{{"step", 1}, {"part", 0}, {"parts", 2}, {"bytes", 1}, {"last", false}},
                          json{{"step", 1}, {"part", 3}, {"parts", 2}, {"bytes", 1}, {"last", false}},
                          json{{"step", 1}, {"part", 1}, {"parts", 1ull << 33}, {"bytes", 1}, {"last", false}},
                          json{{"step", 1}, {"part", 1}, {"parts", 1}, {"bytes", 1}, {"last", 1}},
                          json{{"step", 1}, {"part", 1}, {"parts", 1}, {"last", false}}}) {
    EXPECT_FALSE(parse_pulled(bad).ok()) << bad.dump();
  }
}

}  // namespace
}  // namespace kvferry::cli
