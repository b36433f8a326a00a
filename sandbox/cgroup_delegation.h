// What kiln-worker does with its cgroups when it starts, before any action:
// on cgroup v2, make its delegated cgroup able to hold the action cgroups,
// and on v1 and v2, remove the per-sandbox cgroups a crash left behind.
//
// Why the worker moves: cgroup v2 lets a cgroup enable controllers for its
// children only while it holds no processes itself (the "no internal
// processes" rule; the root cgroup is exempt). systemd with Delegate=yes
// gives the service a cgroup of its own with the worker in it, so the worker
// moves into a leaf child (kWorkerLeafCgroup), enables memory, pids and cpu
// in the emptied cgroup, and has kiln-sandbox create the action cgroups there,
// as siblings of the leaf (kiln-sandbox --cgroup_parent).
//
// Call both from the main thread at start-up. Neither is thread-safe.
#ifndef KILN_SANDBOX_CGROUP_DELEGATION_H_
#define KILN_SANDBOX_CGROUP_DELEGATION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::sandbox {

inline constexpr char kWorkerLeafCgroup[] = "kiln-worker";

// On a cgroup v2 host, returns the directory of this process's cgroup, ready
// for action cgroups: the memory, pids and cpu controllers it was given are
// enabled for its children, after moving this process (all its threads)
// into the leaf child kWorkerLeafCgroup when the cgroup held it. Returns ""
// when this process has no v2 cgroup with any of those controllers (a v1 or
// hybrid host: kiln-sandbox then uses its own v1 cgroups). FAILED_PRECONDITION
// when the controllers cannot be enabled, e.g. other processes share the
// cgroup (not delegated to the worker alone) or the cgroup is not writable.
absl::StatusOr<std::string> PrepareActionCgroupParent();

// The directories kiln-sandbox creates action cgroups in: `v2_parent` (from
// PrepareActionCgroupParent) when not empty, and this process's own cgroup
// in every v1 hierarchy of a limit controller.
std::vector<std::string> ActionCgroupParents(const std::string& v2_parent);

// Removes the kiln-sandbox-<pid>-<n> cgroups under `parents` whose launcher
// (pid) is no longer a running kiln-sandbox: a worker or launcher killed with
// SIGKILL never ran their clean-up. Whatever still runs in one is killed
// first. Cgroups of running launchers (another worker's, a kiln-sandbox run
// from a shell) are left alone. Returns how many were removed; an error names
// the ones that could not be.
absl::StatusOr<int> RemoveLeftoverSandboxCgroups(const std::vector<std::string>& parents);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_CGROUP_DELEGATION_H_
