// Bounds the disk an action uses while it runs: /work (its input root) and
// its stdout/stderr captures. A thread measures them now and then and calls
// back once the total passes the limit; the runner then stops the sandbox.
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
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
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

  // Starts watching; `on_exceeded` runs at most once, on the watchdog's
  // thread, with a message naming the limit.
  DiskWatchdog(std::string root, uid_t skip_owner, std::vector<std::string> extra_files,
               int64_t limit_bytes, absl::Duration min_interval,
               std::function<void(const std::string&)> on_exceeded);
  ~DiskWatchdog();  // stops and joins

  DiskWatchdog(const DiskWatchdog&) = delete;
  DiskWatchdog& operator=(const DiskWatchdog&) = delete;

 private:
  void Watch();

  const std::string root_;
  const uid_t skip_owner_;
  const std::vector<std::string> extra_files_;
  const int64_t limit_bytes_;
  const absl::Duration min_interval_;
  const std::function<void(const std::string&)> on_exceeded_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_DISK_WATCHDOG_H_
