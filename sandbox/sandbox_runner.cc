#include "sandbox/sandbox_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_paths.h"
#include "sandbox/sandbox_init.h"
#include "sandbox/uid_pool.h"

namespace kiln::sandbox {
namespace {

constexpr size_t kInitStackBytes = 1 << 20;

int64_t MonotonicNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// What PID 1 said over the report pipe.
struct Report {
  std::string error;
  std::string exec_error;
  std::optional<int64_t> namespaces_ns, root_ns, network_ns, exec_ns;
  bool done = false;
  int orphans = 0, remaining = 0, exit_code = -1, signal = 0, tmp_full = 0, shm_full = 0;
};

Report ParseReport(const std::string& text) {
  Report report;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "error ")) {
      report.error = std::string(line);
    } else if (absl::ConsumePrefix(&line, "exec-error ")) {
      report.exec_error = std::string(line);
    } else if (absl::ConsumePrefix(&line, "stage ")) {
      std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
      int64_t ns = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &ns)) continue;
      if (parts[0] == "namespaces") report.namespaces_ns = ns;
      if (parts[0] == "root") report.root_ns = ns;
      if (parts[0] == "network") report.network_ns = ns;
      if (parts[0] == "exec") report.exec_ns = ns;
    } else if (absl::ConsumePrefix(&line, "done ")) {
      report.done = true;
      for (absl::string_view field : absl::StrSplit(line, ' ')) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
        int value = 0;
        if (!absl::SimpleAtoi(kv.second, &value)) continue;
        if (kv.first == "orphans") report.orphans = value;
        if (kv.first == "remaining") report.remaining = value;
        if (kv.first == "exit") report.exit_code = value;
        if (kv.first == "signal") report.signal = value;
        if (kv.first == "tmp_full") report.tmp_full = value;
        if (kv.first == "shm_full") report.shm_full = value;
      }
    }
  }
  return report;
}

std::string CgroupName() {
  static std::atomic<int> counter{0};
  return absl::StrCat(kSandboxCgroupPrefix, getpid(), "-", counter++);
}

absl::Duration Since(int64_t start_ns, std::optional<int64_t> at_ns) {
  return at_ns ? absl::Nanoseconds(*at_ns - start_ns) : absl::ZeroDuration();
}

// Waits for PID 1 to exit while enforcing the timeout and forwarding the
// launcher's own termination signals. Returns true if the timeout fired.
bool SuperviseUntilExit(pid_t init, int pidfd, int signal_fd, const SandboxSpec& spec,
                        int64_t start_ns, Cgroup* cgroup) {
  const bool has_timeout = spec.timeout > absl::ZeroDuration();
  int64_t term_at = has_timeout ? start_ns + absl::ToInt64Nanoseconds(spec.timeout) : INT64_MAX;
  int64_t kill_at = INT64_MAX;
  bool timed_out = false;
  while (true) {
    int64_t now = MonotonicNanos();
    if (now >= term_at) {
      // Ask nicely first: PID 1 forwards SIGTERM to the action's process group.
      timed_out = true;
      kill(init, SIGTERM);
      term_at = INT64_MAX;
      kill_at = now + absl::ToInt64Nanoseconds(spec.kill_grace);
    }
    if (now >= kill_at) {
      // SIGKILL of PID 1 takes down its whole PID namespace.
      kill(init, SIGKILL);
      if (cgroup != nullptr) cgroup->KillAll();
      kill_at = INT64_MAX;
    }
    int64_t next = std::min(term_at, kill_at);
    int timeout_ms = next == INT64_MAX ? -1 : static_cast<int>(std::max<int64_t>(0, (next - now) / 1000000 + 1));
    struct pollfd fds[2] = {{pidfd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    int ready = poll(fds, 2, timeout_ms);
    if (ready < 0 && errno != EINTR) return timed_out;
    if (fds[0].revents & POLLIN) return timed_out;
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo info;
      if (read(signal_fd, &info, sizeof info) == sizeof info) {
        kill(init, static_cast<int>(info.ssi_signo));
        // Being asked to stop is like a timeout: after the grace period the
        // whole sandbox is killed, whatever the action does with the signal.
        if (kill_at == INT64_MAX) kill_at = MonotonicNanos() + absl::ToInt64Nanoseconds(spec.kill_grace);
      }
    }
  }
}

}  // namespace

