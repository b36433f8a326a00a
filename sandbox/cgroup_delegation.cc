#include "sandbox/cgroup_delegation.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/posix.h"
#include "sandbox/cgroup_paths.h"

namespace kiln::sandbox {
namespace {

// The launcher pid in "kiln-sandbox-<pid>-<n>", or 0 for any other name.
pid_t LauncherPid(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kSandboxCgroupPrefix)) return 0;
  std::vector<absl::string_view> parts = absl::StrSplit(name, '-');
  int pid = 0, counter = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) || !absl::SimpleAtoi(parts[1], &counter)) {
    return 0;
  }
  return pid > 0 ? pid : 0;
}

// Whether `pid` is a running kiln-sandbox. Checking the name, not only that
// the pid exists, keeps a reused pid from saving a leftover forever.
bool LauncherRunning(pid_t pid) {
  absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat("/proc/", pid, "/comm"));
  return comm.ok() && absl::StripAsciiWhitespace(*comm) == "kiln-sandbox";
}

// SIGKILLs what runs in the cgroup at `dir` and removes it. Killed
// processes take a moment to leave a cgroup, and rmdir fails (EBUSY) until
// they have.
absl::Status KillAndRemove(const std::string& dir) {
  int error = 0;
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
    error = errno;
    if (error != EBUSY) break;
    // cgroup.kill (v2, Linux 5.14) also catches processes forking meanwhile.
    if (!WriteCgroupFile(dir, "cgroup.kill", "1").ok()) {
      std::istringstream procs(ReadCgroupFile(dir, "cgroup.procs"));
      for (pid_t pid; procs >> pid;) kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return PosixError(absl::StrCat("remove ", dir), error);
}

}  // namespace

absl::StatusOr<std::string> PrepareActionCgroupParent() {
  const std::string own = OwnV2CgroupWithControllers();
  if (own.empty()) return std::string();
  std::vector<std::string> available = AvailableLimitControllers(own);
  std::string enable;
  for (const std::string& c : available) absl::StrAppend(&enable, enable.empty() ? "" : " ", "+", c);

  // The directory must really be this process's cgroup: in a container
  // with a cgroup namespace and the host's hierarchy mounted, /proc/self/cgroup
  // says "/" while the mount shows the host's root, which is not ours to change.
  std::vector<std::string> procs = absl::StrSplit(ReadCgroupFile(own, "cgroup.procs"), '\n', absl::SkipEmpty());
  const std::string self = absl::StrCat(getpid());
  if (std::find(procs.begin(), procs.end(), self) == procs.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        own, " should be this process's cgroup but does not list it; is a cgroup2 mount from "
        "outside this cgroup namespace at its place?"));
  }
  int error = 0;
  absl::Status enabled = WriteCgroupFile(own, "cgroup.subtree_control", enable, &error);
  if (enabled.ok()) return own;  // no process in it, or the root cgroup
  if (error != EBUSY) {  // EBUSY is the rule about processes; moving would not help the rest
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot enable the cgroup v2 controllers ", enable, " in ", own, ": ", enabled.message(),
        "; the worker needs a cgroup delegated to it (systemd Delegate=yes)"));
  }
  // EBUSY: the cgroup holds processes. Moving only helps when they are all
  // this one: a worker started from a login shell shares the session's
  // cgroup, which is not the worker's to rearrange.
  procs.erase(std::remove(procs.begin(), procs.end(), self), procs.end());
  if (!procs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot enable the cgroup v2 controllers ", enable, " in ", own,
        ": other processes share the worker's cgroup (", absl::StrJoin(procs, " "),
        "); run the worker in a cgroup delegated to it alone (systemd Delegate=yes, or "
        "systemd-run --scope -p Delegate=yes)"));
  }
  // Writing the pid to cgroup.procs moves every thread of the process.
  const std::string leaf = absl::StrCat(own, "/", kWorkerLeafCgroup);
  if (mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", leaf, ": ", strerror(errno)));
  }
  absl::Status moved = WriteCgroupFile(leaf, "cgroup.procs", absl::StrCat(getpid()));
  if (!moved.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot move the worker into ", leaf, ": ", moved.message()));
  }
  enabled = WriteCgroupFile(own, "cgroup.subtree_control", enable);
  if (!enabled.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot enable the cgroup v2 controllers ", enable, " in ", own, " after moving the worker into ",
        leaf, ": ", enabled.message()));
  }
  return own;
}

std::vector<std::string> ActionCgroupParents(const std::string& v2_parent) {
  std::vector<std::string> parents;
  if (!v2_parent.empty()) parents.push_back(v2_parent);
  std::map<std::string, std::string> own = OwnCgroups();
  for (const CgroupMount& mount : CgroupMounts()) {
    if (mount.v2 || !own.count(mount.controllers[0])) continue;
    const std::string& path = own[mount.controllers[0]];
    std::string dir = path == "/" ? mount.point : mount.point + path;
    if (std::find(parents.begin(), parents.end(), dir) == parents.end()) parents.push_back(dir);
  }
  return parents;
}

absl::StatusOr<int> RemoveLeftoverSandboxCgroups(const std::vector<std::string>& parents) {
  int removed = 0;
  std::vector<std::string> failures;
  for (const std::string& parent : parents) {
    DIR* dir = opendir(parent.c_str());
    if (dir == nullptr) continue;  // a hierarchy we cannot read holds nothing of ours
    std::vector<std::string> leftovers;
    while (struct dirent* entry = readdir(dir)) {
      pid_t launcher = LauncherPid(entry->d_name);
      if (entry->d_type == DT_DIR && launcher != 0 && !LauncherRunning(launcher)) {
        leftovers.push_back(absl::StrCat(parent, "/", entry->d_name));
      }
    }
    closedir(dir);
    for (const std::string& leftover : leftovers) {
      absl::Status status = KillAndRemove(leftover);
      if (status.ok()) {
        ++removed;
      } else {
        failures.emplace_back(status.message());
      }
    }
  }
  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat("leftover sandbox cgroups not removed: ",
                                            absl::StrJoin(failures, "; ")));
  }
  return removed;
}

}  // namespace kiln::sandbox
