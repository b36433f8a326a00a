// Bounds the disk an action uses while it runs: /work (its input root) and
// its stdout/stderr captures. The slot's own thread measures them whenever
// it has waited next_check() for the sandbox's result (no thread of its own
// is started and joined per action); once the total passes the limit the
// runner stops the sandbox.
//
// Measuring walks the action's tree (a directory fd per level, never
// following a symlink). Each inode counts once, by its allocated blocks;
// inputs hardlinked from the CAS are not the action's and are skipped (they
// are owned by the worker while everything the action makes belongs to its
// build user). The next measurement waits 20 times as long as the last one
// took (at least `min_interval`), so the watchdog costs at most ~5% of a core.
// A tree deeper than kMaxDepth is treated as over the limit: it could hide
// data below any depth bound a walk keeps.
#ifndef KILN_SERVER_EXEC_DISK_WATCHDOG_H_
#define KILN_SERVER_EXEC_DISK_WATCHDOG_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kiln::exec {

struct DiskUsage {
  int64_t bytes = 0;
  bool too_deep = false;
};

// Allocated bytes of every distinct inode under `root_fd` not owned by
// `skip_owner` (-1: skip none), plus those of `extra_files`.
absl::StatusOr<DiskUsage> MeasureActionDisk(int root_fd, uid_t skip_owner,
                                            const std::vector<std::string>& extra_files);

class DiskWatchdog {
 public:
  static constexpr int kMaxDepth = 1024;

  // The first check is due `min_interval` from now.
  DiskWatchdog(std::string root, uid_t skip_owner, std::vector<std::string> extra_files,
               int64_t limit_bytes, absl::Duration min_interval);

  DiskWatchdog(const DiskWatchdog&) = delete;
  DiskWatchdog& operator=(const DiskWatchdog&) = delete;

  // When Check is due next; InfiniteFuture once the limit was reported.
  absl::Time next_check() const { return next_check_; }
  // Measures now; a message naming the limit the first time it is passed,
  // nullopt otherwise (and ever after).
  std::optional<std::string> Check();

 private:
  const std::string root_;
  const uid_t skip_owner_;
  const std::vector<std::string> extra_files_;
  const int64_t limit_bytes_;
  const absl::Duration min_interval_;
  absl::Time next_check_;
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_DISK_WATCHDOG_H_