absl::StatusOr<SandboxResult> RunSandbox(const SandboxSpec& spec, const SandboxPolicy& policy) {
  RETURN_IF_ERROR(ValidateSpec(spec, policy));
  const int64_t start_ns = MonotonicNanos();
  SandboxResult result;
  result.user_namespace = geteuid() != 0;

  ChildConfig config;
  config.spec = &spec;
  config.user_namespace = result.user_namespace;
  config.outer_uid = geteuid();
  config.outer_gid = getegid();
  std::string runtime_dir = result.user_namespace
                                ? absl::StrCat("/tmp/kiln-sandbox-", geteuid())
                                : policy.lock_dir;
  std::optional<UidLease> lease;
  if (spec.uid.has_value()) {
    config.uid = *spec.uid;
  } else if (result.user_namespace) {
    config.uid = policy.uid_pool_base;  // namespaced: no other sandbox can see it
  } else {
    ASSIGN_OR_RETURN(lease, AcquireBuildUid(runtime_dir, policy.uid_pool_base,
                                            policy.uid_pool_size));
    config.uid = lease->uid();
  }
  config.gid = spec.gid.value_or(static_cast<gid_t>(config.uid));
  result.uid = config.uid;
  // Every sandbox mounts its own tmpfs on this one empty directory, each in
  // its own mount namespace.
  config.root_mount_point = runtime_dir + "/root";
  RETURN_IF_ERROR(MakeDirectories(config.root_mount_point, 0755));

  // A cgroup only when a limit asks for one: moving a process into a cgroup
  // costs milliseconds on cgroup v1, more than the rest of the setup.
  std::unique_ptr<Cgroup> cgroup;
  if (spec.memory_bytes > 0 || spec.pids > 0 || spec.cpus > 0) {
    ASSIGN_OR_RETURN(cgroup, Cgroup::Create(CgroupName(), {spec.memory_bytes, spec.pids, spec.cpus},
                                            spec.cgroup_parent));
  }
  result.stages.cgroup_setup = absl::Nanoseconds(MonotonicNanos() - start_ns);

  // The forwarded signals are blocked here and read from a signalfd; PID 1
  // inherits the mask and unblocks once it can forward them.
  sigset_t forwarded, previous_mask;
  sigemptyset(&forwarded);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&forwarded, sig);
  sigprocmask(SIG_BLOCK, &forwarded, &previous_mask);
  UniqueFd signal_fd(signalfd(-1, &forwarded, SFD_CLOEXEC | SFD_NONBLOCK));

  int go_pipe[2], report_pipe[2];
  if (pipe2(go_pipe, O_CLOEXEC) != 0 || pipe2(report_pipe, O_CLOEXEC) != 0) {
    sigprocmask(SIG_SETMASK, &previous_mask, nullptr);
    return PosixError("pipe", errno);
  }
  UniqueFd go_write(go_pipe[1]), report_read(report_pipe[0]);
  config.go_fd = go_pipe[0];
  config.report_fd = report_pipe[1];

  // CLONE_NEWCGROUP is left to PID 1, once it is in the action's cgroup.
  int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  if (!spec.share_network) flags |= CLONE_NEWNET;
  if (result.user_namespace) flags |= CLONE_NEWUSER;
  void* stack = mmap(nullptr, kInitStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return PosixError("mmap the init's stack", errno);
  const int64_t clone_ns = MonotonicNanos();
  pid_t init = clone(RunSandboxInit, static_cast<char*>(stack) + kInitStackBytes, flags, &config);
  int clone_error = errno;
  result.stages.clone = absl::Nanoseconds(MonotonicNanos() - start_ns);
  close(go_pipe[0]);
  close(report_pipe[1]);
  if (init < 0) {
    munmap(stack, kInitStackBytes);
    sigprocmask(SIG_SETMASK, &previous_mask, nullptr);
    return PosixError("clone the sandbox's namespaces", clone_error);
  }
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, init, 0)));

  absl::Status placed = cgroup != nullptr ? cgroup->AddProcess(init) : absl::OkStatus();
  if (placed.ok()) {
    char go = 1;
    if (write(go_write.get(), &go, 1) != 1) placed = PosixError("start the sandbox", errno);
  }
  go_write.Reset();  // without the byte, PID 1 exits before doing anything
  result.timed_out =
      placed.ok() && SuperviseUntilExit(init, pidfd.get(), signal_fd.get(), spec, clone_ns, cgroup.get());
  int status = 0;
  while (wait4(init, &status, 0, &result.rusage) < 0 && errno == EINTR) {
  }
  const int64_t end_ns = MonotonicNanos();
  munmap(stack, kInitStackBytes);
  sigprocmask(SIG_SETMASK, &previous_mask, nullptr);
  RETURN_IF_ERROR(placed);

  std::string report_text;
  char buffer[4096];
  for (ssize_t n; (n = read(report_read.get(), buffer, sizeof buffer)) > 0;) report_text.append(buffer, n);
  Report report = ParseReport(report_text);
  if (!report.error.empty()) {
    return absl::InternalError(absl::StrCat("sandbox setup failed: ", report.error));
  }
  result.wall_time = absl::Nanoseconds(end_ns - clone_ns);
  result.stages.namespaces = Since(clone_ns, report.namespaces_ns);
  result.stages.root = Since(clone_ns, report.root_ns);
  result.stages.network = Since(clone_ns, report.network_ns);
  result.stages.exec = Since(clone_ns, report.exec_ns);
  result.orphans_reaped = report.orphans;
  result.killed_at_teardown = report.remaining;
  result.exec_error = report.exec_error;
  if (report.done) {
    result.exit_code = report.exit_code;
    result.signal = report.signal;
    result.tmp_full = report.tmp_full != 0;
    result.shm_full = report.shm_full != 0;
  } else {
    // PID 1 itself was killed (timeout or OOM): so was the action.
    result.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    result.exit_code = WIFSIGNALED(status) ? 128 + result.signal : WEXITSTATUS(status);
  }
  result.file_size_exceeded = result.signal == SIGXFSZ;
  if (cgroup != nullptr) {
    result.oom_killed = cgroup->OomKilled();
    result.peak_memory_bytes = cgroup->PeakMemoryBytes();
    result.cpu_throttled_seconds = cgroup->CpuThrottledSeconds();
    result.cgroups = cgroup->paths();
    cgroup.reset();  // killed and removed before the caller reports "done"
  }
  if (result.peak_memory_bytes == 0) result.peak_memory_bytes = int64_t{result.rusage.ru_maxrss} * 1024;
  return result;
}

}  // namespace kiln::sandbox
