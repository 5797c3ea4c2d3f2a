#include "tp/tp_rank_result.h"

#include <limits>

namespace kvferry::cli {
namespace {

using nlohmann::json;

// A rank reports one entry per prompt; a prompt count far beyond any run is corrupt.
constexpr std::size_t kMaxEntries = 1u << 16;

Status bad(const char* field, const char* expected) {
  return Corrupt(std::string("decode rank result: field '") + field + "' is missing or not " + expected);
}

template <typename T>
bool unsigned_value(const json& v, T* out) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) return false;
  const std::uint64_t u = v.get<std::uint64_t>();
  if (u > std::numeric_limits<T>::max()) return false;
  *out = static_cast<T>(u);
  return true;
}

template <typename T>
Status read_unsigned(const json& j, const char* field, T* out) {
  const auto it = j.find(field);
  if (it == j.end() || !unsigned_value(*it, out)) return bad(field, "an unsigned integer in range");
  return Status::Ok();
}

Status read_double(const json& j, const char* field, double* out) {
  const auto it = j.find(field);
  if (it == j.end() || !it->is_number()) return bad(field, "a number");
  *out = it->get<double>();
  return Status::Ok();
}

Status read_bool(const json& j, const char* field, bool* out) {
  const auto it = j.find(field);
  if (it == j.end() || !it->is_boolean()) return bad(field, "true or false");
  *out = it->get<bool>();
  return Status::Ok();
}

Status read_string(const json& j, const char* field, std::string* out) {
  const auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return bad(field, "a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

// An array of at most kMaxEntries elements, each accepted by `take`.
template <typename T, typename Take>
Status read_array(const json& j, const char* field, const char* expected, std::vector<T>* out, Take take) {
  const auto it = j.find(field);
  if (it == j.end() || !it->is_array() || it->size() > kMaxEntries) return bad(field, expected);
  out->clear();
  out->reserve(it->size());
  for (const json& v : *it) {
    T value{};
    if (!take(v, &value)) return bad(field, expected);
    out->push_back(std::move(value));
  }
  return Status::Ok();
}

}  // namespace

nlohmann::json TpRankResult::to_json() const {
  return json{{"decode_rank", decode_rank}, {"sources", sources}, {"bytes", bytes},   {"ms", ms},
              {"start_ns", start_ns},       {"end_ns", end_ns},   {"path", path},     {"pieces", pieces},
              {"scatter_ms", scatter_ms},   {"verified", verified}, {"message", message}, {"failed", failed}};
}

Result<TpRankResult> TpRankResult::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return Corrupt("decode rank result: not a JSON object");
  TpRankResult r;
  KVF_RETURN_IF_ERROR(read_unsigned(j, "decode_rank", &r.decode_rank));
  KVF_RETURN_IF_ERROR(read_array(j, "sources", "an array of strings", &r.sources, [](const json& v, std::string* s) {
    if (!v.is_string()) return false;
    *s = v.get<std::string>();
    return true;
  }));
  KVF_RETURN_IF_ERROR(read_unsigned(j, "bytes", &r.bytes));
  KVF_RETURN_IF_ERROR(read_array(j, "ms", "an array of numbers", &r.ms, [](const json& v, double* d) {
    if (!v.is_number()) return false;
    *d = v.get<double>();
    return true;
  }));
  auto integer = [](const json& v, std::int64_t* n) {
    if (!v.is_number_integer()) return false;
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t{std::numeric_limits<std::int64_t>::max()})
      return false;
    *n = v.get<std::int64_t>();
    return true;
  };
  KVF_RETURN_IF_ERROR(read_array(j, "start_ns", "an array of integers", &r.start_ns, integer));
  KVF_RETURN_IF_ERROR(read_array(j, "end_ns", "an array of integers", &r.end_ns, integer));
  KVF_RETURN_IF_ERROR(read_string(j, "path", &r.path));
  KVF_RETURN_IF_ERROR(read_unsigned(j, "pieces", &r.pieces));
  KVF_RETURN_IF_ERROR(read_double(j, "scatter_ms", &r.scatter_ms));
  KVF_RETURN_IF_ERROR(read_bool(j, "verified", &r.verified));
  KVF_RETURN_IF_ERROR(read_string(j, "message", &r.message));
  KVF_RETURN_IF_ERROR(read_bool(j, "failed", &r.failed));
  return r;
}

}  // namespace kvferry::cli
