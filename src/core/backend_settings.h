// Reading a backend's settings ("<backend>.<key>" in AgentOptions::backend_params, handed
// to the backend with the prefix stripped). One parser, one error wording, for all.
#pragma once

#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry::detail {

// The integer setting `key` in [lo, hi], or `fallback` when it is not set.
inline Result<std::uint64_t> integer_setting(const std::map<std::string, std::string>& params,
                                             std::string_view backend, const std::string& key, std::uint64_t lo,
                                             std::uint64_t hi, std::uint64_t fallback) {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  const std::string& text = it->second;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
    return InvalidArgument(std::string(backend) + "." + key + "='" + text + "' must be an integer in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace kvferry::detail
