// A decode rank's report (tools/tp/tp_rank_result.h) as its parent reads it from another
// process: every field round-trips; a body cut short, a field missing or of the wrong
// type, or text that is not JSON at all becomes Corrupt naming the field, never a throw.
#include <gtest/gtest.h>

#include <string>

#include "tp/tp_rank_result.h"

namespace kvferry::cli {
namespace {

using nlohmann::json;

TpRankResult sample() {
  TpRankResult r;
  r.decode_rank = 3;
  r.sources = {"'tp-prefill-0' (prefill rank 0, heads [0, 4))", "'tp-prefill-1' (prefill rank 1, heads [4, 8))"};
  r.bytes = 335544320;
  r.ms = {101.5, 99.25};
  r.start_ns = {1000, 2000000};
  r.end_ns = {101501000, 101250000};
  r.path = "direct";
  r.pieces = 22;
  r.scatter_ms = 0.5;
  r.verified = true;
  r.message = "";
  r.failed = false;
  return r;
}

TEST(TpRankResult, RoundTripsEveryField) {
  const TpRankResult in = sample();
  Result<TpRankResult> out = TpRankResult::from_json(in.to_json());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->decode_rank, 3u);
  EXPECT_EQ(out->sources, in.sources);
  EXPECT_EQ(out->bytes, in.bytes);
  EXPECT_EQ(out->ms, in.ms);
  EXPECT_EQ(out->start_ns, in.start_ns);
  EXPECT_EQ(out->end_ns, in.end_ns);
  EXPECT_EQ(out->path, "direct");
  EXPECT_EQ(out->pieces, 22u);
  EXPECT_EQ(out->scatter_ms, 0.5);
  EXPECT_TRUE(out->verified);
  EXPECT_FALSE(out->failed);
}

TEST(TpRankResult, EachMissingFieldIsCorruptNamingIt) {
  const json whole = sample().to_json();
  for (const auto& [key, value] : whole.items()) {
    json cut = whole;
    cut.erase(key);
    Result<TpRankResult> r = TpRankResult::from_json(cut);
    ASSERT_FALSE(r.ok()) << "without " << key;
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << key;
    EXPECT_NE(r.status().to_string().find("'" + key + "'"), std::string::npos) << r.status().to_string();
  }
}

TEST(TpRankResult, MistypedFieldsAreCorruptNamingThem) {
  const json whole = sample().to_json();
  const std::pair<const char*, json> cases[] = {
      {"decode_rank", "3"},          {"decode_rank", -1},           {"decode_rank", 1ull << 40},
      {"decode_rank", 2.5},          {"sources", "prefill-0"},     {"sources", json::array({1, 2})},
      {"bytes", -5},                 {"bytes", json::object()},    {"ms", json::array({"1"})},
      {"ms", 7},                     {"start_ns", json::array({1.5})}, {"end_ns", json::array({18446744073709551615ull})},
      {"path", 1},                   {"pieces", true},             {"scatter_ms", "0.5"},
      {"verified", 1},               {"message", nullptr},         {"failed", "false"},
  };
  for (const auto& [key, value] : cases) {
    json bad = whole;
    bad[key] = value;
    Result<TpRankResult> r = TpRankResult::from_json(bad);
    ASSERT_FALSE(r.ok()) << key << " = " << value.dump();
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << key;
    EXPECT_NE(r.status().to_string().find(std::string("'") + key + "'"), std::string::npos) << r.status().to_string();
  }
}

TEST(TpRankResult, TruncatedTextAndNonObjectsAreCorrupt) {
  const std::string text = sample().to_json().dump();
  for (std::size_t cut = 0; cut < text.size(); ++cut) {
    // What the framing hands over for a cut body: a parse failure (discarded) or,
    // for a prefix that still parses (none here but "" and digits), a non-object.
    const json j = json::parse(text.substr(0, cut), nullptr, false);
    Result<TpRankResult> r = TpRankResult::from_json(j);
    ASSERT_FALSE(r.ok()) << "cut " << cut;
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << "cut " << cut;
  }
  for (const json& j : {json(nullptr), json(3), json("x"), json::array({sample().to_json()})}) {
    Result<TpRankResult> r = TpRankResult::from_json(j);
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_NE(r.status().to_string().find("not a JSON object"), std::string::npos) << r.status().to_string();
  }
}

TEST(TpRankResult, OversizedArraysAreCorrupt) {
  json big = sample().to_json();
  big["ms"] = json::array();
  for (int i = 0; i < (1 << 16) + 1; ++i) big["ms"].push_back(1.0);
  Result<TpRankResult> r = TpRankResult::from_json(big);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("'ms'"), std::string::npos) << r.status().to_string();
}

}  // namespace
}  // namespace kvferry::cli
