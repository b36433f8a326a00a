// Reading back what kiln-sandbox's --stats_file says about one run
// (sandbox/stats_json.h writes it). The file comes from another process, so
// every field is checked for type and range: a bad file is an error status,
// never an exception or an out-of-range conversion, and an absent field
// takes its default.
#ifndef KILN_SERVER_EXEC_SANDBOX_STATS_H_
#define KILN_SERVER_EXEC_SANDBOX_STATS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  double setup_seconds = 0;  // clone() to the exec of the action
  // CPU times, peak memory, faults, I/O and context switches, orphans,
  // teardown kills, timeout/OOM flags and the setup time; the caller adds
  // the uid.
  kiln::v1::SandboxResourceUsage usage;
};

// INTERNAL naming the field when `text` is not a JSON object or a field has
// the wrong type or is out of range. `default_exit_code` is used when the
// file has no exit_code.
absl::StatusOr<SandboxStats> ParseSandboxStats(absl::string_view text, int default_exit_code);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_STATS_H_
