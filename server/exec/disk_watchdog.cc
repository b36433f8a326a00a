#include "server/exec/disk_watchdog.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace kiln::exec {
namespace {

// One directory being walked: its fd and the subdirectories still to visit.
struct Frame {
  UniqueFd fd;
  std::vector<std::string> subdirectories;
  size_t next = 0;
};

}  // namespace

absl::StatusOr<DiskUsage> MeasureActionDisk(int root_fd, uid_t skip_owner,
                                            const std::vector<std::string>& extra_files) {
  DiskUsage usage;
  for (const std::string& path : extra_files) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) usage.bytes += int64_t{st.st_blocks} * 512;
  }
  absl::flat_hash_set<ino_t> linked;  // inodes with several names, counted once
  auto count = [&](const struct stat& st) {
    if (skip_owner != static_cast<uid_t>(-1) && st.st_uid == skip_owner) return;
    if (st.st_nlink > 1 && !S_ISDIR(st.st_mode) && !linked.insert(st.st_ino).second) return;
    usage.bytes += int64_t{st.st_blocks} * 512;
  };
  std::vector<Frame> stack;
  auto enter = [&](UniqueFd fd) -> absl::Status {
    Frame frame;
    frame.fd = std::move(fd);
    // The action keeps changing the tree: entries that vanish are skipped.
    RETURN_IF_ERROR(ForEachEntry(frame.fd.get(), [&](const std::string& name) {
      struct stat st;
      if (fstatat(frame.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return absl::OkStatus();
      count(st);
      if (S_ISDIR(st.st_mode)) frame.subdirectories.push_back(name);
      return absl::OkStatus();
    }));
    stack.push_back(std::move(frame));
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(UniqueFd root, OpenBeneath(root_fd, "", O_RDONLY | O_DIRECTORY));
  RETURN_IF_ERROR(enter(std::move(root)));
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.next == top.subdirectories.size()) {
      stack.pop_back();
      continue;
    }
    const std::string name = top.subdirectories[top.next++];
    absl::StatusOr<UniqueFd> child = OpenBeneath(top.fd.get(), name, O_RDONLY | O_DIRECTORY);
    if (!child.ok()) continue;  // gone, replaced, or made unreadable meanwhile
    if (static_cast<int>(stack.size()) >= DiskWatchdog::kMaxDepth) {
      usage.too_deep = true;
      return usage;
    }
    RETURN_IF_ERROR(enter(*std::move(child)));
  }
  return usage;
}

DiskWatchdog::DiskWatchdog(std::string root, uid_t skip_owner, std::vector<std::string> extra_files,
                           int64_t limit_bytes, absl::Duration min_interval)
    : root_(std::move(root)),
      skip_owner_(skip_owner),
      extra_files_(std::move(extra_files)),
      limit_bytes_(limit_bytes),
      min_interval_(min_interval),
      next_check_(absl::Now() + min_interval) {}

std::optional<std::string> DiskWatchdog::Check() {
  if (next_check_ == absl::InfiniteFuture()) return std::nullopt;
  const absl::Time start = absl::Now();
  absl::StatusOr<UniqueFd> root = OpenFile(root_, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  absl::StatusOr<DiskUsage> usage =
      root.ok() ? MeasureActionDisk(root->get(), skip_owner_, extra_files_) : root.status();
  const absl::Time end = absl::Now();
  next_check_ = end + std::max(min_interval_, 20 * (end - start));
  if (!usage.ok()) return std::nullopt;
  if (usage->too_deep) {
    next_check_ = absl::InfiniteFuture();
    return absl::StrCat("the action's directory tree is nested more than ", kMaxDepth, " levels deep");
  }
  if (usage->bytes > limit_bytes_) {
    next_check_ = absl::InfiniteFuture();
    return absl::StrCat("the action used more than ", limit_bytes_,
                        " bytes of disk (its /work and its stdout/stderr); this worker's "
                        "limit is kiln-worker --max_action_disk_bytes");
  }
  return std::nullopt;
}

}  // namespace kiln::exec
