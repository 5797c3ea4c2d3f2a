// kvferry/status.h — the one error mechanism of the public API.
//
// Contract
// - Every fallible call returns `Status` or `Result<T>`; no exception crosses the API.
// - `Status` is cheap on success (one null pointer); on failure it carries a code and a
//   message that names what was wrong and where.
// - Both types are values: copyable, movable, safe to hand between threads. A single
//   object is not synchronised; do not mutate one object from two threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvferry {

// Broad classes of failure. Callers branch on these; the message is for humans.
enum class StatusCode : std::uint8_t {
  kOk = 0,
  kInvalidArgument,   // the caller passed something malformed (lengths, indices, flags)
  kNotFound,          // unknown peer, region, backend, prepared list
  kAlreadyExists,     // overlapping registration, duplicate name
  kOutOfRange,        // a descriptor outside registered memory
  kFailedPrecondition,// state forbids it now (e.g. region in use by a posted transfer)
  kUnavailable,       // no backend can serve it here, or a peer is unreachable
  kPeerLost,          // the peer died, closed, or stopped answering within the bound
  kTimeout,           // a wait ran out of time; the operation may still complete
  kCancelled,         // the caller cancelled
  kCorrupt,           // bytes from outside (metadata, frames) failed validation
  kRemoteError,       // the peer refused or failed a request; message says why
  kIoError,           // an OS call failed; message carries errno text
  kNotSupported,      // a backend or build lacks the capability
  kInternal,          // a bug in kvferry: please report
};

std::string_view to_string(StatusCode code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() noexcept { return Status(); }

  bool ok() const noexcept { return state_ == nullptr; }
  StatusCode code() const noexcept { return state_ ? state_->code : StatusCode::kOk; }
  // Empty for OK.
  const std::string& message() const noexcept;
  // "ok" or "<code>: <message>".
  std::string to_string() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status with_context(std::string_view context) const;

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const State> state_;
};

// Shorthands that read well at call sites: `return InvalidArgument("...")`.
Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status AlreadyExists(std::string message);
Status OutOfRange(std::string message);
Status FailedPrecondition(std::string message);
Status Unavailable(std::string message);
Status PeerLost(std::string message);
Status Timeout(std::string message);
Status Cancelled(std::string message);
Status Corrupt(std::string message);
Status RemoteError(std::string message);
Status IoError(std::string message);  // appends nothing; use IoErrorFromErrno for errno
Status IoErrorFromErrno(std::string_view what, int err);
Status NotSupported(std::string message);
Status Internal(std::string message);

// A value or a failed Status. Accessing the value of a failed Result is a bug and aborts.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_ = Internal("Result constructed from an OK status without a value");
  }

  bool ok() const noexcept { return value_.has_value(); }
  const Status& status() const noexcept { return status_; }

  T& value() & { check(); return *value_; }
  const T& value() const& { check(); return *value_; }
  T&& value() && { check(); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const;
  std::optional<T> value_;
  Status status_;
};

[[noreturn]] void AbortOnBadResultAccess(const Status& status) noexcept;

template <typename T>
void Result<T>::check() const {
  if (!value_) AbortOnBadResultAccess(status_);
}

}  // namespace kvferry

// Early return of a failed Status from a function returning Status or Result<T>.
#define KVF_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::kvferry::Status kvf_status_ = (expr);         \
    if (!kvf_status_.ok()) return kvf_status_;      \
  } while (0)

#define KVF_CONCAT_INNER_(a, b) a##b
#define KVF_CONCAT_(a, b) KVF_CONCAT_INNER_(a, b)
// `KVF_ASSIGN_OR_RETURN(auto x, Foo());` — x gets the value, or the Status is returned.
#define KVF_ASSIGN_OR_RETURN(lhs, expr) \
  KVF_ASSIGN_OR_RETURN_IMPL_(KVF_CONCAT_(kvf_result_, __LINE__), lhs, expr)
#define KVF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
