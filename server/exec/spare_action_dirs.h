// Per-action directories made before their actions come.
//
// Each action gets a fresh directory beneath the exec root: `root/` (its
// input root, 0755) and empty `stdout` and `stderr` (0600) beside it.
// Creating those four inodes on ext4 took a noticeable part of a short
// action's critical path; a background thread now makes a few ahead in
// `<parent>/.spare`, and Take moves one into the parent (one rename) and
// hands it out, so the parent holds only directories actions have or had.
// Nothing is reused: every directory and file is new,
// so nothing of an earlier action (nor a live-log reader still holding its
// files) can reach a later one. Only the worker-owned outer directory, which
// no action ever sees (the sandbox mounts only root/ at /work), is recycled:
// emptied, renamed and filled again (Adopt). Directories are removed by DirectoryTrash
// after their action, and whatever is left at a crash by the worker's
// emptying of the exec root at start.
//
// Thread-safe.
#ifndef KILN_SERVER_EXEC_SPARE_ACTION_DIRS_H_
#define KILN_SERVER_EXEC_SPARE_ACTION_DIRS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace kiln::exec {

class SpareActionDirs {
 public:
  // Keeps up to `keep` directories ready beneath `parent` (which exists),
  // in `parent`/.spare (made here).
  SpareActionDirs(std::string parent, int keep);
  // Stops the thread; the spares left are removed with the exec root.
  ~SpareActionDirs();
  SpareActionDirs(const SpareActionDirs&) = delete;
  SpareActionDirs& operator=(const SpareActionDirs&) = delete;

  // Keeps at least `keep` ready from now on (e.g. one per execution slot).
  void KeepAtLeast(int keep);
  // The path of a fresh directory, made ahead or, if none is ready, now.
  absl::StatusOr<std::string> Take();
  // Takes the emptied directory `name` in `dirfd` (a finished action's,
  // whose root and logs DirectoryTrash removed) to be filled with a new
  // root/, stdout and stderr: one inode fewer to allocate than a new
  // directory. False, leaving it where it is, if enough are waiting or it
  // cannot be moved.
  bool Adopt(int dirfd, const std::string& name);

 private:
  // A new directory named `name` beneath `beneath`, filled.
  absl::Status Make(const std::string& beneath, const std::string& name);
  // Makes root/, stdout and stderr in the empty directory `path`; on an
  // error, removes `path`.
  absl::Status Fill(const std::string& path);
  std::string NewName();
  void Run();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || static_cast<int>(ready_.size()) < keep_;
  }

  const std::string parent_;
  const std::string spare_dir_;
  std::atomic<uint64_t> sequence_{0};
  absl::Mutex mu_;
  std::deque<std::string> ready_ ABSL_GUARDED_BY(mu_);  // names in spare_dir_
  std::deque<std::string> empty_ ABSL_GUARDED_BY(mu_);  // adopted, to fill; names in spare_dir_
  int keep_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool failing_ ABSL_GUARDED_BY(mu_) = false;  // the last Make in Run failed
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SPARE_ACTION_DIRS_H_
