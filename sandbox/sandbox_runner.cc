#include "sandbox/sandbox_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
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
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_paths.h"
#include "sandbox/sandbox_init.h"
#include "sandbox/sandbox_proto.h"
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
  int64_t namespaces_ns = 0, root_ns = 0, network_ns = 0, exec_ns = 0, action_exited_ns = 0, tree_gone_ns = 0;
  bool done = false;
  int orphans = 0, remaining = 0, exit_code = -1, signal = 0, tmp_full = 0, shm_full = 0;
  struct rusage rusage = {};  // the tree's, from PID 1 (RUSAGE_CHILDREN)
};

struct timeval Micros(int64_t us) { return {us / 1000000, us % 1000000}; }

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
      if (parts[0] == "action_exited") report.action_exited_ns = ns;
      if (parts[0] == "tree_gone") report.tree_gone_ns = ns;
    } else if (absl::ConsumePrefix(&line, "done ")) {
      report.done = true;
      for (absl::string_view field : absl::StrSplit(line, ' ')) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
        int64_t value = 0;
        if (!absl::SimpleAtoi(kv.second, &value)) continue;
        if (kv.first == "orphans") report.orphans = value;
        if (kv.first == "utime_us") report.rusage.ru_utime = Micros(value);
        if (kv.first == "stime_us") report.rusage.ru_stime = Micros(value);
        if (kv.first == "maxrss") report.rusage.ru_maxrss = value;
        if (kv.first == "minflt") report.rusage.ru_minflt = value;
        if (kv.first == "majflt") report.rusage.ru_majflt = value;
        if (kv.first == "inblock") report.rusage.ru_inblock = value;
        if (kv.first == "oublock") report.rusage.ru_oublock = value;
        if (kv.first == "nvcsw") report.rusage.ru_nvcsw = value;
        if (kv.first == "nivcsw") report.rusage.ru_nivcsw = value;
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

bool HasMountSetattr() {
  struct mount_attr attr = {};
  return mount_setattr(-1, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0 || errno != ENOSYS;
}

// What the launcher hands PID 1 with the action's request when PID 1
// pivoted while preparing (ChildConfig::work_from_launcher): a detached
// clone of the work dir's mount, nosuid, nodev and private, then the log
// files opened for appending. Each is opened beneath the work dir parent
// (Kiln's own directory, opened by name), never through a symlink.
// Cloning here, in the host's mount namespace, rather than in PID 1 from a
// detached copy of the parent made while preparing: closing that copy
// unmounted it, an RCU grace period on the action's path, and PID 1 held a
// handle on every action's directory until then.
absl::StatusOr<std::vector<UniqueFd>> OpenForInit(const SandboxSpec& spec) {
  ASSIGN_OR_RETURN(UniqueFd parent, OpenFile(spec.work_dir_parent, O_PATH | O_DIRECTORY | O_CLOEXEC));
  // CheckPreparedFor made sure each path is beneath the parent.
  auto beneath = [&](const std::string& path) {
    return absl::string_view(path).substr(spec.work_dir_parent.size() + 1);
  };
  std::vector<UniqueFd> handed;
  if (!spec.work_dir.empty()) {
    ASSIGN_OR_RETURN(UniqueFd work, OpenBeneath(parent.get(), beneath(spec.work_dir), O_PATH | O_DIRECTORY));
    UniqueFd tree(open_tree(work.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH));
    if (!tree.valid()) return PosixError("clone the work dir " + spec.work_dir, errno);
    struct mount_attr attr = {};
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.propagation = MS_PRIVATE;
    if (mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
      return PosixError("mount_setattr the work dir " + spec.work_dir, errno);
    }
    handed.push_back(std::move(tree));
  }
  for (const std::string* path : {&spec.stdout_path, &spec.stderr_path}) {
    if (path->empty()) continue;
    ASSIGN_OR_RETURN(UniqueFd log, OpenBeneath(parent.get(), beneath(*path), O_WRONLY | O_APPEND));
    handed.push_back(std::move(log));
  }
  return handed;
}

std::string CgroupName() {
  static std::atomic<int> counter{0};
  return absl::StrCat(kSandboxCgroupPrefix, getpid(), "-", counter++);
}


// Reads what PID 1 reports until it says "done" (the action's whole tree is
// gone) or the report ends (PID 1 exited: killed, or a setup step failed),
// while enforcing the timeout and forwarding the launcher's own termination
// signals. Returns true if the timeout fired.
bool SuperviseUntilDone(pid_t init, int report_fd, int signal_fd, const SandboxSpec& spec,
                        int64_t start_ns, Cgroup* cgroup, std::string* report_text) {
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
    struct pollfd fds[2] = {{report_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    int ready = poll(fds, 2, timeout_ms);
    if (ready < 0 && errno != EINTR) return timed_out;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buffer[4096];
      ssize_t n = read(report_fd, buffer, sizeof buffer);
      if (n <= 0 && !(n < 0 && errno == EINTR)) return timed_out;  // PID 1 is gone
      if (n > 0) report_text->append(buffer, n);
      // "done" is PID 1's last line, written once nothing else is left.
      size_t done = report_text->find("\ndone ");
      if ((absl::StartsWith(*report_text, "done ") || done != std::string::npos) &&
          report_text->back() == '\n') {
        return timed_out;
      }
    }
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

absl::Status CheckPreparedFor(const SandboxSpec& prepared, const SandboxSpec& action) {
  auto differs = [](absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat("the sandbox was prepared with other ", what));
  };
  if (prepared.binds.size() != action.binds.size()) return differs("binds");
  for (size_t i = 0; i < prepared.binds.size(); ++i) {
    const BindMount& a = prepared.binds[i];
    const BindMount& b = action.binds[i];
    if (a.source != b.source || a.target != b.target || a.writable != b.writable) return differs("binds");
  }
  if (prepared.share_network != action.share_network) return differs("network");
  if (prepared.work_dir_parent != action.work_dir_parent) return differs("work dir parent");
  if (prepared.uid != action.uid || prepared.gid != action.gid) return differs("build user");
  if (prepared.tmp_size_bytes != action.tmp_size_bytes || prepared.shm_size_bytes != action.shm_size_bytes) {
    return differs("tmpfs sizes");
  }
  if (!prepared.work_dir_parent.empty()) {
    // Pivoted while preparing: the rest of the root is fixed, and what the
    // action brings is found beneath the parent.
    if (prepared.hostname != action.hostname || prepared.domainname != action.domainname) {
      return differs("hostname");
    }
    const std::string beneath = prepared.work_dir_parent + "/";
    for (const std::string* path : {&action.work_dir, &action.stdout_path, &action.stderr_path}) {
      if (!path->empty() && (!absl::StartsWith(*path, beneath) || absl::StrContains(*path, "/../"))) {
        return differs("work dir parent");
      }
    }
  }
  if (prepared.memory_bytes != action.memory_bytes || prepared.pids != action.pids ||
      prepared.cpus != action.cpus || prepared.cgroup_parent != action.cgroup_parent) {
    return differs("cgroup limits");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PreparedSandbox>> PreparedSandbox::Prepare(const SandboxSpec& prepared,
                                                                           const SandboxPolicy& policy) {
  {
    // The action's fields are checked by Run; here only what is prepared.
    SandboxSpec check = prepared;
    if (check.argv.empty()) check.argv = {"/bin/true"};
    check.work_dir.clear();
    RETURN_IF_ERROR(ValidateSpec(check, policy));
  }
  std::unique_ptr<PreparedSandbox> sandbox(new PreparedSandbox());
  PreparedSandbox& s = *sandbox;
  s.stages_.start = MonotonicNanos();
  s.prepared_ = prepared;
  s.user_namespace_ = geteuid() != 0;

  ChildConfig& config = s.config_;
  config.spec = &s.prepared_;
  config.user_namespace = s.user_namespace_;
  // As root in the host's mount namespace the launcher can clone the work
  // dir's mount for PID 1, which then pivots while it prepares. (Kernels
  // before 5.12 lack mount_setattr, which makes the clone nosuid: there PID 1
  // binds the work dir itself, as in a user namespace.)
  config.work_from_launcher = !prepared.work_dir_parent.empty() && !s.user_namespace_ && HasMountSetattr();
  config.outer_uid = geteuid();
  config.outer_gid = getegid();
  std::string runtime_dir = s.user_namespace_ ? absl::StrCat("/tmp/kiln-sandbox-", geteuid()) : policy.lock_dir;
  if (prepared.uid.has_value()) {
    config.uid = *prepared.uid;
  } else if (s.user_namespace_) {
    config.uid = policy.uid_pool_base;  // namespaced: no other sandbox can see it
  } else {
    ASSIGN_OR_RETURN(s.lease_, AcquireBuildUid(runtime_dir, policy.uid_pool_base, policy.uid_pool_size));
    config.uid = s.lease_->uid();
  }
  config.gid = prepared.gid.value_or(static_cast<gid_t>(config.uid));
  // Every sandbox mounts its own tmpfs on this one empty directory, each in
  // its own mount namespace.
  config.root_mount_point = runtime_dir + "/root";
  RETURN_IF_ERROR(MakeDirectories(config.root_mount_point, 0755));

  // The forwarded signals are blocked here and read from a signalfd; PID 1
  // inherits the mask and unblocks once it can forward them. Before the
  // cgroup exists: a stop request (the worker cancelling the action) while
  // it is being made is then seen once it is made, and the cgroup is removed
  // with the sandbox instead of being left behind by a launcher killed mid-way.
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&forwarded, sig);
  sigprocmask(SIG_BLOCK, &forwarded, &s.previous_mask_);
  s.signal_fd_ = UniqueFd(signalfd(-1, &forwarded, SFD_CLOEXEC | SFD_NONBLOCK));

  // A cgroup only when a limit asks for one: moving a process into a cgroup
  // costs milliseconds on cgroup v1, more than the rest of the setup.
  if (prepared.memory_bytes > 0 || prepared.pids > 0 || prepared.cpus > 0) {
    ASSIGN_OR_RETURN(s.cgroup_, Cgroup::Create(CgroupName(), {prepared.memory_bytes, prepared.pids, prepared.cpus},
                                               prepared.cgroup_parent));
  }
  s.stages_.cgroup_setup = MonotonicNanos();

  int request_pair[2], report_pipe[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request_pair) != 0) {
    return PosixError("socketpair", errno);
  }
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    close(request_pair[0]);
    close(request_pair[1]);
    return PosixError("pipe", errno);
  }
  s.request_write_ = UniqueFd(request_pair[0]);
  s.report_read_ = UniqueFd(report_pipe[0]);
  config.request_fd = request_pair[1];
  config.report_fd = report_pipe[1];

  // CLONE_NEWCGROUP is left to PID 1, once it is in the action's cgroup.
  int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  if (!prepared.share_network) flags |= CLONE_NEWNET;
  if (s.user_namespace_) flags |= CLONE_NEWUSER;
  s.stack_ = mmap(nullptr, kInitStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (s.stack_ == MAP_FAILED) {
    s.stack_ = nullptr;
    close(request_pair[1]);
    close(report_pipe[1]);
    return PosixError("mmap the init's stack", errno);
  }
  s.init_ = clone(RunSandboxInit, static_cast<char*>(s.stack_) + kInitStackBytes, flags, &config);
  const int clone_error = errno;
  s.stages_.clone = MonotonicNanos();
  close(request_pair[1]);
  close(report_pipe[1]);
  if (s.init_ < 0) return PosixError("clone the sandbox's namespaces", clone_error);

  absl::Status placed = s.cgroup_ != nullptr ? s.cgroup_->AddProcess(s.init_) : absl::OkStatus();
  if (placed.ok()) {
    char go = 1;
    if (send(s.request_write_.get(), &go, 1, MSG_NOSIGNAL) != 1) placed = PosixError("start the sandbox", errno);
  }
  // Without the byte, PID 1 exits before doing anything; the destructor reaps it.
  if (!placed.ok()) return placed;
  return sandbox;
}

void PreparedSandbox::ReapInit() {
  if (init_ < 0 || init_reaped_) return;
  while (wait4(init_, &init_status_, 0, &init_rusage_) < 0 && errno == EINTR) {
  }
  init_reaped_ = true;
}

PreparedSandbox::~PreparedSandbox() {
  if (init_ > 0 && !init_reaped_) {
    // After "done" PID 1 is exiting by itself; otherwise (no action came, or
    // it failed) its SIGKILL takes the namespace down.
    if (!done_) kill(init_, SIGKILL);
    ReapInit();
  }
  if (cgroup_ != nullptr) cgroup_.reset();  // kills what is left and removes it
  if (stack_ != nullptr) munmap(stack_, kInitStackBytes);
  if (signal_fd_.valid()) {
    signal_fd_.Reset();
    sigprocmask(SIG_SETMASK, &previous_mask_, nullptr);
  }
}

absl::StatusOr<SandboxResult> PreparedSandbox::Run(const SandboxSpec& spec, const SandboxPolicy& policy) {
  SandboxResult result;
  result.stages = stages_;
  result.stages.request = MonotonicNanos();
  result.user_namespace = user_namespace_;
  result.uid = config_.uid;
  if (ran_) return absl::FailedPreconditionError("a sandbox runs one action only");
  ran_ = true;
  RETURN_IF_ERROR(ValidateSpec(spec, policy));
  RETURN_IF_ERROR(CheckPreparedFor(prepared_, spec));
  std::vector<UniqueFd> handed;
  if (config_.work_from_launcher) {
    absl::StatusOr<std::vector<UniqueFd>> opened = OpenForInit(spec);
    // PID 1 sees the request socket close and exits; the destructor reaps it.
    if (!opened.ok()) return absl::InternalError(absl::StrCat("sandbox setup failed: ", opened.status().message()));
    handed = *std::move(opened);
  }
  std::vector<int> handed_fds;
  for (const UniqueFd& fd : handed) handed_fds.push_back(fd.get());
  absl::Status sent = WriteMessage(request_write_.get(), ToRequest(spec, policy), handed_fds);
  request_write_.Reset();
  handed.clear();  // PID 1 has its own copies now

  std::string report_text;
  result.timed_out = SuperviseUntilDone(init_, report_read_.get(), signal_fd_.get(), spec,
                                        result.stages.request, cgroup_.get(), &report_text);
  Report report = ParseReport(report_text);
  done_ = report.done;
  if (!report.done) {
    // PID 1 is gone (or going) without a report: wait until its namespace is
    // empty, which also gives the rusage of what ran.
    ReapInit();
  }
  if (!report.error.empty()) {
    return absl::InternalError(absl::StrCat("sandbox setup failed: ", report.error));
  }
  if (!report.done && !sent.ok()) return sent;
  const int64_t end_ns = MonotonicNanos();
  result.wall_time = absl::Nanoseconds(end_ns - result.stages.request);
  result.stages.namespaces = report.namespaces_ns;
  result.stages.root = report.root_ns;
  result.stages.network = report.network_ns;
  result.stages.exec = report.exec_ns;
  result.stages.action_exited = report.action_exited_ns;
  result.stages.tree_gone = report.tree_gone_ns;
  result.orphans_reaped = report.orphans;
  result.killed_at_teardown = report.remaining;
  result.exec_error = report.exec_error;
  if (report.done) {
    result.exit_code = report.exit_code;
    result.signal = report.signal;
    result.tmp_full = report.tmp_full != 0;
    result.shm_full = report.shm_full != 0;
    result.rusage = report.rusage;
  } else {
    // PID 1 itself was killed (timeout or OOM): so was the action.
    result.signal = WIFSIGNALED(init_status_) ? WTERMSIG(init_status_) : 0;
    result.exit_code = WIFSIGNALED(init_status_) ? 128 + result.signal : WEXITSTATUS(init_status_);
    result.rusage = init_rusage_;
  }
  result.file_size_exceeded = result.signal == SIGXFSZ;
  if (cgroup_ != nullptr) {
    result.oom_killed = cgroup_->OomKilled();
    result.peak_memory_bytes = cgroup_->PeakMemoryBytes();
    result.cpu_throttled_seconds = cgroup_->CpuThrottledSeconds();
    result.cgroups = cgroup_->paths();
  }
  if (result.peak_memory_bytes == 0) result.peak_memory_bytes = int64_t{result.rusage.ru_maxrss} * 1024;
  return result;
}

absl::StatusOr<SandboxResult> RunSandbox(const SandboxSpec& spec, const SandboxPolicy& policy) {
  RETURN_IF_ERROR(ValidateSpec(spec, policy));
  absl::StatusOr<SandboxResult> result;
  {
    ASSIGN_OR_RETURN(std::unique_ptr<PreparedSandbox> sandbox, PreparedSandbox::Prepare(spec, policy));
    result = sandbox->Run(spec, policy);
  }  // torn down: the cgroups are removed before the caller reports "done"
  return result;
}

}  // namespace kiln::sandbox
