#include "common/path_beneath.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace kiln {
namespace {

// Trees deeper than this are flattened while they are removed (see
// RemoveTreeAt), so that neither the stack nor the fd table grows with a
// depth an action chose.
constexpr int kMaxRemovalDepth = 64;

absl::Status SymlinkError(absl::string_view relative) {
  return absl::FailedPreconditionError(absl::StrCat(
      "\"", relative, "\" passes through a symlink or leaves its directory; Kiln never follows "
      "symlinks in an action's directory"));
}

absl::Status OpenError(absl::string_view relative, int error) {
  if (error == ELOOP || error == EXDEV) return SymlinkError(relative);
  if (error == ENOTDIR) {
    return absl::FailedPreconditionError(
        absl::StrCat("\"", relative, "\" has a component that is not a directory"));
  }
  return PosixError(absl::StrCat("open \"", relative, "\""), error);
}

// openat2 with the kernel's guarantees; -1/ENOSYS where the kernel is older.
int OpenAt2(int dirfd, const char* path, int flags, mode_t mode) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd;
  do {
    fd = static_cast<int>(syscall(SYS_openat2, dirfd, path, &how, sizeof how));
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return fd;
}

// The same walk by hand: each parent opened O_NOFOLLOW | O_DIRECTORY from the
// previous fd, so a symlink fails with ELOOP or ENOTDIR at any depth.
int OpenByComponents(int dirfd, absl::string_view relative, int flags, mode_t mode) {
  std::vector<std::string> parts = absl::StrSplit(relative, '/');
  int current = dirfd;
  UniqueFd held;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = openat(current, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -1;
    held = UniqueFd(next);
    current = next;
  }
  return openat(current, parts.back().c_str(), flags, mode);
}

std::atomic<bool> g_openat2_missing{false};

}  // namespace

absl::Status CheckPathComponent(absl::string_view name, absl::string_view what) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != absl::string_view::npos ||
      name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " \"", name, "\" is not a valid name: it must be non-empty, not \".\" or \"..\", "
        "and contain no '/' or NUL"));
  }
  return absl::OkStatus();
}

absl::Status CheckRelativePath(absl::string_view path, absl::string_view what) {
  if (path.empty() || path[0] == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", path, "\" must be a non-empty relative path"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == ".." || part.find('\0') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " \"", path, "\" has an empty, \".\" or \"..\" component; it must stay inside "
          "its directory"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> OpenBeneath(int dirfd, absl::string_view relative, int flags, mode_t mode) {
  if (!relative.empty()) RETURN_IF_ERROR(CheckRelativePath(relative, "path"));
  const std::string path = relative.empty() ? "." : std::string(relative);
  flags |= O_CLOEXEC | O_NOFOLLOW;
  int fd = -1;
  if (!g_openat2_missing.load(std::memory_order_relaxed)) {
    fd = OpenAt2(dirfd, path.c_str(), flags, mode);
    if (fd < 0 && errno == ENOSYS) g_openat2_missing = true;
  }
  if (g_openat2_missing.load(std::memory_order_relaxed)) {
    fd = OpenByComponents(dirfd, path, flags, mode);
  }
  if (fd < 0) return OpenError(relative, errno);
  return UniqueFd(fd);
}

absl::StatusOr<UniqueFd> MakeDirectoriesBeneath(int dirfd, absl::string_view relative, mode_t mode,
                                                uid_t uid, gid_t gid) {
  RETURN_IF_ERROR(CheckRelativePath(relative, "directory"));
  ASSIGN_OR_RETURN(UniqueFd current, OpenBeneath(dirfd, "", O_PATH | O_DIRECTORY));
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    const std::string name(part);
    if (mkdirat(current.get(), name.c_str(), mode) == 0) {
      ASSIGN_OR_RETURN(UniqueFd created, OpenBeneath(current.get(), name, O_RDONLY | O_DIRECTORY));
      if ((uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) &&
          fchown(created.get(), uid, gid) != 0) {
        return PosixError(absl::StrCat("chown \"", relative, "\""), errno);
      }
      current = std::move(created);
      continue;
    }
    if (errno != EEXIST) return PosixError(absl::StrCat("mkdir \"", relative, "\""), errno);
    absl::StatusOr<UniqueFd> existing = OpenBeneath(current.get(), name, O_PATH | O_DIRECTORY);
    if (!existing.ok()) return existing.status();
    current = *std::move(existing);
  }
  return current;
}

absl::StatusOr<ParentAndName> OpenParentBeneath(int dirfd, absl::string_view relative) {
  RETURN_IF_ERROR(CheckRelativePath(relative, "path"));
  size_t slash = relative.rfind('/');
  ParentAndName result;
  absl::string_view parent = slash == absl::string_view::npos ? "" : relative.substr(0, slash);
  result.name = std::string(slash == absl::string_view::npos ? relative : relative.substr(slash + 1));
  ASSIGN_OR_RETURN(result.parent, OpenBeneath(dirfd, parent, O_RDONLY | O_DIRECTORY));
  return result;
}

absl::StatusOr<struct stat> StatAt(int dirfd, const std::string& name) {
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return PosixError(absl::StrCat("lstat \"", name, "\""), errno);
  }
  return st;
}

absl::StatusOr<std::string> ReadLinkAt(int dirfd, const std::string& name) {
  std::string target(4096, '\0');
  ssize_t n = readlinkat(dirfd, name.c_str(), target.data(), target.size());
  if (n < 0) return PosixError(absl::StrCat("readlink \"", name, "\""), errno);
  target.resize(n);
  return target;
}

