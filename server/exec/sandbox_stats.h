// What kiln-sandbox's SandboxResult (proto/kiln/sandbox/v1/sandbox.proto)
// says about one run, in the worker's terms. The message comes from another
// process, so every field is range-checked: a bad one is an error status,
// never an out-of-range conversion.
#ifndef KILN_SERVER_EXEC_SANDBOX_STATS_H_
#define KILN_SERVER_EXEC_SANDBOX_STATS_H_

#include <string>

#include "absl/status/statusor.h"
#include "kiln/sandbox/v1/sandbox.pb.h"
#include "kiln/v1/resource_usage.pb.h"

namespace kiln::exec {

struct SandboxStats {
  int exit_code = -1;
  bool timed_out = false;
  bool oom_killed = false;
  bool tmp_full = false;
  bool shm_full = false;
  int orphans_reaped = 0;
  int killed_at_teardown = 0;
  std::string exec_error;    // argv[0] and why it could not be executed
  // The sandbox's part of the action's critical path: from its request to
  // the exec of the command, and from the command's exit to the result
  // (every process gone). A warm sandbox did the rest before.
  double setup_seconds = 0;
  double completion_seconds = 0;
  // How long the request waited for a warm sandbox that was still being
  // prepared (its namespaces and root not ready yet when the action came).
  double ready_wait_seconds = 0;
  // CPU times, peak memory, faults, I/O and context switches, orphans,
  // teardown kills, timeout/OOM flags and the setup time; the caller adds
  // the uid.
  kiln::v1::SandboxResourceUsage usage;
};

// The result's error (error_code/error_message) as a status, or INTERNAL
// naming the field that is out of range.
absl::StatusOr<SandboxStats> ReadSandboxResult(const kiln::sandbox::v1::SandboxResult& result);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_STATS_H_
