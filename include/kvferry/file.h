// kvferry/file.h — files as transfer memory (an agent is its own peer: KV offload).
//
// Contract
// - `Agent::register_file` opens a file (or duplicates a descriptor the caller owns) and
//   makes it one region of kind `file`: descriptors {offset, length, device = file id}.
//   A transfer between the agent's host (or GPU) memory and its own file is a "self"
//   transfer: `create_transfer(op, memory_list, agent.name(), file_list)`. A write moves
//   memory -> file (offload), a read file -> memory (onboard).
// - The agent owns what it opened and closes it in `deregister_file` (refused while a
//   posted transfer uses the file) or when the agent goes away. A descriptor passed to
//   `register_file_descriptor` stays the caller's: the agent works on a duplicate.
// - O_DIRECT: the agent also opens the file with O_DIRECT when the file system allows it.
//   A piece whose offset, length and memory address are aligned to what the file system
//   asks for bypasses the page cache; other pieces go through the page cache. Which one
//   served a piece never changes the bytes, only the speed.
// - Reads past the end of the file, short writes, a full disk (ENOSPC, EFBIG), I/O errors
//   and a file removed while registered fail the transfer with a message that names the
//   file and the offset; nothing is silently truncated.
// - Plain values; thread-safe free function.
#pragma once

#include <cstdint>
#include <string>

#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry {

struct FileOpenOptions {
  // Create the file when missing (mode 0644). Without it a missing file is NotFound.
  bool create = false;
  // Truncate to zero length on open (before `capacity` applies).
  bool truncate = false;
  // Open for reading only: transfers that write the file then fail at post.
  bool read_only = false;
  // Grow the file to at least this many bytes. With `preallocate` the space is reserved
  // (fallocate) so a full disk shows here, not in the middle of a transfer, and writes
  // never extend the file (extending O_DIRECT writes are serialised by most file
  // systems); without it the file is only extended (sparse).
  std::uint64_t capacity = 0;
  bool preallocate = true;
  // Try O_DIRECT for aligned pieces (see above). False: always through the page cache.
  bool direct = true;
};

struct FileRegistration {
  std::uint32_t id = 0;                // the `device` of this file's descriptors
  std::uint64_t length = 0;            // the region: offsets [0, length) (the file size after opening)
  bool direct = false;                 // whether aligned pieces can bypass the page cache
  std::uint32_t direct_alignment = 0;  // offset, length and address alignment of those pieces
  std::string path;

  // The whole file as one descriptor, {0, length, id}.
  DescriptorList region() const { return DescriptorList(MemoryKind::kFile, {Descriptor{0, length, id}}); }
  // One descriptor of this file.
  Descriptor at(std::uint64_t offset, std::uint64_t bytes) const { return Descriptor{offset, bytes, id}; }
};

struct FileInfo {
  bool exists = false;
  bool regular = false;    // a regular file (not a directory, device, fifo...)
  std::uint64_t size = 0;  // bytes; 0 when missing
};

// Whether `path` exists and how large it is (NIXL's queryMem role). A missing file is a
// FileInfo with exists == false, not an error; other failures (permissions) are IoError.
Result<FileInfo> query_file(const std::string& path);

}  // namespace kvferry
