// The stats file kiln-sandbox leaves for the worker, read back by
// ParseSandboxStats (server/exec/sandbox_stats.h) from arbitrary bytes: an
// error status or values in range, never an exception or an overflow.
#include <cstdint>
#include <string>

#include "server/exec/sandbox_stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<kiln::exec::SandboxStats> stats =
      kiln::exec::ParseSandboxStats(absl::string_view(reinterpret_cast<const char*>(data), size), 0);
  if (!stats.ok()) {
    if (stats.status().code() != absl::StatusCode::kInternal) __builtin_trap();
    return 0;
  }
  const auto& usage = stats->usage;
  if (stats->orphans_reaped < 0 || stats->killed_at_teardown < 0 || !(stats->setup_seconds >= 0) ||
      usage.peak_memory_bytes() < 0 || usage.maximum_resident_set_size() < 0 ||
      usage.user_time().seconds() < 0 || usage.system_time().seconds() < 0) {
    __builtin_trap();
  }
  return 0;
}
