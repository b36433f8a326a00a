// The one way Kiln touches a directory that untrusted code controls (an
// action's input root, its outputs, the client's download directory): every
// path is resolved beneath a directory fd, one kernel-checked step at a time,
// and no symlink is ever followed — not in the last component, not in a parent.
//
// Symlinks that actions or clients create are data: they are created, read
// (readlinkat) and reported, never traversed by Kiln. Inside the sandbox the
// kernel resolves them against the sandbox's own root, where they can only
// reach what the sandbox shows.
//
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) does
// the walk where the kernel has it (5.6+); elsewhere each component is opened
// with O_NOFOLLOW | O_DIRECTORY from the previous one's fd.
#ifndef KILN_COMMON_PATH_BENEATH_H_
#define KILN_COMMON_PATH_BENEATH_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/posix.h"

namespace kiln {

// INVALID_ARGUMENT unless `name` can be one directory entry: non-empty, not
// "." or "..", no '/' and no NUL. `what` names the field in the message.
absl::Status CheckPathComponent(absl::string_view name, absl::string_view what);

// INVALID_ARGUMENT unless `path` is non-empty, relative, and made of valid
// components (no empty, "." or ".." component, no trailing slash).
absl::Status CheckRelativePath(absl::string_view path, absl::string_view what);

// Opens `relative` beneath `dirfd` with open(2) `flags` (O_CLOEXEC and
// O_NOFOLLOW are added). "" opens `dirfd` itself. A symlink in any component
// is FAILED_PRECONDITION ("... passes through a symlink"); a missing
// component is NOT_FOUND. `relative` must pass CheckRelativePath.
absl::StatusOr<UniqueFd> OpenBeneath(int dirfd, absl::string_view relative, int flags,
                                     mode_t mode = 0);

// Opens the directory `relative` beneath `dirfd`, creating each missing
// component with `mode` (then fchown'd to uid:gid unless they are -1). An
// existing component that is a symlink or not a directory is an error.
absl::StatusOr<UniqueFd> MakeDirectoriesBeneath(int dirfd, absl::string_view relative, mode_t mode,
                                                uid_t uid, gid_t gid);

// The parent directory of `relative` opened beneath `dirfd`, and the last
// component's name, for the *at() calls that act on the entry itself
// (fstatat with AT_SYMLINK_NOFOLLOW, readlinkat, unlinkat).
struct ParentAndName {
  UniqueFd parent;
  std::string name;
};
absl::StatusOr<ParentAndName> OpenParentBeneath(int dirfd, absl::string_view relative);

// lstat of `name` in `dirfd`. NOT_FOUND when absent.
absl::StatusOr<struct stat> StatAt(int dirfd, const std::string& name);

// The target of the symlink `name` in `dirfd`.
absl::StatusOr<std::string> ReadLinkAt(int dirfd, const std::string& name);

// Calls `visit` for each entry of the open directory `dirfd` (not "." or
// ".."), in the order the filesystem returns them. Stops at the first error
// `visit` returns.
absl::Status ForEachEntry(int dirfd, const std::function<absl::Status(const std::string&)>& visit);

// Removes `name` in `dirfd` and everything below it, never following a
// symlink; directories an action made unreadable (mode 000) are opened up
// first. A missing entry is not an error.
absl::Status RemoveTreeAt(int dirfd, const std::string& name);

// The parent directory of a path Kiln or its user chose (not one an action
// controls: the parent is opened by name), and the last component.
absl::StatusOr<ParentAndName> OpenParentOfPath(const std::string& path);

// RemoveTreeAt for a whole path that Kiln itself chose (e.g. an exec dir).
absl::Status RemoveTreeBeneathParent(const std::string& path);

// True if `relative` names a directory once symlinks are followed, the
// kernel keeping every step beneath `dirfd` (RESOLVE_BENEATH). For type
// hints only (the legacy output_*_symlinks fields); false where openat2 is
// missing or the path leaves `dirfd`.
bool IsDirectoryBeneath(int dirfd, absl::string_view relative);

// Tests: use the component walk even where openat2 exists.
void UseComponentWalkForTesting(bool enabled);

}  // namespace kiln

#endif  // KILN_COMMON_PATH_BENEATH_H_
