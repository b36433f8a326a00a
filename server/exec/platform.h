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
// What this worker *is* is declared by the operator, as Buildbarn workers do:
// --platform=NAME=VALUE (repeatable, e.g. container-image=docker://...,
// Pool=default). An action's property that Kiln does not implement must
// match one declared value exactly; otherwise the error names what this
// worker offers. The same declaration is what a cluster worker reports to its
// scheduler (AdvertisedPlatform). Properties the operator lists in
// --platform_ignore are accepted whatever their value; anything else is
// INVALID_ARGUMENT naming the supported ones. Action.platform wins over the
// deprecated Command.platform.
#ifndef KILN_SERVER_EXEC_PLATFORM_H_
#define KILN_SERVER_EXEC_PLATFORM_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/digest.h"

namespace kiln::exec {

struct PlatformPolicy {
  bool allow_network = false;
  std::set<std::string> ignored;  // accepted and ignored property names
  // The operator's declaration of this worker: name -> values it offers.
  std::map<std::string, std::set<std::string>> declared;
};

// Parses --platform values ("NAME=VALUE") into `policy.declared`.
// INVALID_ARGUMENT for an entry without a name or '=', or one that redefines
// a property Kiln implements (memory, cpus, ...).
absl::Status DeclarePlatform(const std::vector<std::string>& entries, PlatformPolicy* policy);

// The declared platform as REAPI wants it: properties sorted by name, then
// value (what Buildbarn's scheduler expects from a worker).
rev2::Platform AdvertisedPlatform(const PlatformPolicy& policy);

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
