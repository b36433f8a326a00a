#include "common/posix.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kiln {

absl::Status PosixError(absl::string_view context, int error_number) {
  return absl::ErrnoToStatus(error_number, context);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.Release();
  }
  return *this;
}

int UniqueFd::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::Reset() {
  if (fd_ >= 0) close(fd_);  // close() errors on a read-only or fsynced fd carry no data loss.
  fd_ = -1;
}

absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError(absl::StrCat("open ", path), errno);
  return UniqueFd(fd);
}

absl::Status WriteAll(int fd, absl::string_view data, absl::string_view what) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(absl::StrCat("write ", what), errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadAt(int fd, int64_t offset, int64_t length, absl::string_view what) {
  std::string out(static_cast<size_t>(length), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, offset + static_cast<int64_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(absl::StrCat("read ", what), errno);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  // Read to end of file: /proc and cgroup files report a size of 0 or 4096.
  std::string out;
  char buffer[65536];
  while (true) {
    ssize_t n = read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(absl::StrCat("read ", path), errno);
    }
    if (n == 0) return out;
    out.append(buffer, static_cast<size_t>(n));
  }
}

absl::Status Fsync(int fd, absl::string_view what) {
  if (fsync(fd) != 0) return PosixError(absl::StrCat("fsync ", what), errno);
  return absl::OkStatus();
}

absl::Status FsyncDirectory(const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_DIRECTORY));
  return Fsync(fd.get(), path);
}

absl::Status MakeDirectories(const std::string& path, mode_t mode) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) return PosixError(absl::StrCat("mkdir -p ", path), error.value());
  if (chmod(path.c_str(), mode) != 0) return PosixError(absl::StrCat("chmod ", path), errno);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data,
                                 const std::string& tmp_dir, mode_t mode, bool durable,
                                 bool sync_directory) {
  std::string tmp = absl::StrCat(tmp_dir, "/atomic-", getpid(), "-", std::random_device{}());
  {
    ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL, mode));
    absl::Status written = WriteAll(fd.get(), data, tmp);
    if (written.ok() && durable) written = Fsync(fd.get(), tmp);
    if (!written.ok()) {
      unlink(tmp.c_str());
      return written;
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int error = errno;
    unlink(tmp.c_str());
    return PosixError(absl::StrCat("rename ", tmp, " to ", path), error);
  }
  if (!durable || !sync_directory) return absl::OkStatus();
  return FsyncDirectory(std::filesystem::path(path).parent_path());
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code error;
  std::filesystem::remove_all(path, error);
  if (error) return PosixError(absl::StrCat("rm -rf ", path), error.value());
  return absl::OkStatus();
}

ssize_t SendWithDescriptors(int socket, const void* data, size_t size, absl::Span<const int> fds) {
  if (fds.size() > kMaxPassedDescriptors) {
    errno = EINVAL;
    return -1;
  }
  struct iovec io = {const_cast<void*>(data), size};
  alignas(struct cmsghdr) char control[CMSG_SPACE(kMaxPassedDescriptors * sizeof(int))] = {};
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    struct cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(socket, &message, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

ssize_t ReceiveWithDescriptors(int socket, void* data, size_t size, std::vector<UniqueFd>* fds) {
  struct iovec io = {data, size};
  // Room for more than we keep: whatever else a peer sends is closed, not
  // leaked.
  alignas(struct cmsghdr) char control[CMSG_SPACE(2 * kMaxPassedDescriptors * sizeof(int))];
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (struct cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(header) + i * sizeof(int), sizeof received);
      UniqueFd owned(received);
      if (fds->size() < kMaxPassedDescriptors) fds->push_back(std::move(owned));
    }
  }
  return n;
}

ssize_t SendWithDescriptor(int socket, const void* data, size_t size, int fd) {
  if (fd < 0) return SendWithDescriptors(socket, data, size, {});
  return SendWithDescriptors(socket, data, size, {fd});
}

ssize_t ReceiveWithDescriptor(int socket, void* data, size_t size, int* fd) {
  std::vector<UniqueFd> fds;
  const ssize_t n = ReceiveWithDescriptors(socket, data, size, &fds);
  *fd = fds.empty() ? -1 : fds.front().Release();
  return n;  // any descriptors after the first are closed with `fds`
}

}  // namespace kiln
