// Reading the Prometheus text format back (kvferry/metrics.h).
#include <cmath>
#include <cstdlib>

#include "cluster/metrics_server.h"
#include "kvferry/metrics.h"

namespace kvferry {

namespace {

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

Status bad(std::size_t line, const std::string& why) {
  return Corrupt("metrics text, line " + std::to_string(line) + ": " + why);
}

Result<double> parse_value(std::string_view v, std::size_t line) {
  if (v == "+Inf" || v == "Inf") return HUGE_VAL;
  if (v == "-Inf") return -HUGE_VAL;
  if (v == "NaN") return NAN;
  const std::string s(v);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) return bad(line, "bad value '" + s.substr(0, 64) + "'");
  return d;
}

}  // namespace

Result<std::vector<MetricSample>> parse_metrics_text(std::string_view text) {
  std::vector<MetricSample> out;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    MetricSample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) ++i;
    if (i == 0) return bad(line_no, "expected a metric name");
    s.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{') {
      ++i;
      for (;;) {
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        const std::size_t k0 = i;
        while (i < line.size() && name_char(line[i], i == k0)) ++i;
        if (i == k0 || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"')
          return bad(line_no, "bad label in '" + s.name + "'");
        std::string key(line.substr(k0, i - k0));
        i += 2;
        std::string value;
        for (;;) {
          if (i >= line.size()) return bad(line_no, "unterminated label value");
          const char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i >= line.size()) return bad(line_no, "unterminated escape");
            const char e = line[i++];
            value += e == 'n' ? '\n' : e;
          } else {
            value += c;
          }
        }
        s.labels[std::move(key)] = std::move(value);
        if (i < line.size() && line[i] == ',') ++i;
      }
    }
    if (i >= line.size() || line[i] != ' ') return bad(line_no, "expected a space before the value");
    while (i < line.size() && line[i] == ' ') ++i;
    std::string_view rest = line.substr(i);
    const auto sp = rest.find(' ');  // an optional timestamp follows
    KVF_ASSIGN_OR_RETURN(s.value, parse_value(rest.substr(0, sp), line_no));
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::string> scrape_metrics(const std::string& host_port, std::chrono::milliseconds timeout) {
  std::string host;
  std::uint16_t port = 0;
  KVF_RETURN_IF_ERROR(detail::parse_host_port(host_port, &host, &port).with_context("metrics address"));
  return detail::scrape_metrics_text(host, port, timeout);
}

}  // namespace kvferry
