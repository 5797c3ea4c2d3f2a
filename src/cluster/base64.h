// Base64 (RFC 4648, with padding) for etcd's JSON gateway, which carries keys and values
// as base64 strings. decode() treats its input as hostile: any bad character or length is
// an error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

std::string base64_encode(std::span<const std::uint8_t> bytes);
inline std::string base64_encode(std::string_view text) {
  return base64_encode(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}
Result<std::vector<std::uint8_t>> base64_decode(std::string_view text);

}  // namespace kvferry::detail
