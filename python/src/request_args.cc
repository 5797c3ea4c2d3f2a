#include "request_args.h"

#include <nanobind/stl/string.h>

namespace nb = nanobind;

namespace kvferry::python {

std::string message_of(nb::handle message) {
  if (nb::isinstance<nb::bytes>(message)) {
    nb::bytes b = nb::borrow<nb::bytes>(message);
    return std::string(b.c_str(), b.size());
  }
  return nb::cast<std::string>(message);
}

TransferOptions transfer_options(nb::handle notification, std::uint64_t tag, std::string backend) {
  TransferOptions options;
  if (notification.is_valid() && !notification.is_none()) options.notification = message_of(notification);
  options.tag = tag;
  options.backend = std::move(backend);
  return options;
}

}  // namespace kvferry::python
