// What one sandboxed run is asked to do (SandboxSpec), what the operator
// allows (SandboxPolicy), and what happened (SandboxResult).
#ifndef KILN_SANDBOX_SANDBOX_SPEC_H_
#define KILN_SANDBOX_SANDBOX_SPEC_H_

#include <sys/resource.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace kiln::sandbox {

// The dummy PATH of Nix's builds, for callers that want that policy
// (kiln-sandbox --path_when_unset=/path-not-set). Off by default: a REAPI
// worker passes exactly the Command's environment, and shells without PATH
// use their built-in default path, as under Bazel's sandbox and Buildbarn.
inline constexpr char kNixUnsetPathValue[] = "/path-not-set";
// Where argv[0] is looked up when the environment has no PATH: what execvp
// and the shells use then.
inline constexpr char kDefaultLookupPath[] = "/usr/local/bin:/usr/bin:/bin";
// Where the working directory appears inside the sandbox.
inline constexpr char kWorkMountPoint[] = "/work";

struct BindMount {
  std::string source;  // absolute host path
  std::string target;  // absolute path inside the sandbox
  bool writable = false;
};

struct SandboxSpec {
  std::vector<std::string> argv;                // argv[0] is looked up in env PATH
  std::map<std::string, std::string> env;       // exactly the action's environment
  std::string path_when_unset;                  // PATH added when env has none; empty: none
  std::string work_dir;                         // host dir mounted rw at /work; empty: a tmpfs
  // When set, the work dir, stdout and stderr will be beneath this host
  // directory: a sandbox prepared with it pivots before its action comes,
  // and the launcher hands PID 1 the action's work dir (a clone of its
  // mount) and log files as descriptors (ChildConfig::work_from_launcher).
  std::string work_dir_parent;
  std::string cwd;                              // relative to /work
  std::vector<BindMount> binds;                 // read-only host paths (default /bin /usr /lib /lib64)
  std::string hostname = "localhost";
  std::string domainname = "(none)";
  bool share_network = false;                   // needs SandboxPolicy::allow_host_network
  bool personality_linux32 = false;
  bool personality_uname26 = false;
  // The seccomp filter (seccomp_filter.h) is always on; this operator opt-in
  // lets the action create namespaces (a sandbox inside the sandbox).
  bool allow_nested_sandbox = false;
  // Resource limits; 0 means unlimited. Any set limit needs a working cgroup.
  int64_t memory_bytes = 0;
  int64_t pids = 0;
  double cpus = 0;                              // CPU time per wall second, e.g. 1.5
  // The cgroup v2 directory the limits' cgroup is created in; empty: the
  // launcher's own cgroup. The worker passes the delegated cgroup it moved
  // out of (cgroup_delegation.h).
  std::string cgroup_parent;
  // Limits that need no cgroup, on by default; 0 means unlimited.
  int64_t tmp_size_bytes = int64_t{1} << 30;    // tmpfs /tmp (and /work when no work_dir)
  int64_t shm_size_bytes = int64_t{256} << 20;  // tmpfs /dev/shm
  int64_t max_processes = 4096;                 // RLIMIT_NPROC of the build user
  int64_t max_file_size_bytes = 0;              // RLIMIT_FSIZE (SIGXFSZ, then EFBIG)
  absl::Duration timeout = absl::ZeroDuration();  // zero: none
  absl::Duration kill_grace = absl::Seconds(5);   // SIGTERM to SIGKILL
  // The build user; chosen from the pool when unset.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  // The launcher's own argv strings, from argv[0] to the end of the last one
  // (contiguous, as the kernel lays them out), or null. PID 1 starts as a
  // copy of the launcher's memory and zeroes its copy, so that
  // /proc/1/cmdline inside shows no host paths (the work dir's, say).
  char* launcher_argv_begin = nullptr;
  char* launcher_argv_end = nullptr;
  // Descriptors the action gets as 0, 1 and 2 (-1: /dev/null for stdin,
  // inherit for stdout/stderr).
  int stdin_fd = -1;
  int stdout_fd = 1;
  int stderr_fd = 2;
  // When set, PID 1 opens these (append, O_NOFOLLOW) for the action's stdout
  // and stderr instead of using stdout_fd/stderr_fd: a warm sandbox was
  // cloned before the action's files existed (kiln-sandbox --serve_fd).
  std::string stdout_path;
  std::string stderr_path;
};

struct SandboxPolicy {
  bool allow_host_network = false;
  uid_t uid_pool_base = 61000;  // build users are uid_pool_base .. base+size-1
  int uid_pool_size = 64;
  std::string lock_dir = "/run/kiln-sandbox";  // per-uid locks of the pool
};

// When each stage ended: CLOCK_MONOTONIC nanoseconds, which every PID
// namespace shares; 0 when the stage was not reached. A warm sandbox
// (sandbox_runner.h) reaches `network` long before its `request`.
struct StageTimes {
  int64_t start = 0;          // the launcher started preparing
  int64_t cgroup_setup = 0;   // parent: cgroup created before clone
  int64_t clone = 0;          // clone() returned in the parent
  int64_t namespaces = 0;     // PID 1: uid map, / private
  int64_t root = 0;           // PID 1: new root built (without /work)
  int64_t network = 0;        // PID 1: loopback up: ready for the request
  int64_t request = 0;        // the launcher got the action's request
  int64_t exec = 0;           // PID 2 exec'd the command
  int64_t action_exited = 0;  // PID 1 reaped the action
  int64_t tree_gone = 0;      // PID 1 killed and reaped every other process
};

struct SandboxResult {
  int exit_code = -1;         // the action's exit status, or 128+signal
  int signal = 0;             // the signal that ended the action, 0 if it exited
  bool timed_out = false;
  bool oom_killed = false;
  int orphans_reaped = 0;     // processes PID 1 reaped besides the action
  int killed_at_teardown = 0; // processes still alive when the action ended
  int64_t peak_memory_bytes = 0;  // from the cgroup when there is one, else maxrss
  double cpu_throttled_seconds = 0;  // held back by the cpu limit (cgroup cpu.stat)
  std::vector<std::string> cgroups;  // the cgroup directories used (removed by now)
  absl::Duration wall_time;
  StageTimes stages;
  struct rusage rusage = {};  // the whole process tree
  uid_t uid = 0;              // the build user that ran the action
  std::string exec_error;     // set when the command could not be executed
  bool user_namespace = false;
  // Limits the action ran into, as far as they can be seen afterwards.
  bool tmp_full = false;             // /tmp had no free space or inodes left at the end
  bool shm_full = false;             // the same for /dev/shm
  bool file_size_exceeded = false;   // the action died of SIGXFSZ
};

// The kind of problem, for kiln-sandbox's exit code.
enum class SpecError { kUsage, kMissingInput };

// Checks a spec against the policy before anything runs: absolute bind paths
// that exist, a relative cwd, sane limits. INVALID_ARGUMENT (usage) or
// NOT_FOUND (missing input) with a message naming the option.
absl::Status ValidateSpec(const SandboxSpec& spec, const SandboxPolicy& policy);

// The default read-only binds: /bin, /usr, /lib, /lib64 where they exist.
std::vector<BindMount> DefaultBinds();

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SANDBOX_SPEC_H_
