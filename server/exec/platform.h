// Platform properties Kiln understands, checked before anything runs.
//
// Standard: OSFamily (linux) and ISA (x86-64). Kiln's own, and the spellings
// other systems' users already write:
//   network        off | on            (BuildBarn/BuildBuddy style; "on" needs
//   dockerNetwork  off | standard       the operator's --allow_network)
//   block-network  true | false        (Buildfarm)
//   memory         bytes, e.g. 2GiB    per-action memory limit (OOM-killed beyond)
//   pids           number              process limit
//   cpus           number, e.g. 1.5    CPU limit in cores
//   personality    linux | linux32     32-bit personality on request
// Properties the operator lists in --platform_ignore (e.g. container-image)
// are accepted and ignored; anything else is INVALID_ARGUMENT naming the
// supported ones. Action.platform wins over the deprecated Command.platform.
#ifndef KILN_SERVER_EXEC_PLATFORM_H_
#define KILN_SERVER_EXEC_PLATFORM_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/digest.h"

namespace kiln::exec {

struct PlatformPolicy {
  bool allow_network = false;
  std::set<std::string> ignored;  // accepted and ignored property names
};

struct ActionLimits {
  bool network = false;
  int64_t memory_bytes = 0;
  int64_t pids = 0;
  double cpus = 0;
  bool linux32 = false;
};

// The property names accepted, for capabilities and error messages.
std::vector<std::string> SupportedPlatformProperties();

absl::StatusOr<ActionLimits> ParsePlatform(const rev2::Action& action, const rev2::Command& command,
                                           const PlatformPolicy& policy);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_PLATFORM_H_
