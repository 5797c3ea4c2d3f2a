// Python arguments of a request: its notification message and its TransferOptions. One
// conversion shared by every create_transfer, notify and KvLink binding.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <string>

#include "kvferry/agent.h"

namespace kvferry::python {

// A message given as str (UTF-8) or bytes.
std::string message_of(nanobind::handle message);

// TransferOptions from the keyword arguments notification (None, str or bytes), tag and
// backend.
TransferOptions transfer_options(nanobind::handle notification, std::uint64_t tag, std::string backend);

}  // namespace kvferry::python
