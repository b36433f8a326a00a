// kiln-sandbox: runs one command in Kiln's sandbox, like Bazel's
// linux-sandbox or bwrap. See --help.
#include <getopt.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/flag_types.h"
#include "common/posix.h"
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox/sandbox_init.h"
#include "sandbox/sandbox_proto.h"
#include "sandbox/sandbox_runner.h"
#include "sandbox/seccomp_filter.h"
#include "sandbox/stats_json.h"

namespace {

using kiln::sandbox::SandboxPolicy;
using kiln::sandbox::SandboxSpec;

// kiln-sandbox's own failures use these exit codes (sysexits.h); anything
// else is the command's status, 128+N when it died of signal N.
constexpr int kExitUsage = 64;         // a bad or unknown option, an impossible limit
constexpr int kExitMissingInput = 66;  // a bind source or work dir that does not exist
constexpr int kExitSetupFailed = 71;   // a setup step failed inside the sandbox
constexpr int kExitBusy = 75;          // every build user is in use
constexpr int kExitNoLimits = 78;      // a requested limit cannot be applied (no cgroup)

constexpr char kUsage[] = R"(Usage: kiln-sandbox [options] -- CMD [ARGS...]

Runs CMD in fresh PID, mount, network, IPC, UTS and cgroup namespaces (plus a
user namespace when not root), behind a PID-1 init that reaps every process,
chrooted (pivot_root) into a new root, as an unprivileged build user, and exits
with CMD's status (128+N if CMD died of signal N).

The root holds: /work (the work dir), read-only binds (default /bin /usr /lib
/lib64), a minimal /dev, a new /proc, a tmpfs /tmp, and synthesized
/etc/passwd, /etc/group and /etc/hosts. Nothing else of the host is visible.

Options:
  --work_dir=DIR        host directory mounted read-write at /work (default: empty tmpfs)
  --cwd=REL             working directory, relative to /work
  --bind=SRC[:DST]      read-only bind of a host path (repeatable); the first one
                        replaces the default binds
  --env=NAME=VALUE      environment variable (repeatable); the environment is exactly
                        these (without PATH, CMD is looked up in /usr/local/bin:/usr/bin:/bin
                        and shells use their built-in default path)
  --path_when_unset=P   add PATH=P when no --env sets PATH (Nix's policy: /path-not-set)
  --hostname=NAME       default localhost
  --domainname=NAME     default (none)
  --share_network       use the host network (needs --allow_host_network)
  --allow_host_network  operator policy: permit --share_network
  --linux32             32-bit personality
  --uname26             UNAME26 personality (uname reports 2.6.x)
  --allow_nested_sandbox  operator policy: let the action create namespaces (clone
                        with CLONE_NEW*, unshare, setns) and mount in them, e.g. for
                        a sandbox inside; the rest of the seccomp filter stays on
  --seccomp             accepted for compatibility; the filter is always on
  --tmp_size=SIZE       size of the /tmp tmpfs (and of /work without --work_dir), with
                        an inode per 4 KiB; default 1GiB, 0 unlimited
  --shm_size=SIZE       size of the /dev/shm tmpfs, likewise; default 256MiB, 0 unlimited
  --max_processes=N     RLIMIT_NPROC of the build user (fork fails with EAGAIN);
                        needs no cgroup; default 4096, 0 unlimited
  --max_file_size=SIZE  RLIMIT_FSIZE (SIGXFSZ, then EFBIG); default 0, unlimited
  --memory=SIZE         memory limit, e.g. 512MiB (needs a writable memory cgroup)
  --pids=N              process limit
  --cpus=X              CPU limit in cores (0.01 to 4096), e.g. 1.5
  --cgroup_parent=DIR   cgroup v2 directory to create the limits' cgroup in (default:
                        kiln-sandbox's own cgroup, which must then have no other
                        processes on v2); kiln-worker passes its delegated cgroup
  --timeout=DURATION    e.g. 30s or 2m; SIGTERM, then SIGKILL after --kill_grace
  --kill_grace=DURATION default 5s
  --uid=N --gid=N       the build user (default: a free uid of the pool)
  --uid_pool_base=N     first uid of the build-user pool (default 61000)
  --uid_pool_size=N     size of the pool (default 64)
  --stats_file=FILE     write the result (exit status, stage times, rusage, peak
                        memory, cpu throttling, orphans reaped, timeout, OOM) as JSON
  --serve_fd=FD         serve one action over the stream socket FD (kiln-worker's warm
                        sandboxes): read a SandboxRequest to prepare for, prepare,
                        read the action's SandboxRequest, answer with a SandboxResult
                        as soon as its processes are gone, tear down, exit (the
                        protocol is proto/kiln/sandbox/v1/sandbox.proto); no other
                        option or CMD is taken then
  --spawner_fd=FD       kiln-worker's spawner: for each stream socket received over
                        the seqpacket socket FD (SCM_RIGHTS), fork a launcher that
                        serves it as --serve_fd would, and answer with its pid and
                        a pidfd; ends when FD's other end is closed
  --help

Exit codes of kiln-sandbox itself: 64 bad option, 66 missing input, 71 setup
failed, 75 no free build user, 78 limit cannot be applied, 127 CMD not executable.

Example:
  kiln-sandbox --work_dir=$PWD --env=PATH=/usr/bin:/bin --memory=1GiB --timeout=60s \
      -- sh -c 'make -j2 && make test'
)";

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "kiln-sandbox: %s\n", message.c_str());
  std::exit(code);
}

int ExitCodeFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return kExitUsage;
    case absl::StatusCode::kNotFound: return kExitMissingInput;
    case absl::StatusCode::kResourceExhausted: return kExitBusy;
    case absl::StatusCode::kFailedPrecondition: return kExitNoLimits;
    default: return kExitSetupFailed;
  }
}

template <typename T>
T ParseNumber(const char* option, const char* text) {
  T value;
  if (!absl::SimpleAtoi(text, &value)) Fail(kExitUsage, absl::StrCat("--", option, "=", text, ": not a number"));
  return value;
}

int64_t ParseSize(const char* option, const char* text) {
  kiln::ByteSize size;
  std::string error;
  if (!AbslParseFlag(text, &size, &error)) Fail(kExitUsage, absl::StrCat("--", option, ": ", error));
  return static_cast<int64_t>(size.bytes);
}

absl::Duration ParseDuration(const char* option, const char* text) {
  absl::Duration d;
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) return absl::Seconds(seconds);
  if (!absl::ParseDuration(text, &d)) {
    Fail(kExitUsage, absl::StrCat("--", option, "=", text, ": not a duration (e.g. 30s, 2m, 1.5)"));
  }
  return d;
}

// kiln-sandbox --serve_fd: one action over a socket (sandbox_proto.h). Every
// action request gets exactly one SandboxResult, an error one included.
// `argv`: ours, for PID 1 to wipe (it would show this binary's host path).
int Serve(int fd, int argc, char** argv) {
  namespace sb = kiln::sandbox;
  sb::pb::SandboxRequest prepare_message;
  if (!sb::ReadMessage(fd, &prepare_message).ok()) return 0;  // the worker went away
  SandboxSpec prepared;
  SandboxPolicy policy;
  absl::Status parsed = sb::FromRequest(prepare_message, &prepared, &policy);
  prepared.launcher_argv_begin = argv[0];
  prepared.launcher_argv_end = argv[argc - 1] + std::strlen(argv[argc - 1]) + 1;
  absl::StatusOr<std::unique_ptr<sb::PreparedSandbox>> sandbox =
      parsed.ok() ? sb::PreparedSandbox::Prepare(prepared, policy)
                  : absl::StatusOr<std::unique_ptr<sb::PreparedSandbox>>(parsed);
  if (!sandbox.ok()) {
    // Nothing to tear down: a stop request (SIGTERM, blocked since the
    // spawner forked us) may end us at once.
    sigset_t stop;
    sigemptyset(&stop);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, sig);
    sigprocmask(SIG_UNBLOCK, &stop, nullptr);
  }
  // Wait for the action (or the worker closing the socket, or SIGTERM).
  while (true) {
    struct pollfd fds[2] = {{fd, POLLIN, 0}, {sandbox.ok() ? (*sandbox)->signal_fd() : -1, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return kExitSetupFailed;
    }
    if (fds[1].revents & POLLIN) return 0;  // stopped while waiting: the destructor tears down
    if (fds[0].revents != 0) break;
  }
  sb::pb::SandboxRequest action_message;
  if (!sb::ReadMessage(fd, &action_message).ok()) return 0;
  SandboxSpec spec;
  SandboxPolicy action_policy;
  absl::Status parsed_action = sb::FromRequest(action_message, &spec, &action_policy);
  absl::StatusOr<kiln::sandbox::SandboxResult> result =
      !parsed_action.ok() ? parsed_action
      : sandbox.ok()      ? (*sandbox)->Run(spec, action_policy)
                          : absl::StatusOr<kiln::sandbox::SandboxResult>(sandbox.status());
  // The answer goes out now; the namespaces and the cgroup go afterwards.
  (void)sb::WriteMessage(fd, result.ok() ? sb::ToResultMessage(*result) : sb::ErrorResultMessage(result.status()));
  close(fd);
  // Nothing of the action runs any more: the teardown (PID 1 exiting, the
  // cgroup's removal) finishes even if the thread that started us ends now
  // (PR_SET_PDEATHSIG follows the parent thread, e.g. a worker's slot thread
  // at shutdown), so that no cgroup is left behind.
  prctl(PR_SET_PDEATHSIG, 0);
  return 0;
}

