// Status -> Python exceptions: every failed Status becomes a `kvferry.Error` subclass
// named after its code (kvferry/errors.py), whose message is the C++ message.
#pragma once

#include <nanobind/nanobind.h>

#include <exception>
#include <utility>

#include "kvferry/status.h"

namespace kvferry::python {

// Carries a failed Status through nanobind's exception translation.
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return status_.message().c_str(); }

 private:
  Status status_;
};

inline void check(const Status& status) {
  if (!status.ok()) throw StatusError(status);
}

template <typename T>
T unwrap(Result<T>&& result) {
  if (!result.ok()) throw StatusError(result.status());
  return std::move(result).value();
}

// The exception object (not raised) for a failed Status; None for OK.
nanobind::object exception_for(const Status& status);

void register_error_translator();

}  // namespace kvferry::python