absl::Status ForEachEntry(int dirfd, const std::function<absl::Status(const std::string&)>& visit) {
  int copy = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return PosixError("dup a directory fd", errno);
  DIR* dir = fdopendir(copy);
  if (dir == nullptr) {
    close(copy);
    return PosixError("list a directory", errno);
  }
  rewinddir(dir);  // the dup shares its offset with dirfd
  absl::Status status;
  errno = 0;
  while (struct dirent* entry = readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    status = visit(std::string(name));
    if (!status.ok()) break;
    errno = 0;
  }
  if (status.ok() && errno != 0) status = PosixError("list a directory", errno);
  closedir(dir);
  return status;
}

namespace {

// Opens a directory for removal: the worker may have to open up a mode an
// action set (it owns the entries when it runs unprivileged).
absl::StatusOr<UniqueFd> OpenForRemoval(int dirfd, const std::string& name) {
  int fd = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == EACCES && fchmodat(dirfd, name.c_str(), 0700, 0) == 0) {
    fd = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }
  if (fd < 0) return PosixError(absl::StrCat("open \"", name, "\" to remove it"), errno);
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 0700) != 0700) fchmod(fd, st.st_mode | 0700);
  return UniqueFd(fd);
}

// Unlinks `name` in `dirfd` unless it is a directory; `*is_directory` says
// which. An entry that is already gone is neither.
absl::Status UnlinkUnlessDirectory(int dirfd, const std::string& name, bool* is_directory) {
  *is_directory = false;
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? absl::OkStatus() : PosixError(absl::StrCat("lstat \"", name, "\""), errno);
  }
  if (S_ISDIR(st.st_mode)) {
    *is_directory = true;
    return absl::OkStatus();
  }
  if (unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return PosixError(absl::StrCat("unlink \"", name, "\""), errno);
  }
  return absl::OkStatus();
}

absl::Status RemoveEmptyDirectory(int dirfd, const std::string& name) {
  if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return PosixError(absl::StrCat("rmdir \"", name, "\""), errno);
  }
  return absl::OkStatus();
}

// Empties `dir` (an open directory), then the caller unlinks it. Directories
// at kMaxRemovalDepth are moved up into `top` under a fresh name and queued
// in `flattened`, so depth never exceeds the bound.
absl::Status EmptyDirectory(int top, int dir, int depth, std::vector<std::string>* flattened) {
  std::vector<std::string> names;
  RETURN_IF_ERROR(ForEachEntry(dir, [&](const std::string& name) {
    names.push_back(name);
    return absl::OkStatus();
  }));
  static std::atomic<uint64_t> sequence{0};
  for (const std::string& name : names) {
    bool is_directory;
    RETURN_IF_ERROR(UnlinkUnlessDirectory(dir, name, &is_directory));
    if (!is_directory) continue;
    if (depth >= kMaxRemovalDepth) {
      std::string moved = absl::StrCat(".kiln-removing-", getpid(), "-", sequence++);
      if (renameat(dir, name.c_str(), top, moved.c_str()) != 0) {
        return PosixError(absl::StrCat("move \"", name, "\" up to remove it"), errno);
      }
      flattened->push_back(moved);
      continue;
    }
    ASSIGN_OR_RETURN(UniqueFd child, OpenForRemoval(dir, name));
    RETURN_IF_ERROR(EmptyDirectory(top, child.get(), depth + 1, flattened));
    child.Reset();
    RETURN_IF_ERROR(RemoveEmptyDirectory(dir, name));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RemoveTreeAt(int dirfd, const std::string& name) {
  RETURN_IF_ERROR(CheckPathComponent(name, "entry to remove"));
  std::vector<std::string> pending = {name};
  while (!pending.empty()) {
    std::string current = std::move(pending.back());
    pending.pop_back();
    bool is_directory;
    RETURN_IF_ERROR(UnlinkUnlessDirectory(dirfd, current, &is_directory));
    if (!is_directory) continue;
    ASSIGN_OR_RETURN(UniqueFd dir, OpenForRemoval(dirfd, current));
    std::vector<std::string> flattened;
    RETURN_IF_ERROR(EmptyDirectory(dirfd, dir.get(), 1, &flattened));
    dir.Reset();
    RETURN_IF_ERROR(RemoveEmptyDirectory(dirfd, current));
    pending.insert(pending.end(), flattened.begin(), flattened.end());
  }
  return absl::OkStatus();
}

bool IsDirectoryBeneath(int dirfd, absl::string_view relative) {
  struct open_how how = {};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  const std::string path(relative);
  int fd = static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
  if (fd < 0) return false;
  close(fd);
  return true;
}

void UseComponentWalkForTesting(bool enabled) { g_openat2_missing = enabled; }

absl::StatusOr<ParentAndName> OpenParentOfPath(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  ParentAndName result;
  result.name = slash == std::string::npos ? path : path.substr(slash + 1);
  ASSIGN_OR_RETURN(result.parent, OpenFile(parent, O_RDONLY | O_DIRECTORY));
  return result;
}

absl::Status RemoveTreeBeneathParent(const std::string& path) {
  absl::StatusOr<ParentAndName> at = OpenParentOfPath(path);
  if (absl::IsNotFound(at.status())) return absl::OkStatus();
  if (!at.ok()) return at.status();
  return RemoveTreeAt(at->parent.get(), at->name);
}

}  // namespace kiln
