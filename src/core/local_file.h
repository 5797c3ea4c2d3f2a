// LocalFile: a file opened for Agent::register_file — the buffered descriptor, the
// O_DIRECT one when the file system allows it, and what O_DIRECT asks for (alignment).
// Owns both descriptors (closed on destruction). Immutable after open; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvferry/file.h"
#include "kvferry/status.h"

namespace kvferry::detail {

// The path a descriptor was opened as (for messages), or "fd N".
std::string path_of_fd(int fd);

class LocalFile {
 public:
  static Result<std::unique_ptr<LocalFile>> open(const std::string& path, const FileOpenOptions& options);
  // Works on a duplicate of `fd`; the caller keeps its own.
  static Result<std::unique_ptr<LocalFile>> adopt(int fd, const FileOpenOptions& options);
  ~LocalFile();
  LocalFile(const LocalFile&) = delete;
  LocalFile& operator=(const LocalFile&) = delete;

  int fd() const { return fd_; }
  int direct_fd() const { return direct_fd_; }  // -1 when O_DIRECT is not possible
  std::uint32_t direct_alignment() const { return alignment_; }
  std::uint64_t length() const { return length_; }
  const std::string& path() const { return path_; }

 private:
  LocalFile() = default;
  // After fd_ is set: checks the type, applies capacity, opens the O_DIRECT twin.
  Status finish_open(const std::string& reopen_path, int base_flags, const FileOpenOptions& options);

  int fd_ = -1;
  int direct_fd_ = -1;
  std::uint32_t alignment_ = 0;
  std::uint64_t length_ = 0;
  std::string path_;
};

}  // namespace kvferry::detail