// kiln-sandbox --spawner_fd: kiln-worker's one long-lived spawner. For each
// socket it is sent, it forks a launcher that serves one action on it, as
// --serve_fd does. A fork of this small single-threaded process costs less
// than an exec of kiln-sandbox (glibc's start-up alone makes dozens of
// cpuid calls, each a VM exit on a virtual machine), and what it prepared
// once is inherited: the compiled seccomp filter. It ends when the worker
// closes its end of the socket (the worker exiting, even by SIGKILL);
// launchers still waiting for their action then die with it (their
// parent-death signal), and those already answered finish their teardown.
int RunSpawner(int control, int argc, char** argv) {
  // Not tied to the worker thread that happened to start it.
  prctl(PR_SET_PDEATHSIG, 0);
  // Blocked, not ignored: a launcher inherits the mask, so a stop request
  // the worker sends it before it is ready (a pool shutting down) stays
  // pending until its signalfd reads it, where an ignored one would be
  // lost. The spawner itself (in the worker's process group, which a
  // terminal's ^C reaches) ends only with the worker's socket.
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, sig);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Finished launchers are reaped here, but only between spawns: until then
  // a launcher's pid stays its own, so the pidfd opened for it is right.
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  sigprocmask(SIG_BLOCK, &child, nullptr);
  const int child_fd = signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
  if (child_fd < 0) return kExitSetupFailed;
  kiln::sandbox::SeccompProgram unused;
  std::string error;
  (void)kiln::sandbox::CompileSeccompFilter({}, &unused, &error);
  // Once here rather than in every sandbox's PID 1: the launchers inherit
  // the empty set, and the spawner never execs. Without CAP_SETPCAP (an
  // unprivileged worker) this fails and changes nothing; PID 1 then empties
  // the set in its user namespace, where the kernel filled it again.
  (void)kiln::sandbox::EmptyBoundingSet();
  const pid_t self = getpid();
  while (true) {
    struct pollfd fds[2] = {{control, POLLIN, 0}, {child_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return kExitSetupFailed;
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo info;
      while (read(child_fd, &info, sizeof info) > 0) {
      }
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    if (fds[0].revents == 0) continue;
    char byte;
    int serve_fd = -1;
    if (kiln::ReceiveWithDescriptor(control, &byte, 1, &serve_fd) <= 0) return 0;  // the worker is gone
    if (serve_fd < 0) {
      const int32_t invalid = -EINVAL;
      (void)kiln::SendWithDescriptor(control, &invalid, sizeof invalid, -1);
      continue;
    }
    const pid_t pid = fork();
    if (pid == 0) {
      close(control);
      close(child_fd);
      signal(SIGPIPE, SIG_DFL);
      sigprocmask(SIG_UNBLOCK, &child, nullptr);  // SIGINT, SIGTERM, SIGHUP stay blocked (above)
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != self) _exit(0);  // the spawner died before that line
      _exit(Serve(serve_fd, argc, argv));
    }
    const int pidfd = pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
    const int spawn_error = pid < 0 ? errno : 0;
    close(serve_fd);
    // The answer: the launcher's pid (or -errno), with a pidfd for it.
    const int32_t pid_or_error = pid > 0 ? pid : -spawn_error;
    (void)kiln::SendWithDescriptor(control, &pid_or_error, sizeof pid_or_error, pidfd);
    if (pidfd >= 0) close(pidfd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // If whoever started us dies, we die too; PID 1 follows, and the namespace with it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);

  SandboxSpec spec;
  SandboxPolicy policy;
  spec.binds = kiln::sandbox::DefaultBinds();
  bool custom_binds = false;
  std::string stats_file;
  enum {
    kWorkDir = 1000, kCwd, kBind, kEnv, kHostname, kDomainname, kShareNetwork, kAllowHostNetwork,
    kLinux32, kUname26, kSeccomp, kAllowNestedSandbox, kMemory, kPids, kCpus, kTimeout, kKillGrace, kUid, kGid,
    kUidPoolBase, kUidPoolSize, kStatsFile, kHelp, kTmpSize, kShmSize, kMaxProcesses, kMaxFileSize,
    kPathWhenUnset, kCgroupParent, kServeFd, kSpawnerFd,
  };
  static const struct option kOptions[] = {
      {"work_dir", required_argument, nullptr, kWorkDir},
      {"cwd", required_argument, nullptr, kCwd},
      {"bind", required_argument, nullptr, kBind},
      {"env", required_argument, nullptr, kEnv},
      {"path_when_unset", required_argument, nullptr, kPathWhenUnset},
      {"hostname", required_argument, nullptr, kHostname},
      {"domainname", required_argument, nullptr, kDomainname},
      {"share_network", no_argument, nullptr, kShareNetwork},
      {"allow_host_network", no_argument, nullptr, kAllowHostNetwork},
      {"linux32", no_argument, nullptr, kLinux32},
      {"uname26", no_argument, nullptr, kUname26},
      {"seccomp", no_argument, nullptr, kSeccomp},
      {"allow_nested_sandbox", no_argument, nullptr, kAllowNestedSandbox},
      {"memory", required_argument, nullptr, kMemory},
      {"tmp_size", required_argument, nullptr, kTmpSize},
      {"shm_size", required_argument, nullptr, kShmSize},
      {"max_processes", required_argument, nullptr, kMaxProcesses},
      {"max_file_size", required_argument, nullptr, kMaxFileSize},
      {"pids", required_argument, nullptr, kPids},
      {"cpus", required_argument, nullptr, kCpus},
      {"cgroup_parent", required_argument, nullptr, kCgroupParent},
      {"timeout", required_argument, nullptr, kTimeout},
      {"kill_grace", required_argument, nullptr, kKillGrace},
      {"uid", required_argument, nullptr, kUid},
      {"gid", required_argument, nullptr, kGid},
      {"uid_pool_base", required_argument, nullptr, kUidPoolBase},
      {"uid_pool_size", required_argument, nullptr, kUidPoolSize},
      {"stats_file", required_argument, nullptr, kStatsFile},
      {"serve_fd", required_argument, nullptr, kServeFd},
      {"spawner_fd", required_argument, nullptr, kSpawnerFd},
      {"help", no_argument, nullptr, kHelp},
      {nullptr, 0, nullptr, 0},
  };
  opterr = 0;  // we print our own message for unknown options
  // "+": stop at the first non-option, so CMD's own options are never ours.
  for (int option; (option = getopt_long(argc, argv, "+", kOptions, nullptr)) != -1;) {
    switch (option) {
      case kWorkDir: spec.work_dir = optarg; break;
      case kCwd: spec.cwd = optarg; break;
      case kBind: {
        if (!custom_binds) spec.binds.clear();
        custom_binds = true;
        std::string value = optarg;
        size_t colon = value.find(':');
        std::string source = value.substr(0, colon);
        std::string target = colon == std::string::npos ? source : value.substr(colon + 1);
        spec.binds.push_back({source, target, false});
        break;
      }
      case kEnv: {
        std::string value = optarg;
        size_t eq = value.find('=');
        if (eq == std::string::npos || eq == 0) Fail(kExitUsage, "--env=" + value + ": expected NAME=VALUE");
        spec.env[value.substr(0, eq)] = value.substr(eq + 1);
        break;
      }
      case kPathWhenUnset: spec.path_when_unset = optarg; break;
      case kHostname: spec.hostname = optarg; break;
      case kDomainname: spec.domainname = optarg; break;
      case kShareNetwork: spec.share_network = true; break;
      case kAllowHostNetwork: policy.allow_host_network = true; break;
      case kLinux32: spec.personality_linux32 = true; break;
      case kUname26: spec.personality_uname26 = true; break;
      case kSeccomp: break;  // the filter is always on
      case kAllowNestedSandbox: spec.allow_nested_sandbox = true; break;
      case kMemory: spec.memory_bytes = ParseSize("memory", optarg); break;
      case kTmpSize: spec.tmp_size_bytes = ParseSize("tmp_size", optarg); break;
      case kShmSize: spec.shm_size_bytes = ParseSize("shm_size", optarg); break;
      case kMaxProcesses: spec.max_processes = ParseNumber<int64_t>("max_processes", optarg); break;
      case kMaxFileSize: spec.max_file_size_bytes = ParseSize("max_file_size", optarg); break;
      case kPids: spec.pids = ParseNumber<int64_t>("pids", optarg); break;
      case kCpus:
        if (!absl::SimpleAtod(optarg, &spec.cpus)) Fail(kExitUsage, absl::StrCat("--cpus=", optarg, ": not a number"));
        break;
      case kCgroupParent: spec.cgroup_parent = optarg; break;
      case kTimeout: spec.timeout = ParseDuration("timeout", optarg); break;
      case kKillGrace: spec.kill_grace = ParseDuration("kill_grace", optarg); break;
      case kUid: spec.uid = ParseNumber<uint32_t>("uid", optarg); break;
      case kGid: spec.gid = ParseNumber<uint32_t>("gid", optarg); break;
      case kUidPoolBase: policy.uid_pool_base = ParseNumber<uint32_t>("uid_pool_base", optarg); break;
      case kUidPoolSize: policy.uid_pool_size = ParseNumber<int>("uid_pool_size", optarg); break;
      case kStatsFile: stats_file = optarg; break;
      case kHelp: std::fputs(kUsage, stdout); return 0;
      case kServeFd: return Serve(ParseNumber<int>("serve_fd", optarg), argc, argv);
      case kSpawnerFd: return RunSpawner(ParseNumber<int>("spawner_fd", optarg), argc, argv);
      default:
        Fail(kExitUsage, absl::StrCat("unknown or incomplete option \"", argv[optind - 1],
                                      "\"; see kiln-sandbox --help"));
    }
  }
  for (int i = optind; i < argc; ++i) spec.argv.push_back(argv[i]);
  if (spec.argv.empty()) Fail(kExitUsage, "no command given; usage: kiln-sandbox [options] -- CMD [ARGS...]");

  // Everything is copied into `spec`: PID 1 may wipe its copy of argv.
  spec.launcher_argv_begin = argv[0];
  spec.launcher_argv_end = argv[argc - 1] + std::strlen(argv[argc - 1]) + 1;
  absl::StatusOr<kiln::sandbox::SandboxResult> result = kiln::sandbox::RunSandbox(spec, policy);
  if (!result.ok()) Fail(ExitCodeFor(result.status().code()), std::string(result.status().message()));
  if (!stats_file.empty()) {
    // Atomic (a reader never sees half a report) but not fsynced: the
    // report is read right away, and an fsync would cost every action ~0.4 ms.
    std::string dir = stats_file.rfind('/') == std::string::npos ? "." : stats_file.substr(0, stats_file.rfind('/'));
    absl::Status written = kiln::WriteFileAtomically(stats_file, kiln::sandbox::ResultToJson(*result),
                                                     dir.empty() ? "/" : dir, 0644, /*durable=*/false);
    if (!written.ok()) std::fprintf(stderr, "kiln-sandbox: --stats_file: %s\n", std::string(written.message()).c_str());
  }
  if (!result->exec_error.empty()) {
    std::fprintf(stderr, "kiln-sandbox: cannot execute %s\n", result->exec_error.c_str());
  }
  // With --stats_file the caller reads these from the report: CMD's stderr
  // stays CMD's own (the worker puts its remarks in ExecuteResponse.message).
  if (!stats_file.empty()) return result->exit_code;
  if (result->timed_out) std::fprintf(stderr, "kiln-sandbox: timed out after %s\n", absl::FormatDuration(spec.timeout).c_str());
  if (result->tmp_full) std::fprintf(stderr, "kiln-sandbox: /tmp was full (--tmp_size=%lld bytes)\n", static_cast<long long>(spec.tmp_size_bytes));
  if (result->shm_full) std::fprintf(stderr, "kiln-sandbox: /dev/shm was full (--shm_size=%lld bytes)\n", static_cast<long long>(spec.shm_size_bytes));
  if (result->file_size_exceeded) std::fprintf(stderr, "kiln-sandbox: a file exceeded --max_file_size=%lld bytes\n", static_cast<long long>(spec.max_file_size_bytes));
  if (result->oom_killed) std::fprintf(stderr, "kiln-sandbox: killed by the OOM killer (memory limit %lld bytes)\n", static_cast<long long>(spec.memory_bytes));
  return result->exit_code;
}
