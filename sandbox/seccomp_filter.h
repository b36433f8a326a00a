// The seccomp filter every action runs under (on by default in kiln-sandbox).
// Modelled on Docker's default profile, bubblewrap and nsjail: an allow-list
// would break real build tools, so this is a deny-list of the calls that
// reach kernel attack surface an action has no business with.
#ifndef KILN_SANDBOX_SECCOMP_FILTER_H_
#define KILN_SANDBOX_SECCOMP_FILTER_H_

#include <linux/filter.h>

#include <string>
#include <vector>

namespace kiln::sandbox {

struct SeccompOptions {
  // Operator opt-in (--allow_nested_sandbox): namespace creation (clone with
  // CLONE_NEW*, unshare, setns) is allowed. Everything else stays denied.
  bool allow_nested_sandbox = false;
};

// The filter as a BPF program, ready to load.
struct SeccompProgram {
  std::vector<struct sock_filter> instructions;
};

// Compiling takes libseccomp most of a millisecond: it is done once per
// process and variant (a warm sandbox's launcher inherits it from
// kiln-sandbox's spawner), and an action only loads the program.
bool CompileSeccompFilter(const SeccompOptions& options, SeccompProgram* program, std::string* error);
// Loads a compiled filter into the calling thread (no_new_privs must be set).
bool LoadSeccompProgram(const SeccompProgram& program, std::string* error);
// Both. Each returns false with `error` naming the failed step and errno set.
bool InstallSeccompFilter(const SeccompOptions& options, std::string* error);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SECCOMP_FILTER_H_
