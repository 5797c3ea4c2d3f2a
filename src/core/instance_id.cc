#include "core/instance_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <utility>

namespace kvferry::detail {
namespace {

std::mutex g_mu;
std::set<std::pair<std::uint64_t, std::uint64_t>>& alive_set() {
  static auto* s = new std::set<std::pair<std::uint64_t, std::uint64_t>>();  // never destroyed: agents may outlive statics
  return *s;
}

}  // namespace

std::string InstanceId::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

InstanceId random_instance_id() {
  InstanceId id;
  std::uint64_t words[2] = {0, 0};
  std::size_t got = 0;
  auto* bytes = reinterpret_cast<std::uint8_t*>(words);
  while (got < sizeof words) {
    ssize_t n = ::getrandom(bytes + got, sizeof words - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
    else if (n < 0 && errno != EINTR) break;
  }
  if (got < sizeof words) {  // no getrandom (very old kernel): the C++ library's entropy
    std::random_device rd;
    for (auto& w : words) w = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }
  id.hi = words[0];
  id.lo = words[1];
  if (id.zero()) id.lo = 1;
  return id;
}

void mark_instance_alive(const InstanceId& id) {
  std::lock_guard lock(g_mu);
  alive_set().insert({id.hi, id.lo});
}

void mark_instance_gone(const InstanceId& id) {
  std::lock_guard lock(g_mu);
  alive_set().erase({id.hi, id.lo});
}

bool instance_alive_here(const InstanceId& id) {
  std::lock_guard lock(g_mu);
  return alive_set().count({id.hi, id.lo}) != 0;
}

}  // namespace kvferry::detail
