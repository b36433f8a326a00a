#include "server/exec/directory_trash.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <cerrno>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/path_beneath.h"
#include "common/status_macros.h"

namespace kiln::exec {

DirectoryTrash::DirectoryTrash(std::string trash_dir, SpareActionDirs* recycle)
    : dir_(std::move(trash_dir)), recycle_(recycle) {
  absl::Status made = MakeDirectories(dir_, 0700);
  absl::StatusOr<UniqueFd> fd =
      made.ok() ? OpenFile(dir_, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) : absl::StatusOr<UniqueFd>(made);
  if (fd.ok()) {
    dir_fd_ = *std::move(fd);
  } else {
    spdlog::warn("no trash directory ({}); action directories are removed before the answer",
                 fd.status().ToString());
  }
  thread_ = std::thread([this] { Run(); });
}

DirectoryTrash::~DirectoryTrash() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void DirectoryTrash::Discard(const std::string& path) {
  if (dir_fd_.get() >= 0) {
    std::string name = absl::StrCat(counter_.fetch_add(1));
    if (renameat(AT_FDCWD, path.c_str(), dir_fd_.get(), name.c_str()) == 0) {
      absl::MutexLock lock(&mu_);
      pending_.push_back(std::move(name));
      return;
    }
    if (errno == ENOENT) return;
  }
  absl::Status removed = RemoveTreeBeneathParent(path);
  if (!removed.ok()) spdlog::warn("cannot remove {}: {}", path, removed.ToString());
}

void DirectoryTrash::WaitUntilEmpty() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &DirectoryTrash::Idle));
}

absl::Status DirectoryTrash::Empty(const std::string& name) {
  ASSIGN_OR_RETURN(UniqueFd dir, OpenBeneath(dir_fd_.get(), name, O_RDONLY | O_DIRECTORY));
  std::vector<std::string> entries;
  RETURN_IF_ERROR(ForEachEntry(dir.get(), [&](const std::string& entry) {
    entries.push_back(entry);
    return absl::OkStatus();
  }));
  for (const std::string& entry : entries) RETURN_IF_ERROR(RemoveTreeAt(dir.get(), entry));
  return absl::OkStatus();
}

void DirectoryTrash::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(this, &DirectoryTrash::HasWork));
    if (pending_.empty()) return;  // stopping, and nothing left
    std::string name = std::move(pending_.front());
    pending_.pop_front();
    removing_ = true;
    mu_.Unlock();
    // Emptied and recycled, the directory itself costs no new inode; if
    // that is not possible it goes too.
    const bool recycled = recycle_ != nullptr && Empty(name).ok() && recycle_->Adopt(dir_fd_.get(), name);
    absl::Status removed = recycled ? absl::OkStatus() : RemoveTreeAt(dir_fd_.get(), name);
    if (!removed.ok()) spdlog::warn("cannot remove {}/{}: {}", dir_, name, removed.ToString());
    mu_.Lock();
    removing_ = false;
  }
}

}  // namespace kiln::exec
