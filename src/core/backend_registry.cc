#include "core/backend_registry.h"

#include "kvferry/info.h"

namespace kvferry::detail {

void BackendRegistry::add(BackendFactory factory) { factories_.push_back(std::move(factory)); }

const BackendFactory* BackendRegistry::find(std::string_view name) const {
  for (const auto& f : factories_)
    if (f.name == name) return &f;
  return nullptr;
}

const BackendRegistry& BackendRegistry::builtin() {
  static const BackendRegistry registry = [] {
    BackendRegistry r;
    register_builtin_backends(r);
    return r;
  }();
  return registry;
}

}  // namespace kvferry::detail

namespace kvferry {

std::vector<BackendInfo> compiled_backends() {
  std::vector<BackendInfo> out;
  for (const auto& f : detail::BackendRegistry::builtin().factories()) {
    BackendInfo info;
    info.name = f.name;
    info.description = f.description;
    Status s = f.probe ? f.probe() : Status::Ok();
    info.usable = s.ok();
    if (!s.ok()) info.reason = s.message();
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace kvferry
