// Runs one command in a sandbox and reports what happened.
//
// The launcher side of the setup order (Bazel's linux-sandbox is the
// reference): PR_SET_PDEATHSIG, signals blocked, a per-sandbox cgroup,
// clone() with the namespace flags, PID 1 put into the cgroup, a socket
// handshake, then a wait that enforces the timeout (SIGTERM, then SIGKILL of
// PID 1 after the grace period, which kills the whole PID namespace) and
// forwards SIGTERM/SIGINT/SIGHUP.
//
// In two steps, so that the first can happen before the action exists (a
// warm sandbox, kiln-sandbox --serve_fd): Prepare clones the namespaces and
// lets PID 1 build the root (binds, /dev, /proc, /tmp, /etc) and bring up
// loopback; Run hands PID 1 the action, which binds /work, pivots, drops
// privileges and forks the command, and returns as soon as the action's
// whole process tree is gone, before the namespaces and the cgroup are torn
// down (the destructor does that).
//
// Clones: use only from a single-threaded process (kiln-sandbox, or a
// launcher forked before any thread starts). Uses a user namespace when not
// running as root.
#ifndef KILN_SANDBOX_SANDBOX_RUNNER_H_
#define KILN_SANDBOX_SANDBOX_RUNNER_H_

#include <signal.h>

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/posix.h"
#include "sandbox/cgroup.h"
#include "sandbox/sandbox_init.h"
#include "sandbox/sandbox_spec.h"
#include "sandbox/uid_pool.h"

namespace kiln::sandbox {

class PreparedSandbox {
 public:
  // Starts preparing for `prepared` (its argv, work_dir, hostname, env, cwd,
  // stdout/stderr, timeout and personality do not matter yet) and returns
  // without waiting for PID 1. Errors: INVALID_ARGUMENT / NOT_FOUND for a bad
  // spec, FAILED_PRECONDITION when a requested limit cannot be applied,
  // RESOURCE_EXHAUSTED when no build user is free.
  static absl::StatusOr<std::unique_ptr<PreparedSandbox>> Prepare(const SandboxSpec& prepared,
                                                                  const SandboxPolicy& policy);
  PreparedSandbox(const PreparedSandbox&) = delete;
  PreparedSandbox& operator=(const PreparedSandbox&) = delete;
  // Kills whatever is left, reaps PID 1 and removes the cgroup.
  ~PreparedSandbox();

  // Runs the action `spec`, which must only differ from the prepared spec
  // where CheckPreparedFor allows. Call once. INTERNAL when a setup step
  // inside the sandbox failed (the message names it); a command that cannot
  // be executed is a result with exit code 127 and exec_error set.
  absl::StatusOr<SandboxResult> Run(const SandboxSpec& spec, const SandboxPolicy& policy);

  // The launcher's signalfd (SIGTERM/SIGINT/SIGHUP are blocked while a
  // sandbox exists), for callers that wait before Run.
  int signal_fd() const { return signal_fd_.get(); }

 private:
  PreparedSandbox() = default;
  // Reaps PID 1 (blocking) with the rusage of what was left of the tree.
  void ReapInit();

  SandboxSpec prepared_;
  ChildConfig config_;
  std::optional<UidLease> lease_;
  std::unique_ptr<Cgroup> cgroup_;
  StageTimes stages_;
  bool user_namespace_ = false;
  pid_t init_ = -1;
  bool init_reaped_ = false;
  int init_status_ = 0;
  struct rusage init_rusage_ = {};
  void* stack_ = nullptr;
  UniqueFd request_write_, report_read_, signal_fd_;
  sigset_t previous_mask_;
  bool ran_ = false;
  bool done_ = false;  // PID 1 reported the action's tree gone and is exiting
};

// OK when a sandbox prepared with `prepared` can run `action`: the same
// binds, network, build user, tmpfs sizes and cgroup limits. Everything else
// (argv, env, work dir, cwd, hostname, rlimits, personality, seccomp
// options, timeout, log files) is the action's own.
absl::Status CheckPreparedFor(const SandboxSpec& prepared, const SandboxSpec& action);

// Prepare and Run in one go, then teardown: kiln-sandbox's one-shot mode.
absl::StatusOr<SandboxResult> RunSandbox(const SandboxSpec& spec, const SandboxPolicy& policy);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SANDBOX_RUNNER_H_
