// A per-sandbox cgroup: memory, pids and cpu limits, OOM detection, peak
// memory, and a kill switch. Works with cgroup v2 (unified) and with the v1
// per-controller hierarchies, whichever provides each controller. The cgroup
// is created as a child of this process's own cgroup in every hierarchy it
// uses, or, on v2, of a given parent: under systemd (Delegate=yes) the
// worker's own cgroup holds the worker, and a v2 cgroup with processes cannot
// enable controllers for its children ("no internal processes"), so the
// worker hands kiln-sandbox the delegated cgroup it emptied for actions
// (cgroup_delegation.h).
//
// A limit that cannot be applied is an error: the run must fail rather than
// run unlimited. Not thread-safe; owned by the single-threaded launcher.
#ifndef KILN_SANDBOX_CGROUP_H_
#define KILN_SANDBOX_CGROUP_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::sandbox {

struct CgroupLimits {
  int64_t memory_bytes = 0;  // 0: no limit (still accounted when possible)
  int64_t pids = 0;
  double cpus = 0;
};

class Cgroup {
 public:
  // Creates the cgroup named `name` and applies `limits`. With no limits it
  // is best effort (accounting only) and may return nullptr when cgroups are
  // not writable, e.g. when running unprivileged. `v2_parent`, when not
  // empty, is the cgroup v2 directory to create it in instead of this
  // process's own v2 cgroup (v1 hierarchies always use their own).
  static absl::StatusOr<std::unique_ptr<Cgroup>> Create(const std::string& name,
                                                        const CgroupLimits& limits,
                                                        const std::string& v2_parent = "");
  // Kills what is left and removes the directories.
  ~Cgroup();

  absl::Status AddProcess(pid_t pid);
  // True if the kernel OOM-killed a process in this cgroup.
  bool OomKilled() const;
  // Highest memory use seen, in bytes; 0 when unknown.
  int64_t PeakMemoryBytes() const;
  // How long the cpu limit held the cgroup back (cpu.stat); 0 without one.
  double CpuThrottledSeconds() const;
  // SIGKILLs every process in the cgroup.
  void KillAll();
  // The directories, one per hierarchy used (for messages and tests).
  std::vector<std::string> paths() const;

 private:
  struct Hierarchy {
    std::string path;                      // e.g. /sys/fs/cgroup/memory/x/kiln-1
    std::vector<std::string> controllers;  // what this directory is used for
    bool v2 = false;
  };
  Cgroup() = default;
  const Hierarchy* Find(const std::string& controller) const;

  std::vector<Hierarchy> hierarchies_;
};

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_CGROUP_H_
