// Removes per-action directories off the action's critical path.
//
// Deleting an action's tree (its staged inputs, outputs and scratch files)
// costs as much as creating it on ext4, and used to happen before the
// answer went out. Discard renames the directory into the trash, which
// takes one rename(2) whatever the tree holds, and a background thread
// removes it afterwards. The action's processes are gone by then; the
// removal is the same as before (beneath a directory fd, never following a
// symlink, opening up directories the action made unreadable).
//
// The trash lives inside the exec root, which the worker empties at start,
// so whatever a crash left in it is removed on the next start.
//
// Thread-safe.
#ifndef KILN_SERVER_EXEC_DIRECTORY_TRASH_H_
#define KILN_SERVER_EXEC_DIRECTORY_TRASH_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/posix.h"
#include "server/exec/spare_action_dirs.h"

namespace kiln::exec {

class DirectoryTrash {
 public:
  // Creates `trash_dir` (its parent must exist). If that fails, Discard
  // removes directories at once instead. With `recycle`, a discarded
  // directory is emptied and offered to it (SpareActionDirs::Adopt) instead
  // of being removed itself.
  explicit DirectoryTrash(std::string trash_dir, SpareActionDirs* recycle = nullptr);
  // Removes what is still pending, then stops the thread.
  ~DirectoryTrash();
  DirectoryTrash(const DirectoryTrash&) = delete;
  DirectoryTrash& operator=(const DirectoryTrash&) = delete;

  // Takes `path` (a directory Kiln chose, on the trash's filesystem) out of
  // the way now and removes it soon. Removes it here if it cannot be moved.
  void Discard(const std::string& path);

  // Waits until everything discarded so far is removed (for tests).
  void WaitUntilEmpty();

 private:
  void Run();
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_.empty() && !removing_; }
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !pending_.empty(); }

  // Removes what `name` in the trash holds, keeping `name` itself.
  absl::Status Empty(const std::string& name);

  const std::string dir_;
  SpareActionDirs* const recycle_;
  UniqueFd dir_fd_;  // invalid when the trash could not be made
  std::atomic<uint64_t> counter_{0};
  absl::Mutex mu_;
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);  // names in dir_
  bool removing_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_DIRECTORY_TRASH_H_
