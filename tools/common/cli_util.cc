#include "common/cli_util.h"

#include <cctype>
#include <charconv>
#include <limits>

namespace kvferry::cli {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::uint64_t> multiplier_of(std::string_view suffix) {
  const std::string s = lower(suffix);
  if (s.empty() || s == "b") return 1;
  if (s == "k" || s == "kb" || s == "kib") return std::uint64_t{1} << 10;
  if (s == "m" || s == "mb" || s == "mib") return std::uint64_t{1} << 20;
  if (s == "g" || s == "gb" || s == "gib") return std::uint64_t{1} << 30;
  return std::nullopt;
}

}  // namespace

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  std::uint64_t number = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, error] = std::from_chars(first, last, number);
  if (error != std::errc() || end == first) return std::nullopt;
  std::string_view suffix(end, static_cast<std::size_t>(last - end));
  while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  const auto multiplier = multiplier_of(suffix);
  if (!multiplier) return std::nullopt;
  if (number > std::numeric_limits<std::uint64_t>::max() / *multiplier) return std::nullopt;
  return number * *multiplier;
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  std::uint64_t value = bytes;
  while (value >= 1024 && value % 1024 == 0 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return std::to_string(value) + " " + kUnits[unit];
}

std::optional<HostPort> parse_host_port(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // bracketed IPv6 literal
  }
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (error != std::errc() || end != port_text.data() + port_text.size() || port > 65535 ||
      port_text.empty() || host.empty()) {
    return std::nullopt;
  }
  return HostPort{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace kvferry::cli
