#include "core/local_file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace kvferry {

namespace {

Result<std::uint64_t> size_of(int fd, const struct stat& st, const std::string& path) {
  if (S_ISREG(st.st_mode)) return static_cast<std::uint64_t>(st.st_size);
  std::uint64_t bytes = 0;
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0)
    return IoErrorFromErrno("size of block device '" + path + "'", errno);
  return bytes;
}

}  // namespace

Result<FileInfo> query_file(const std::string& path) {
  FileInfo info;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return info;
    return IoErrorFromErrno("query_file '" + path + "'", errno);
  }
  info.exists = true;
  info.regular = S_ISREG(st.st_mode);
  if (info.regular) info.size = static_cast<std::uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      std::uint64_t bytes = 0;
      if (ioctl(fd, BLKGETSIZE64, &bytes) == 0) info.size = bytes;
      ::close(fd);
    }
  }
  return info;
}

namespace detail {

std::string path_of_fd(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[4096];
  const ssize_t n = ::readlink(link, target, sizeof target - 1);
  return n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "fd " + std::to_string(fd);
}

LocalFile::~LocalFile() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<LocalFile>> LocalFile::open(const std::string& path, const FileOpenOptions& options) {
  if (path.empty()) return InvalidArgument("register_file: empty path");
  if (options.read_only && (options.truncate || options.create))
    return InvalidArgument("register_file '" + path + "': read_only excludes create and truncate");
  int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  int open_flags = flags | (options.create ? O_CREAT : 0) | (options.truncate ? O_TRUNC : 0);
  std::unique_ptr<LocalFile> file(new LocalFile());
  file->path_ = path;
  file->fd_ = ::open(path.c_str(), open_flags, 0644);
  if (file->fd_ < 0) {
    if (errno == ENOENT)
      return NotFound("register_file: '" + path + "' does not exist (FileOpenOptions::create makes it)");
    return IoErrorFromErrno("register_file: opening '" + path + "'", errno);
  }
  KVF_RETURN_IF_ERROR(file->finish_open(path, flags, options));
  return file;
}

Result<std::unique_ptr<LocalFile>> LocalFile::adopt(int fd, const FileOpenOptions& options) {
  if (fd < 0) return InvalidArgument("register_file_descriptor: negative descriptor");
  if (options.create || options.truncate)
    return InvalidArgument("register_file_descriptor: create and truncate apply to paths only");
  int status = fcntl(fd, F_GETFL);
  if (status < 0) return IoErrorFromErrno("register_file_descriptor: fd " + std::to_string(fd), errno);
  const int access = status & O_ACCMODE;
  if (access == O_WRONLY)
    return InvalidArgument("register_file_descriptor: fd is write-only; open it O_RDWR");
  if (access == O_RDONLY && !options.read_only)
    return InvalidArgument("register_file_descriptor: fd is read-only; set FileOpenOptions::read_only");
  std::unique_ptr<LocalFile> file(new LocalFile());
  file->path_ = "fd " + std::to_string(fd);
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[4096];
  ssize_t n = ::readlink(link, target, sizeof target - 1);
  if (n > 0) file->path_ = std::string(target, static_cast<std::size_t>(n));
  file->fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (file->fd_ < 0)
    return IoErrorFromErrno("register_file_descriptor: dup of fd " + std::to_string(fd), errno);
  KVF_RETURN_IF_ERROR(file->finish_open(link, (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC, options));
  return file;
}

Status LocalFile::finish_open(const std::string& reopen_path, int base_flags,
                              const FileOpenOptions& options) {
  struct stat st {};
  if (fstat(fd_, &st) != 0) return IoErrorFromErrno("register_file: fstat '" + path_ + "'", errno);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return InvalidArgument("register_file: '" + path_ + "' is not a regular file or block device");
  KVF_ASSIGN_OR_RETURN(std::uint64_t size, size_of(fd_, st, path_));
  if (options.capacity > size) {
    if (options.read_only || !S_ISREG(st.st_mode))
      return InvalidArgument("register_file: '" + path_ + "' holds " + std::to_string(size) +
                             " bytes and cannot grow to the capacity of " + std::to_string(options.capacity));
    const auto capacity = static_cast<off_t>(options.capacity);
    bool grown = false;
    if (options.preallocate) {
      if (fallocate(fd_, 0, 0, capacity) == 0) {
        grown = true;
      } else if (errno == ENOSPC || errno == EFBIG || errno == EDQUOT) {
        return IoErrorFromErrno(
            "register_file: no space for " + std::to_string(options.capacity) + " bytes of '" + path_ + "'",
            errno);
      }  // EOPNOTSUPP and friends: extend it instead
    }
    if (!grown && ftruncate(fd_, capacity) != 0)
      return IoErrorFromErrno(
          "register_file: growing '" + path_ + "' to " + std::to_string(options.capacity) + " bytes", errno);
    size = options.capacity;
  }
  length_ = size;
  if (length_ == 0)
    return InvalidArgument("register_file: '" + path_ + "' is empty; give FileOpenOptions::capacity");
  if (!options.direct) return Status::Ok();
  direct_fd_ = ::open(reopen_path.c_str(), base_flags | O_DIRECT);
  if (direct_fd_ < 0) return Status::Ok();  // the file system refuses O_DIRECT: page cache only
  struct statx sx {};
  alignment_ = 4096;
  if (statx(fd_, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
    if (sx.stx_dio_mem_align == 0 || sx.stx_dio_offset_align == 0) {  // says: no O_DIRECT here
      ::close(direct_fd_);
      direct_fd_ = -1;
      alignment_ = 0;
      return Status::Ok();
    }
    alignment_ = std::max(sx.stx_dio_mem_align, sx.stx_dio_offset_align);
  }
  return Status::Ok();
}

}  // namespace detail
}  // namespace kvferry
