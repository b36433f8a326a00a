// The SandboxResult kiln-sandbox sends the worker, read back by
// ReadSandboxResult (server/exec/sandbox_stats.h) from arbitrary bytes: a
// message that does not parse, an error status, or values in range, never a
// crash or an overflow.
#include <cstdint>
#include <string>

#include "server/exec/sandbox_stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kiln::sandbox::v1::SandboxResult message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<kiln::exec::SandboxStats> stats = kiln::exec::ReadSandboxResult(message);
  if (!stats.ok()) return 0;
  const auto& usage = stats->usage;
  if (stats->orphans_reaped < 0 || stats->killed_at_teardown < 0 || !(stats->setup_seconds >= 0) ||
      !(stats->completion_seconds >= 0) || usage.peak_memory_bytes() < 0 ||
      usage.maximum_resident_set_size() < 0 || usage.user_time().seconds() < 0 ||
      usage.system_time().seconds() < 0) {
    __builtin_trap();
  }
  return 0;
}
