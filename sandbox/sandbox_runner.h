// Runs one command in a sandbox and reports what happened.
//
// The launcher side of the setup order (Bazel's linux-sandbox is the
// reference): PR_SET_PDEATHSIG, signals blocked, a per-sandbox cgroup,
// clone() with the namespace flags, PID 1 put into the cgroup, a pipe
// handshake, then a wait on a pidfd that enforces the timeout (SIGTERM, then
// SIGKILL of PID 1 after the grace period, which kills the whole PID
// namespace) and forwards SIGTERM/SIGINT/SIGHUP, and wait4 for the rusage of
// the whole tree.
//
// RunSandbox clones: call it only from a single-threaded process
// (kiln-sandbox, or a launcher forked before any thread starts). It uses a
// user namespace when not running as root.
#ifndef KILN_SANDBOX_SANDBOX_RUNNER_H_
#define KILN_SANDBOX_SANDBOX_RUNNER_H_

#include "absl/status/statusor.h"
#include "sandbox/sandbox_spec.h"

namespace kiln::sandbox {

// Errors: INVALID_ARGUMENT / NOT_FOUND for a bad spec (nothing ran),
// FAILED_PRECONDITION when a requested limit cannot be applied, INTERNAL when
// a setup step inside the sandbox failed (the message names it). A command
// that cannot be executed is a result with exit code 127 and exec_error set.
absl::StatusOr<SandboxResult> RunSandbox(const SandboxSpec& spec, const SandboxPolicy& policy);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SANDBOX_RUNNER_H_
