// SessionConnection: the BackendConnection of a backend whose per-peer session object
// already has the connection's methods (post, cancel, notify, health) and fail(). It
// owns one reference to the session; the backend's progress thread may hold others, so
// destroying the connection marks the session lost (its jobs fail with PeerLost) rather
// than waiting for the last reference to go.
#pragma once

#include <memory>
#include <string_view>

#include "core/backend.h"

namespace kvferry::detail {

template <typename Session>
class SessionConnection final : public BackendConnection {
 public:
  explicit SessionConnection(std::shared_ptr<Session> session) : session_(std::move(session)) {}
  ~SessionConnection() override { session_->fail(PeerLost("connection closed locally")); }
  Status post(const std::shared_ptr<TransferJob>& job) override { return session_->post(job); }
  void cancel(const std::shared_ptr<TransferJob>& job) override { session_->cancel(job); }
  Status notify(std::string_view message) override { return session_->notify(message); }
  Status health() const override { return session_->health(); }

 private:
  std::shared_ptr<Session> session_;
};

}  // namespace kvferry::detail
