// Thin wrappers over the POSIX calls Kiln uses for files. Each returns an
// absl::Status whose message names the call, the path and strerror(errno), so
// an operator can act on it without a debugger.
#ifndef KILN_COMMON_POSIX_H_
#define KILN_COMMON_POSIX_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kiln {

// Maps errno to a Status, e.g. PosixError("open /x", ENOENT) -> NOT_FOUND.
absl::Status PosixError(absl::string_view context, int error_number);

// Owns a file descriptor and closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release();
  void Reset();

 private:
  int fd_ = -1;
};

absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0);
// Writes all of `data`, retrying on EINTR and short writes.
absl::Status WriteAll(int fd, absl::string_view data, absl::string_view what);
// Reads up to `length` bytes at `offset`; fewer only at end of file.
absl::StatusOr<std::string> ReadAt(int fd, int64_t offset, int64_t length, absl::string_view what);
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
absl::Status Fsync(int fd, absl::string_view what);
// fsyncs a directory so that a rename or unlink inside it is durable.
absl::Status FsyncDirectory(const std::string& path);
absl::Status MakeDirectories(const std::string& path, mode_t mode = 0755);
// Writes `data` to `path` atomically: temp file in `tmp_dir`, fsync, rename,
// fsync of the parent. Readers see the old or the new content, never a mix.
// With `durable` false the fsyncs are skipped: still atomic for readers, but
// a machine crash may lose the file (for throwaway reports). With
// `sync_directory` false only the parent's fsync is skipped: a machine crash
// may lose the new name (the old content, or none, stays), but the name
// never shows partial content, since the data was synced before the rename.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data,
                                 const std::string& tmp_dir, mode_t mode, bool durable = true,
                                 bool sync_directory = true);
// Removes a tree (like rm -rf); a missing path is not an error.
absl::Status RemoveTree(const std::string& path);

// One message on a Unix socket, with descriptors passed alongside
// (SCM_RIGHTS), at most kMaxPassedDescriptors. Returns the bytes sent, or -1
// with errno; EINTR is retried and a closed peer is EPIPE, not SIGPIPE.
inline constexpr size_t kMaxPassedDescriptors = 4;
ssize_t SendWithDescriptors(int socket, const void* data, size_t size, absl::Span<const int> fds);
// Receives into `data`; the descriptors that came with it (close-on-exec)
// are appended to `fds`, up to kMaxPassedDescriptors in all (any others are
// closed). Returns the bytes received (0 when the peer closed), or -1 with
// errno.
ssize_t ReceiveWithDescriptors(int socket, void* data, size_t size, std::vector<UniqueFd>* fds);
// The same with one descriptor: `fd` < 0 sends none; `*fd` is -1 when none
// came (any beyond the first are closed).
ssize_t SendWithDescriptor(int socket, const void* data, size_t size, int fd);
ssize_t ReceiveWithDescriptor(int socket, void* data, size_t size, int* fd);

}  // namespace kiln

#endif  // KILN_COMMON_POSIX_H_
