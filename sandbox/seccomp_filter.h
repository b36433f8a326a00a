// The seccomp filter every action runs under (on by default in kiln-sandbox).
// Modelled on Docker's default profile, bubblewrap and nsjail: an allow-list
// would break real build tools, so this is a deny-list of the calls that
// reach kernel attack surface an action has no business with.
#ifndef KILN_SANDBOX_SECCOMP_FILTER_H_
#define KILN_SANDBOX_SECCOMP_FILTER_H_

#include <string>

namespace kiln::sandbox {

struct SeccompOptions {
  // Operator opt-in (--allow_nested_sandbox): namespace creation (clone with
  // CLONE_NEW*, unshare, setns) is allowed. Everything else stays denied.
  bool allow_nested_sandbox = false;
};

// Loads the filter into the calling thread (no_new_privs must be set).
// Returns false with `error` naming the failed step and errno set.
bool InstallSeccompFilter(const SeccompOptions& options, std::string* error);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SECCOMP_FILTER_H_
