// The inside of a sandbox: what runs as PID 1 of the new namespaces. It
// builds the root, forks the action as PID 2, forwards signals to it,
// reaps every zombie, and reports to the launcher over a pipe.
//
// Runs in a freshly cloned child of a single-threaded launcher, so it may use
// the heap. A failed setup step reports "error <file>:<line>: <what>: <errno>"
// and exits with kSetupFailedExit.
#ifndef KILN_SANDBOX_SANDBOX_INIT_H_
#define KILN_SANDBOX_SANDBOX_INIT_H_

#include <sys/types.h>

#include <string>

#include "sandbox/sandbox_spec.h"

namespace kiln::sandbox {

inline constexpr int kSetupFailedExit = 71;  // EX_OSERR
inline constexpr int kExecFailedExit = 127;  // like a shell's "command not found"

struct ChildConfig {
  // What the sandbox is prepared with; the action's own SandboxRequest
  // arrives later on request_fd.
  const SandboxSpec* spec = nullptr;
  uid_t uid = 0;
  gid_t gid = 0;
  bool user_namespace = false;  // launched unprivileged: map uid/gid ourselves
  uid_t outer_uid = 0;
  gid_t outer_gid = 0;
  std::string root_mount_point;  // an empty host dir; PID 1 mounts the new root on it
  // The launcher hands PID 1 the action's work dir, as a detached clone of
  // its mount (open_tree), and its log files, as descriptors that come with
  // the request. PID 1 then pivots while it prepares, before the action's
  // paths exist. Set when the spec has a work_dir_parent and the launcher is
  // root in the host's mount namespace (it cannot clone a mount otherwise);
  // else PID 1 opens the paths and pivots when the action comes.
  bool work_from_launcher = false;
  // A socket from the launcher: one byte when PID 1 may start preparing,
  // then the action's SandboxRequest (sandbox_proto.h framing), with the
  // descriptors of work_from_launcher: the work dir's clone (if the request
  // has a work_dir), then stdout and stderr (if it has their paths).
  int request_fd = -1;
  int report_fd = -1;  // write end of the report pipe
};

// The clone() entry point; `arg` is a ChildConfig*. Returns PID 1's exit code.
int RunSandboxInit(void* arg);

// Takes every capability out of the calling process's bounding set, which
// its children inherit; false (errno set) if a drop failed. Capabilities
// already out cost a read each, where a drop is a credential change: the
// spawner empties its own set once, so PID 1 of a launcher it forked has
// nothing left to drop (unless a new user namespace filled the set again).
bool EmptyBoundingSet();

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SANDBOX_INIT_H_
