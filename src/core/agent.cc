// Agent: the public face; every call forwards to Agent::Impl (agent_impl.h).
#include "core/agent_impl.h"

namespace kvferry {

Result<std::unique_ptr<Agent>> Agent::create(AgentOptions options) {
  KVF_ASSIGN_OR_RETURN(auto impl, Impl::create(std::move(options)));
  return std::unique_ptr<Agent>(new Agent(std::move(impl)));
}

Agent::Agent(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() { impl_->shutdown(); }

const std::string& Agent::name() const { return impl_->name(); }
std::string Agent::instance_id() const { return impl_->instance().hex(); }
std::vector<std::string> Agent::backends() const { return impl_->backend_names(); }
Status Agent::register_memory(const DescriptorList& regions) {
  if (regions.kind() == MemoryKind::kFile)
    return InvalidArgument("register_memory: file memory needs an open file; use register_file");
  return impl_->register_memory(regions);
}
Status Agent::register_memory(const DescriptorList& regions, std::string_view name) {
  if (regions.kind() == MemoryKind::kFile)
    return InvalidArgument("register_memory: file memory needs an open file; use register_file");
  if (name.empty()) return InvalidArgument("register_memory: the region name is empty");
  return impl_->register_memory(regions, name);
}
Result<SharedMemory> Agent::allocate_shared_memory(std::size_t bytes) {
  KVF_ASSIGN_OR_RETURN(auto segment, impl_->allocate_shared_segment(bytes));
  return SharedMemory(std::move(segment));
}
Status Agent::deregister_memory(const DescriptorList& regions) {
  if (regions.kind() == MemoryKind::kFile)
    return InvalidArgument("deregister_memory: files are deregistered with deregister_file");
  return impl_->deregister_memory(regions);
}
Result<FileRegistration> Agent::register_file(const std::string& path, FileOpenOptions options) {
  return impl_->register_file(path, options);
}
Result<FileRegistration> Agent::register_file_descriptor(int fd, FileOpenOptions options) {
  return impl_->register_file_descriptor(fd, options);
}
Status Agent::deregister_file(std::uint32_t file_id) { return impl_->deregister_file(file_id); }
Result<std::vector<std::uint8_t>> Agent::local_metadata() const { return impl_->local_metadata(); }
Result<std::string> Agent::load_remote(std::span<const std::uint8_t> metadata) {
  return impl_->load_remote(metadata);
}
Status Agent::forget_remote(std::string_view peer) { return impl_->forget_remote(peer); }
std::vector<std::string> Agent::remote_agents() const { return impl_->remote_agents(); }
Result<std::vector<DescriptorList>> Agent::remote_regions(std::string_view peer) const {
  return impl_->remote_regions(peer);
}
Result<DescriptorList> Agent::remote_named_regions(std::string_view peer, std::string_view name) const {
  return impl_->remote_named_regions(peer, name);
}
Result<std::vector<std::string>> Agent::remote_region_names(std::string_view peer) const {
  return impl_->remote_region_names(peer);
}
Status Agent::set_metadata_entry(std::string_view key, std::span<const std::uint8_t> value) {
  return impl_->set_metadata_entry(key, value);
}
Result<std::vector<std::uint8_t>> Agent::remote_metadata_entry(std::string_view peer, std::string_view key) const {
  return impl_->remote_metadata_entry(peer, key);
}
Result<std::uint16_t> Agent::listen(const std::string& address, std::uint16_t port) {
  return impl_->listen(address, port);
}
Result<std::string> Agent::fetch_remote(const std::string& host, std::uint16_t port, bool push_local,
                                        std::chrono::milliseconds timeout) {
  return impl_->fetch_remote(host, port, push_local, timeout);
}
Result<TransferRequest> Agent::create_transfer(TransferOp op, const DescriptorList& local, std::string_view peer,
                                               const DescriptorList& remote, TransferOptions options) {
  return impl_->create_transfer(op, local, peer, remote, std::move(options));
}
Result<PreparedList> Agent::prepare_local(const DescriptorList& list) { return impl_->prepare_local(list); }
Result<PreparedList> Agent::prepare_remote(std::string_view peer, const DescriptorList& list) {
  return impl_->prepare_remote(peer, list);
}
Result<TransferRequest> Agent::create_transfer(TransferOp op, const PreparedList& local,
                                               std::span<const std::uint32_t> local_indices,
                                               const PreparedList& remote,
                                               std::span<const std::uint32_t> remote_indices,
                                               TransferOptions options) {
  return impl_->create_transfer(op, local, local_indices, remote, remote_indices, std::move(options));
}
Result<PreparedLanes> Agent::prepare_local_lanes(const BlockLanes& lanes) {
  return impl_->prepare_lanes({}, true, lanes);
}
Result<PreparedLanes> Agent::prepare_remote_lanes(std::string_view peer, const BlockLanes& lanes) {
  return impl_->prepare_lanes(peer, false, lanes);
}
Result<TransferRequest> Agent::create_transfer(TransferOp op, const PreparedLanes& local, const PreparedLanes& remote,
                                               const LaneTransfer& transfer, TransferOptions options) {
  return impl_->create_transfer(op, local, remote, transfer, std::move(options));
}
Status Agent::notify(std::string_view peer, std::string_view message, std::uint64_t tag) {
  return impl_->notify(peer, message, tag);
}
std::vector<Notification> Agent::take_notifications() { return impl_->inbox().take({}); }
std::vector<Notification> Agent::take_notifications(const NotificationFilter& filter) {
  return impl_->inbox().take(filter);
}
bool Agent::wait_for_notifications(std::chrono::nanoseconds timeout) {
  return impl_->inbox().wait_nonempty(timeout);
}
std::vector<PeerEvent> Agent::take_peer_events() { return impl_->peer_events().take_all(); }
bool Agent::wait_for_peer_events(std::chrono::nanoseconds timeout) { return impl_->peer_events().wait_nonempty(timeout); }
std::vector<std::string> Agent::find_peers(std::string_view prefix) const { return impl_->find_peers(prefix); }
Result<std::vector<std::string>> Agent::wait_for_peers(std::string_view prefix, std::size_t count,
                                                       std::chrono::milliseconds timeout) {
  return impl_->wait_for_peers(prefix, count, timeout);
}
Status Agent::sync_metadata(std::chrono::milliseconds timeout) { return impl_->sync_metadata(timeout); }
std::string Agent::metrics_text() const { return impl_->metrics_text(); }
Result<std::uint16_t> Agent::metrics_port() const { return impl_->metrics_port(); }
Result<std::vector<Notification>> Agent::wait_for_notifications(std::span<const NotificationKey> keys,
                                                                std::chrono::nanoseconds timeout) {
  return impl_->inbox().wait_for(keys, timeout);
}
std::uint64_t Agent::dropped_notifications() const { return impl_->inbox().refused(); }

}  // namespace kvferry
