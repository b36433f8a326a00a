#include "server/exec/spare_action_dirs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace kiln::exec {

SpareActionDirs::SpareActionDirs(std::string parent, int keep)
    : parent_(std::move(parent)), spare_dir_(parent_ + "/.spare"), keep_(keep) {
  if (keep > 0 && mkdir(spare_dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    spdlog::warn("cannot make {}: {}", spare_dir_, strerror(errno));
  }
  thread_ = std::thread([this] { Run(); });
}

SpareActionDirs::~SpareActionDirs() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void SpareActionDirs::KeepAtLeast(int keep) {
  absl::MutexLock lock(&mu_);
  if (keep > keep_) keep_ = keep;
}

absl::StatusOr<std::string> SpareActionDirs::Take() {
  std::optional<std::string> spare;
  {
    absl::MutexLock lock(&mu_);
    if (!ready_.empty()) {
      spare = std::move(ready_.front());
      ready_.pop_front();
    }
  }
  if (spare.has_value()) {
    std::string path = absl::StrCat(parent_, "/", *spare);
    if (rename(absl::StrCat(spare_dir_, "/", *spare).c_str(), path.c_str()) == 0) return path;
    spdlog::warn("cannot take the spare action directory {}: {}", *spare, strerror(errno));
  }
  // None ready: made on the action's path, as before.
  std::string name = NewName();
  RETURN_IF_ERROR(Make(parent_, name));
  return absl::StrCat(parent_, "/", name);
}

std::string SpareActionDirs::NewName() {
  // Unique among this worker's directories, and among a previous run's
  // (the exec root is emptied at start anyway) by the pid.
  return absl::StrCat(getpid(), "-", sequence_.fetch_add(1));
}

absl::Status SpareActionDirs::Make(const std::string& beneath, const std::string& name) {
  const std::string path = absl::StrCat(beneath, "/", name);
  if (mkdir(path.c_str(), 0700) != 0) return PosixError("mkdir " + path, errno);
  return Fill(path);
}

absl::Status SpareActionDirs::Fill(const std::string& path) {
  absl::Status filled = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(UniqueFd dir, OpenFile(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (mkdirat(dir.get(), "root", 0755) != 0) return PosixError("mkdir " + path + "/root", errno);
    for (const char* file : {"stdout", "stderr"}) {
      // They exist before the sandbox starts, so live readers can open
      // them; the sandbox appends to them.
      int fd = openat(dir.get(), file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) return PosixError(absl::StrCat("create ", path, "/", file), errno);
      close(fd);
    }
    return absl::OkStatus();
  }();
  if (!filled.ok()) (void)RemoveTreeBeneathParent(path);
  return filled;
}

bool SpareActionDirs::Adopt(int dirfd, const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || static_cast<int>(empty_.size()) >= keep_) return false;
  }
  std::string spare = NewName();
  if (renameat(dirfd, name.c_str(), AT_FDCWD, absl::StrCat(spare_dir_, "/", spare).c_str()) != 0) return false;
  absl::MutexLock lock(&mu_);
  empty_.push_back(std::move(spare));
  return true;
}

void SpareActionDirs::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(this, &SpareActionDirs::HasWork));
    if (stopping_) return;
    std::optional<std::string> adopted;
    if (!empty_.empty()) {
      adopted = std::move(empty_.front());
      empty_.pop_front();
    }
    mu_.Unlock();
    std::string name = adopted.has_value() ? *adopted : NewName();
    absl::Status made = adopted.has_value() ? Fill(absl::StrCat(spare_dir_, "/", name)) : Make(spare_dir_, name);
    mu_.Lock();
    if (!made.ok()) {
      // Take makes them on the action's path instead, and reports the error
      // to the action; the thread tries again after a pause, and says so
      // once per streak of failures (e.g. while the disk is full).
      if (!failing_) spdlog::warn("cannot prepare an action directory: {}", made.ToString());
      failing_ = true;
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
      continue;
    }
    failing_ = false;
    ready_.push_back(std::move(name));
  }
}

}  // namespace kiln::exec
