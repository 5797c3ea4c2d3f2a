// Agent::Impl's files: a registered file is one region of kind `file` {device = file id,
// address = 0, length = file size}, whose descriptors travel to the backends that move
// file memory inside RegionInfo (never in metadata).
#include "core/agent_impl.h"

namespace kvferry {

namespace {

bool moves_files(const detail::Backend& b) {
  const auto caps = b.capabilities();
  return caps.local_kinds.contains(MemoryKind::kFile) || caps.remote_kinds.contains(MemoryKind::kFile);
}

}  // namespace

Result<FileRegistration> Agent::Impl::register_file(const std::string& path, const FileOpenOptions& options) {
  KVF_ASSIGN_OR_RETURN(auto file, detail::LocalFile::open(path, options));
  return register_local_file(std::move(file));
}

Result<FileRegistration> Agent::Impl::register_file_descriptor(int fd, const FileOpenOptions& options) {
  KVF_ASSIGN_OR_RETURN(auto file, detail::LocalFile::adopt(fd, options));
  return register_local_file(std::move(file));
}

Result<FileRegistration> Agent::Impl::register_local_file(std::unique_ptr<detail::LocalFile> file) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  std::lock_guard reg(registration_mu_);
  std::vector<detail::Backend*> takers;
  for (const auto& b : backends_)
    if (moves_files(*b)) takers.push_back(b.get());
  if (takers.empty())
    return NotSupported("register_file: no started backend moves file memory (the file and gds backends do)");
  const std::uint32_t id = next_file_id_;
  DescriptorList list(MemoryKind::kFile, {Descriptor{0, file->length(), id}});
  KVF_ASSIGN_OR_RETURN(auto planned, registry_->plan_add(list));
  planned[0].file_fd = file->fd();
  planned[0].file_direct_fd = file->direct_fd();
  planned[0].file_direct_alignment = file->direct_alignment();
  for (std::size_t bi = 0; bi < takers.size(); ++bi) {
    Status s = takers[bi]->register_region(planned[0]);
    if (s.ok()) continue;
    for (std::size_t bj = 0; bj < bi; ++bj) takers[bj]->deregister_region(planned[0].id).ok();
    return s.with_context("register_file '" + file->path() + "': backend '" +
                          std::string(takers[bi]->name()) + "'");
  }
  registry_->commit_add(planned);
  ++next_file_id_;
  FileRegistration out;
  out.id = id;
  out.length = file->length();
  out.direct = file->direct_fd() >= 0;
  out.direct_alignment = file->direct_alignment();
  out.path = file->path();
  files_.emplace(id, std::move(file));
  refresh_self_entry();
  return out;
}

Status Agent::Impl::deregister_file(std::uint32_t file_id) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  std::lock_guard reg(registration_mu_);
  auto it = files_.find(file_id);
  if (it == files_.end())
    return NotFound("deregister_file: no registered file has id " + std::to_string(file_id));
  DescriptorList list(MemoryKind::kFile, {Descriptor{0, it->second->length(), file_id}});
  KVF_ASSIGN_OR_RETURN(auto removed, registry_->remove(list));  // refused while a transfer uses it
  refresh_self_entry();
  Status first;
  for (const auto& b : backends_) {
    if (!moves_files(*b)) continue;
    Status s = b->deregister_region(removed[0].id);
    if (!s.ok() && first.ok())
      first = s.with_context("deregister_file: backend '" + std::string(b->name()) + "'");
  }
  files_.erase(it);  // closes the descriptors: no backend uses them any more
  return first;
}

}  // namespace kvferry
