// Where the cgroup hierarchies are mounted, where this process sits in each,
// and reading and writing their control files: what both the per-sandbox
// Cgroup and the worker's start-up (cgroup_delegation.h) need.
#ifndef KILN_SANDBOX_CGROUP_PATHS_H_
#define KILN_SANDBOX_CGROUP_PATHS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kiln::sandbox {

// The controllers Kiln limits actions with.
inline const std::vector<std::string>& LimitControllers() {
  static const std::vector<std::string> controllers = {"memory", "pids", "cpu"};
  return controllers;
}

// Every per-sandbox cgroup is named kiln-sandbox-<launcher pid>-<n>: the pid
// tells the cgroup of a running launcher from the leftover of a dead one.
inline constexpr char kSandboxCgroupPrefix[] = "kiln-sandbox-";

struct CgroupMount {
  std::string point;                     // e.g. /sys/fs/cgroup/memory
  std::vector<std::string> controllers;  // v1: those of LimitControllers() (and cpuacct) it has
  bool v2 = false;
};

// Cgroup mounts from /proc/self/mountinfo: every cgroup2 mount, and the v1
// mounts that carry one of the limit controllers.
std::vector<CgroupMount> CgroupMounts();

// This process's cgroup per v1 controller ("memory" -> "/a/b"), and its v2
// cgroup under the key "" (from /proc/self/cgroup).
std::map<std::string, std::string> OwnCgroups();

// The directory of this process's own v2 cgroup, or "" when no cgroup2
// mount offers one of the limit controllers there (a v1 host, whose
// cgroup2 mount is empty or carries other controllers).
std::string OwnV2CgroupWithControllers();

// The controllers a v2 cgroup directory can enable for its children
// (cgroup.controllers), limited to LimitControllers().
std::vector<std::string> AvailableLimitControllers(const std::string& dir);

// Writes `value` to the control file dir/file in one write(), as the kernel
// wants. `error_number`, when given, gets the errno of a failure (0 on
// success): callers tell EBUSY (a cgroup with processes) from the rest.
absl::Status WriteCgroupFile(const std::string& dir, const std::string& file, const std::string& value,
                             int* error_number = nullptr);
// The control file's text, or "" when it cannot be read.
std::string ReadCgroupFile(const std::string& dir, const std::string& file);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_CGROUP_PATHS_H_
