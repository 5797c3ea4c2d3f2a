#include "errors.h"

#include <string>

namespace nb = nanobind;

namespace kvferry::python {
namespace {

// Class names in kvferry/errors.py, indexed by StatusCode.
const char* class_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "Error";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kNotFound: return "NotFound";
    case StatusCode::kAlreadyExists: return "AlreadyExists";
    case StatusCode::kOutOfRange: return "OutOfRange";
    case StatusCode::kFailedPrecondition: return "FailedPrecondition";
    case StatusCode::kUnavailable: return "Unavailable";
    case StatusCode::kPeerLost: return "PeerLost";
    case StatusCode::kTimeout: return "Timeout";
    case StatusCode::kCancelled: return "Cancelled";
    case StatusCode::kCorrupt: return "Corrupt";
    case StatusCode::kRemoteError: return "RemoteError";
    case StatusCode::kIoError: return "IoError";
    case StatusCode::kNotSupported: return "NotSupported";
    case StatusCode::kInternal: return "Internal";
  }
  return "Error";
}

nb::object exception_class(StatusCode code) {
  // Imported lazily: the module can be imported (e.g. by stub generators) on its own.
  nb::object errors = nb::module_::import_("kvferry.errors");
  return errors.attr(class_name(code));
}

}  // namespace

nb::object exception_for(const Status& status) {
  if (status.ok()) return nb::none();
  return exception_class(status.code())(nb::str(status.message().c_str(), status.message().size()));
}

void register_error_translator() {
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const StatusError& e) {
      nb::object cls = exception_class(e.status().code());
      const std::string& msg = e.status().message();
      PyErr_SetObject(cls.ptr(), nb::str(msg.c_str(), msg.size()).ptr());
    }
  });
}

}  // namespace kvferry::python
